"""Issue 5's targets, checked against a report's results: each one met or missed, with its figure.

A target whose section did not run is absent, not "met".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ENGINE_MIN_RATIO = 1.5
# Service / in-process ONNX Runtime with 1 worker: convolutional models are compute-bound, the
# dense ones (~400k images/s in-process) transport-bound.
SERVICE_MIN_RATIO = {
    "conv": 0.9,
    "denoising": 0.9,
    "vanilla": 0.5,
    "multilayer": 0.5,
    "sparse": 0.5,
}
LATENCY_MAX_P50_MS = 10.0
CLIENT_MAX_GROWTH = 1.5


@dataclass(frozen=True)
class Verdict:
    """One target and how the run did against it."""

    target: str
    figure: str
    met: bool


def engine_verdicts(engine: dict[str, Any]) -> list[Verdict]:
    verdicts = []
    for name, result in engine["models"].items():
        batch = str(max(int(b) for b in result["ratios"]))
        ratios = result["ratios"][batch]
        ratio = ratios["best_ort/fastest_tf"]
        best = ratios["best_ort"]
        if best == "ort_tuned":
            best = f"ort_tuned: {result['tuned']['label']}"
        figure = f"{ratio:.2f}x ({best} vs {ratios['fastest_tf']})"
        if "ort_tf2onnx/fastest_tf" in ratios:
            figure += (
                f"; the graph without export's rewrites {ratios['ort_tf2onnx/fastest_tf']:.2f}x"
            )
        verdicts.append(
            Verdict(
                f"engine {name}: best ORT session >= {ENGINE_MIN_RATIO}x fastest TF path, "
                f"batch {batch}",
                figure,
                ratio >= ENGINE_MIN_RATIO,
            )
        )
    return verdicts


def service_verdicts(service: dict[str, Any]) -> list[Verdict]:
    verdicts = []
    for name, result in service["models"].items():
        first = next(iter(result["layouts"]))
        ratio = result["layouts"][first]["ratio_vs_in_process"]
        goal = SERVICE_MIN_RATIO.get(name, 0.5)
        verdicts.append(
            Verdict(
                f"service {name}: {service['items']:,} images, {first} >= {goal}x in-process ORT",
                f"{ratio:.2f}x",
                ratio >= goal,
            )
        )
    return verdicts


def latency_verdicts(latency: dict[str, Any]) -> list[Verdict]:
    return [
        Verdict(
            f"latency {name}: one-image job p50 <= {LATENCY_MAX_P50_MS:g} ms (warm worker)",
            f"p50 {result['submit_to_result']['p50_ms']:.1f} ms, "
            f"p95 {result['submit_to_result']['p95_ms']:.1f} ms",
            result["submit_to_result"]["p50_ms"] <= LATENCY_MAX_P50_MS,
        )
        for name, result in latency["models"].items()
    ]


def memory_verdicts(memory: dict[str, Any]) -> list[Verdict]:
    small, large = memory["sizes"][0], memory["sizes"][-1]
    growth = memory["growth"]
    label = f"{large:,} vs {small:,} images"
    return [
        Verdict(
            f"memory: client peak for {label} within {CLIENT_MAX_GROWTH}x",
            f"{growth['client']:.2f}x",
            growth["client"] <= CLIENT_MAX_GROWTH,
        ),
        Verdict(
            f"memory: worker peak flat for {label} (within {memory['flat_tolerance']}x)",
            f"{growth['worker']:.2f}x",
            growth["worker"] <= memory["flat_tolerance"],
        ),
    ]


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target the results allow judging."""
    checks = {
        "engine": engine_verdicts,
        "service": service_verdicts,
        "latency": latency_verdicts,
        "memory": memory_verdicts,
    }
    found: list[Verdict] = []
    for section, check in checks.items():
        if section in results:
            found += check(results[section])
    return [asdict(verdict) for verdict in found]
