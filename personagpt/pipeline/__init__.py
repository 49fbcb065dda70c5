"""``personagpt run``: every stage as its own process through its real entry point, skipped when its inputs and
config are unchanged, then one report."""
