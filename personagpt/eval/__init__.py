"""``personagpt eval``: does a model answer like the persona? Ranking (hits@1 of N), authorship share, style
statistics and perplexity on the dataset artifact's held-out split, each with a 95% bootstrap interval.

Modules: ``ranking`` (hits@1), ``authorship`` (character n-gram classifier), ``style`` (statistics of replies),
``bootstrap`` (intervals), ``generate`` (replies from HF ``generate`` or an OpenAI-compatible endpoint),
``models`` (model names -> artifacts), ``run`` (one evaluation end to end) and ``report`` (JSON, eval.md, plot).
"""
