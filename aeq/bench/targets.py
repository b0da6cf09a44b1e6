"""Issue 5's and issue 12's targets, checked against a report's results: each one met or
missed, with its figure.

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


# Issue 12's targets (section 6, scale).
SCALE_REDIS_MAX_MIB = 128
SCALE_CLIENT_MAX_GROWTH = 1.1
SCALE_FAIR_MAX_RATIO = 1.5
SCALE_MIN_RATIO = {"denoising": 0.9, "conv": 0.8}
SCALE_TRANSPORT_MIN_RATIO = 0.5
SCALE_START_MAX_S = 0.3
SCALE_NOTICE_MAX_S = 5.0


def scale_verdicts(scale: dict[str, Any]) -> list[Verdict]:
    big, moved, fair = scale["big"], scale["transport"], scale["fair"]
    peak = max(big["redis_peak_sampled_mib"], big["redis_peak_counter_mib"])
    growth = big["client_rss"].get("growth", float("inf"))
    found = [
        Verdict(
            f"scale: {big['items']:,}-image {big['model']} job, Redis maxmemory "
            f"{scale['maxmemory_mb']} MB: completes, used_memory peak <= {SCALE_REDIS_MAX_MIB} "
            f"MiB, client RSS flat (second half's peak within {SCALE_CLIENT_MAX_GROWTH}x)",
            f"{big['items_written']:,} written; peak {peak:.1f} MiB; RSS {growth:.2f}x",
            big["items_written"] == big["items"]
            and peak <= SCALE_REDIS_MAX_MIB
            and growth <= SCALE_CLIENT_MAX_GROWTH,
        ),
        Verdict(
            f"scale: {moved['items']:,}-image {moved['model']} job >= "
            f"{SCALE_TRANSPORT_MIN_RATIO}x the transport baseline",
            f"{moved['ratio_vs_baseline']:.2f}x (in-process ORT: "
            f"{moved['ratio_vs_in_process']:.2f}x)",
            moved["ratio_vs_baseline"] >= SCALE_TRANSPORT_MIN_RATIO,
        ),
        Verdict(
            f"scale: {fair['small_items']}-image job behind a {fair['big_items']:,}-image one "
            f"<= {SCALE_FAIR_MAX_RATIO}x its time alone",
            f"{fair['ratio']:.2f}x",
            fair["ratio"] <= SCALE_FAIR_MAX_RATIO,
        ),
    ]
    for name, result in scale["throughput"].items():
        goal = SCALE_MIN_RATIO.get(name)
        if goal is not None:
            found.append(
                Verdict(
                    f"scale: {result['items']:,}-image {name} job through the CLI >= {goal}x "
                    "in-process ORT",
                    f"{result['ratio_vs_in_process']:.2f}x",
                    result["ratio_vs_in_process"] >= goal,
                )
            )
    for name, result in scale["start"].items():
        found.append(
            Verdict(
                f"scale: `{name}` starts in <= {SCALE_START_MAX_S} s",
                f"{result['wall_s']:.3f} s wall (CPU {result['cpu_s']:.3f} s)",
                result["wall_s"] <= SCALE_START_MAX_S,
            )
        )
    notice = scale["notice"]["seconds"]
    found.append(
        Verdict(
            f"scale: no worker: one-line notice within {SCALE_NOTICE_MAX_S:g} s",
            "never" if notice is None else f"{notice:.1f} s",
            notice is not None and notice <= SCALE_NOTICE_MAX_S,
        )
    )
    return found


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target the results allow judging."""
    checks = {
        "engine": engine_verdicts,
        "service": service_verdicts,
        "latency": latency_verdicts,
        "memory": memory_verdicts,
        "scale": scale_verdicts,
    }
    found: list[Verdict] = []
    for section, check in checks.items():
        if section in results:
            found += check(results[section])
    return [asdict(verdict) for verdict in found]
