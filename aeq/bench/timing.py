"""Throughput measurement that holds up on a shared, noisy machine.

Each contender is warmed up, then measured in repeats; a repeat calls it until ``min_repeat_s``
has passed and yields items per second. Contenders are measured round-robin rather than one after
another, so a burst of load from another process hits them all alike and the ratios between them
stay meaningful. The order rotates every repeat (A B C, B C A, C A B, ...) and each repeat starts
after a short pause: ONNX Runtime's and TensorFlow's idle pool threads spin for a while after a
call, and on two cores that spinning slows whichever contender runs next, so a fixed order would
favour the first one. The figure reported is the median repeat; the spread (25th and 75th
percentiles) says how noisy the run was.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """How long to measure.

    Attributes:
        repeats: measured repeats per contender (the median is reported).
        min_repeat_s: each repeat calls the contender until this much time has passed.
        warmup_calls: untimed calls before the first repeat.
        max_calls: a repeat stops after this many calls even if time is left.
        settle_s: pause before each repeat, for the previous contender's threads to go idle.
    """

    repeats: int
    min_repeat_s: float
    warmup_calls: int = 2
    max_calls: int = 100_000
    settle_s: float = 0.05


@dataclass(frozen=True)
class Rate:
    """Items per second over repeats."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> tuple[float, float]:
        """The 25th and 75th percentile repeats (equal to the one sample if only one)."""
        if len(self.samples) < 2:
            return self.samples[0], self.samples[0]
        quartiles = statistics.quantiles(self.samples, n=4, method="inclusive")
        return quartiles[0], quartiles[2]

    def to_json(self) -> dict[str, object]:
        low, high = self.spread
        return {
            "median": self.median,
            "p25": low,
            "p75": high,
            "samples": list(self.samples),
        }


def one_repeat(call: Callable[[], object], items_per_call: int, plan: Plan) -> float:
    """Call ``call`` for at least ``plan.min_repeat_s``; return items per second."""
    calls = 0
    started = time.perf_counter()
    elapsed = 0.0
    while (elapsed < plan.min_repeat_s and calls < plan.max_calls) or calls == 0:
        call()
        calls += 1
        elapsed = time.perf_counter() - started
    return calls * items_per_call / elapsed


def compare(
    contenders: Mapping[str, Callable[[], object]], items_per_call: int, plan: Plan
) -> dict[str, Rate]:
    """Measure every contender round-robin, after warming each one up."""
    for call in contenders.values():
        for _ in range(plan.warmup_calls):
            call()
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(plan.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(plan.settle_s)
            samples[name].append(one_repeat(contenders[name], items_per_call, plan))
    return {name: Rate(tuple(values)) for name, values in samples.items()}


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` by linear interpolation (0.5 is the median)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)
