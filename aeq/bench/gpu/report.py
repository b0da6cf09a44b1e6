"""The check's report: ``report.json`` (every stage, every sample) and ``report.md`` (tables).

The Markdown is what docs/BENCHMARKS.md quotes for the GPU; the JSON keeps each stage's status,
seconds, one-line detail and data, so a reader can tell a skipped stage (with its reason) from a
passed one, and recompute any figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aeq.bench import report as bench_report
from aeq.bench.report import rate, ratio, table

REPORT_VERSION = 1


def verdict(stages: dict[str, dict[str, Any]]) -> str:
    """``passed`` when no stage failed (skipped stages do not count as passed, nor as failed)."""
    return "failed" if any(stage["status"] == "failed" for stage in stages.values()) else "passed"


def counts(stages: dict[str, dict[str, Any]]) -> dict[str, int]:
    found = {"passed": 0, "failed": 0, "skipped": 0}
    for stage in stages.values():
        found[stage["status"]] += 1
    return found


def summary_line(report: dict[str, Any]) -> str:
    """One line: the verdict, the stage counts and the time."""
    found = counts(report["stages"])
    skipped = [name for name, stage in report["stages"].items() if stage["status"] == "skipped"]
    failed = [name for name, stage in report["stages"].items() if stage["status"] == "failed"]
    parts = [f"{found['passed']} passed", f"{found['failed']} failed"]
    parts[-1] += f" ({', '.join(failed)})" if failed else ""
    parts.append(f"{found['skipped']} skipped" + (f" ({', '.join(skipped)})" if skipped else ""))
    return (
        f"{report['verdict']}: {', '.join(parts)}, in {report['seconds']:.1f} s of a "
        f"{report['budget_s']:.0f} s budget"
    )


def host_lines(report: dict[str, Any]) -> list[str]:
    host, ort = report["host"], report["stages"].get("onnxruntime", {})
    libraries = ", ".join(f"{name} {version}" for name, version in host["libraries"].items())
    lines = [
        f"- Machine: {host['cpu_model']}, {host['usable_cores']} usable cores, "
        f"{host['memory_gib']} GiB, {host['platform']}; git {host['git'] or '-'}.",
        f"- Libraries: {libraries}.",
    ]
    if "available_providers" in ort:
        lines.append(
            f"- ONNX Runtime {ort['version']} ({ort['device']} build, from {ort['module']}): "
            f"{', '.join(ort['available_providers'])}."
        )
    dirs = host["cuda_library_dirs"]
    lines.append(f"- CUDA libraries on the loader's path: {', '.join(dirs) if dirs else 'none'}.")
    return [*lines, ""]


def stage_lines(stages: dict[str, dict[str, Any]]) -> list[str]:
    rows = [
        [name, stage["status"], f"{stage['seconds']:.1f}", stage["detail"].replace("|", "/")]
        for name, stage in stages.items()
    ]
    return ["## Stages", "", *table(["stage", "status", "s", "what it found"], rows)]


def engine_lines(engine: dict[str, Any]) -> list[str]:
    """Per model, one row per batch: each provider's paths, and CUDA over CPU."""
    if not engine.get("models"):
        return []
    lines = [
        "## Engine throughput",
        "",
        f"Images/s, median of {engine['repeats']} repeats, measured round-robin per batch. "
        "session: `InferenceSession.run` on host arrays; io_binding_host: IO binding, host input, "
        "output buffer on the device copied back; io_binding_device: input and output on the "
        "device (no copies); engine_run: the worker's `Engine.run` on uint8 pixels.",
        "",
    ]
    for name, model in engine["models"].items():
        lines += _engine_model_lines(name, model)
    if engine.get("not_measured"):
        lines += [f"Left out for time: {', '.join(engine['not_measured'])}.", ""]
    return lines


def _engine_model_lines(name: str, model: dict[str, Any]) -> list[str]:
    sessions = "; ".join(f"{short}: {', '.join(used)}" for short, used in model["sessions"].items())
    diff = model.get("max_abs_diff_cuda_vs_cpu")
    lines = [
        f"### {model['version']} ({model['operation']})",
        "",
        f"Sessions' providers: {sessions}.",
    ]
    if diff is not None:
        lines.append(f"Largest |CUDA - CPU| output difference: {diff:.2e}.")
    lines.append("")
    contenders = sorted({c for rates in model["rates"].values() for c in rates}, key=_order)
    ratio_names = [
        key for key in ("cuda/cpu session", "cuda/cpu engine_run")
        if any(key in found for found in model["ratios"].values())
    ]  # fmt: skip
    rows = [
        [batch]
        + [rate(model["rates"][batch].get(c, {}).get("median")) for c in contenders]
        + [ratio(model["ratios"][batch].get(key)) for key in ratio_names]
        for batch in model["rates"]
    ]
    return [*lines, *table(["batch", *contenders, *ratio_names], rows)]


def _order(contender: str) -> tuple[int, int]:
    from aeq.bench.gpu.engine import PATHS

    provider, _, path = contender.partition("/")
    return (0 if provider == "cpu" else 1, PATHS.index(path) if path in PATHS else len(PATHS))


def service_lines(service: dict[str, Any]) -> list[str]:
    """Per model, the queued service's images/s and its ratio to the engine, per chunk size."""
    if not service.get("models"):
        return []
    sizes = [str(size) for size in service["chunk_sizes"]]
    rows = []
    for name, model in service["models"].items():
        sweep = model["chunk_sweep"]
        cells = [
            f"{rate(sweep[s]['service_images_per_s'])} ({ratio(sweep[s]['ratio_vs_in_process'])})"
            if s in sweep else "-"
            for s in sizes
        ]  # fmt: skip
        reached = model.get("smallest_chunk_near_engine")
        rows.append([name, *cells, str(reached) if reached else "none"])
    near = f"{service['near_engine_ratio']:.1f}x"
    lines = [
        "## Queued service",
        "",
        f"One job of {service['items']} images per cell through Redis and one `aeq worker` "
        f"({service['provider']}), images/s (ratio to the same engine in-process, same chunks); "
        f"median of {service['repeats']}.",
        "",
        *table(["model", *sizes, f"smallest chunk at {near}"], rows),
    ]
    best = service.get("best_chunk_size") or {}
    if best:
        lines += [
            f"Best chunk size by geometric-mean ratio: {best['chunk_size']} "
            f"({best['geomean_ratio']:.2f}x).",
            "",
        ]
    if service.get("not_measured"):
        lines += [f"Left out for time: {', '.join(service['not_measured'])}.", ""]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    stages = report["stages"]
    lines = [
        f"# aeq GPU check, {report['started_at']}",
        "",
        f"**{summary_line(report)}**",
        "",
        f"GPU: {report['gpu']['line']}.",
        "",
        *host_lines(report),
        *stage_lines(stages),
        *engine_lines(report.get("engine", {})),
        *service_lines(report.get("service", {})),
    ]
    summary = report["gpu"].get("summary")
    if summary:
        lines += ["## nvidia-smi", "", "```", summary, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write(report: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``folder``; return their paths."""
    return bench_report.write(report, folder, markdown)
