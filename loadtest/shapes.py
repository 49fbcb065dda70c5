"""Load profiles as plain logic (the Locust LoadTestShape classes in locustfile.py are thin wrappers).

- ``step_stages``: the users of a step ramp over time.
- ``PoissonSchedule``: arrival times of a Poisson process (open loop): exponential gaps at a target rate.
- ``SweepController``: concurrency levels one after another; after each level it measures that level's steady
  state and stops at the level where the server saturates.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from loadtest import metrics


def step_stages(start_users: int, step_users: int, max_users: int, step_duration_s: float) -> list[dict]:
    """[{"users", "start_s", "end_s"}]: start_users, +step_users each step, the last step at max_users."""
    users = list(range(start_users, max_users + 1, step_users))
    if users[-1] != max_users:
        users.append(max_users)
    return [{"users": u, "start_s": i * step_duration_s, "end_s": (i + 1) * step_duration_s}
            for i, u in enumerate(users)]


def step_users_at(stages: list[dict], run_time: float) -> int | None:
    for s in stages:
        if run_time < s["end_s"]:
            return s["users"]
    return None


class PoissonSchedule:
    """Arrival times ``start + sum(Exp(rate))`` up to ``start + duration``; shared by all users of a process,
    each ``next()`` hands out one arrival (None once the schedule is over or ``limit`` arrivals were given)."""

    def __init__(self, rate: float, start: float, duration: float, seed: int, limit: int | None = None):
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate, self.start, self.duration, self.limit = rate, start, duration, limit
        self._rng = random.Random(seed)
        self._t = start
        self.count = 0
        self._lock = threading.Lock()

    def next(self) -> float | None:
        with self._lock:
            if self.limit is not None and self.count >= self.limit:
                return None
            t = self._t + self._rng.expovariate(self.rate)
            if t > self.start + self.duration:
                return None
            self._t = t
            self.count += 1
            return t


class SweepController:
    """Drives a concurrency sweep; ``tick(now)`` returns the users to run now, or None to stop.

    Each level runs ``level_duration_s``; its measurement window is ``[start + warmup_s, start +
    level_duration_s)`` (requests that ended in it). With ``report_lag_s`` > 0 (distributed Locust: workers
    report every few seconds) the level is held that much longer before it is judged, so the window is complete.
    """

    def __init__(self, levels: list[int], level_duration_s: float, warmup_s: float, min_gain: float,
                 stop_on_slo: bool, slo: dict[str, Any], records: Callable[[], list[dict]],
                 report_lag_s: float = 0.0):
        self.levels, self.level_duration_s, self.warmup_s = list(levels), level_duration_s, warmup_s
        self.min_gain, self.stop_on_slo, self.slo = min_gain, stop_on_slo, slo
        self.records, self.report_lag_s = records, report_lag_s
        self.index = 0
        self.level_start: float | None = None
        self.results: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.finished = False

    def tick(self, now: float) -> int | None:
        if self.finished:
            return None
        if self.level_start is None:
            self.level_start = now
            return self.levels[0]
        if now - self.level_start < self.level_duration_s + self.report_lag_s:
            return self.levels[self.index]
        stop = self.judge(self.index, self.level_start)
        if stop is None and self.index + 1 >= len(self.levels):
            stop = "highest level reached without saturating"
        if stop is not None:
            self.stop_reason, self.finished = stop, True
            return None
        self.index += 1
        self.level_start = now
        return self.levels[self.index]

    def judge(self, index: int, start: float) -> str | None:
        """Measure level ``index``; the reason to stop after it, or None to go on."""
        t0, t1 = start + self.warmup_s, start + self.level_duration_s
        s = metrics.summarize(metrics.window(self.records(), t0, t1), self.slo, t0, t1)
        violations = metrics.slo_violations(s, self.slo)
        best = max((r["output_tokens_per_s"] for r in self.results), default=None)
        stop = None
        if s["completed"] == 0:
            stop = f"saturated: no request completed within level {self.levels[index]}'s window"
        elif s["error_rate"] > self.slo.get("max_error_rate", 0.0):
            stop = f"errors: {s['failed']} of {s['requests']} requests failed"
        elif self.stop_on_slo and violations:
            stop = "SLO broken: " + "; ".join(violations)
        elif best is not None and s["output_tokens_per_s"] < best * (1.0 + self.min_gain):
            stop = (f"saturated: {s['output_tokens_per_s']:.1f} output tokens/s is less than "
                    f"{1 + self.min_gain:.2f} x the best lower level ({best:.1f})")
        self.results.append({"users": self.levels[index], "start": start, "window": [t0, t1],
                             "output_tokens_per_s": s["output_tokens_per_s"], "requests_per_s": s["requests_per_s"],
                             "ttft_p95_ms": s["ttft_ms"]["p95"], "completed": s["completed"],
                             "failed": s["failed"], "slo_violations": violations, "stop": stop})
        return stop
