"""Typed YAML config: one file per run, one section per stage, ``key.sub=value`` overrides on every command."""

from personagpt.config.loader import apply_overrides, load_config, parse_overrides
from personagpt.config.root import Config

__all__ = ["Config", "apply_overrides", "load_config", "parse_overrides"]
