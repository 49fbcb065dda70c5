"""95% bootstrap intervals (percentile method, ``scipy.stats.bootstrap``) for any statistic of one or more samples.

Each sample is resampled with replacement on its own (unpaired), ``n_resamples`` times, with a fixed seed; the
statistic is a plain function of lists (of replies, of 0/1 hits...), so one helper serves every metric.
``unique=True`` hands the statistic each resample's distinct draws only (about 63% of the items, no repeats): for
statistics of a whole corpus such as distinct-n, which a repeated reply would push down (a resample with
repetitions is less diverse than any real set of replies).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95


def interval(statistic: Callable[..., float], *samples: Sequence[Any], n_resamples: int = 1000, seed: int = 0,
             confidence: float = CONFIDENCE, unique: bool = False) -> dict[str, float | int]:
    """``{"value", "low", "high", "n"}``: the statistic on the samples and its bootstrap interval (n: the size of
    the first sample). A sample of fewer than 2 items has no interval (low = high = value)."""
    from scipy.stats import bootstrap

    value = float(statistic(*samples))
    out = {"value": value, "low": value, "high": value, "n": len(samples[0])}
    if any(len(s) < 2 for s in samples):
        return out

    def on_indices(*idx):
        if unique:
            idx = [sorted(set(ix.tolist())) for ix in idx]
        return statistic(*[[s[int(i)] for i in ix] for s, ix in zip(samples, idx, strict=True)])

    with warnings.catch_warnings():  # a constant statistic warns of a degenerate distribution: its interval is 0
        warnings.simplefilter("ignore")
        res = bootstrap(tuple(np.arange(len(s)) for s in samples), on_indices, n_resamples=n_resamples,
                        vectorized=False, paired=False, method="percentile", confidence_level=confidence,
                        rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if np.isnan(low) or np.isnan(high):
        low = high = value
    out.update(low=min(low, value), high=max(high, value))
    return out


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0
