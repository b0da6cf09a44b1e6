"""The benchmark report: ``report.json`` (every sample) and ``report.md`` (the tables).

The Markdown is what docs/BENCHMARKS.md quotes; the JSON keeps every repeat so a later reader can
check a median or compute another statistic. Both are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

JSON_NAME = "report.json"
MARKDOWN_NAME = "report.md"


def rate(value: float | None) -> str:
    """Images per second the way the tables print them: 434k, 11.1k, 950."""
    if value is None or not math.isfinite(value):
        return "-"
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def machine_lines(report: dict[str, Any]) -> list[str]:
    found = report["machine"]
    libraries = ", ".join(f"{name} {version}" for name, version in found["libraries"].items())
    load = report["load_average"]
    loads = "; ".join(f"{when} {' / '.join(map(str, values))}" for when, values in load.items())
    return [
        f"- Command: `{found['command']}` (git {found['git'] or 'unknown'}), "
        f"started {report['started_at']}, {report['seconds']:.0f} s",
        f"- CPU: {found['cpu_model']} (family/model {found['cpu_family_model']}), "
        f"{found['usable_cores']} usable cores, {found['threads_per_core']} thread(s) per core, "
        f"hypervisor {found['hypervisor'] or 'none'}, {found['memory_gib']} GiB RAM",
        f"- Peak: {found['peak']['arithmetic']}",
        f"- Load average (1/5/15 min): {loads}",
        f"- Libraries: {libraries}",
        f"- Inputs: {report['inputs']}",
        f"- Weights: {next(iter(report['weights'].values()), '')}",
        "",
    ]


def target_lines(verdicts: list[dict[str, Any]]) -> list[str]:
    rows = [[v["target"], v["figure"], "met" if v["met"] else "**missed**"] for v in verdicts]
    return ["## Targets", "", *table(["target", "figure", "verdict"], rows)]


def engine_lines(engine: dict[str, Any]) -> list[str]:
    lines = ["## 1. Inference engines (images/s, median of repeats)", ""]
    for batch in map(str, engine["batches"]):
        header = ["model", *engine["engines"], "best ORT / fastest TF"]
        rows = []
        for name, result in engine["models"].items():
            rates = result["rates"][batch]
            ratios = result["ratios"][batch]
            cells = [rate(rates[e]["median"]) if e in rates else "-" for e in engine["engines"]]
            best = (
                f"{ratio(ratios['best_ort/fastest_tf'])} ({ratios['best_ort']} / "
                f"{ratios['fastest_tf']})"
            )
            rows.append([name, *cells, best])
        lines += [f"Batch {batch}:", "", *table(header, rows)]
    lines += ["ONNX Runtime / each TensorFlow path, largest batch:", ""]
    largest = str(max(engine["batches"]))
    tf_names = [e for e in engine["engines"] if not e.startswith("ort_")]
    rows = []
    for name, result in engine["models"].items():
        ratios = result["ratios"][largest]
        for ort_name in [e for e in engine["engines"] if e.startswith("ort_")]:
            if f"{ort_name}/fastest_tf" in ratios:
                cells = [ratio(ratios[f"{ort_name}/{t}"]) for t in tf_names]
                rows.append([name, ort_name, *cells])
    lines += table(["model", "ONNX Runtime session", *tf_names], rows)
    return lines + sweep_lines(engine)


def sweep_lines(engine: dict[str, Any]) -> list[str]:
    lines = ["Session option sweep (images/s; ratio to ONNX Runtime's default session):", ""]
    for batch in map(str, engine["sweep_batches"]):
        configs: list[str] = []
        for result in engine["models"].values():
            configs += [c for c in result["sweep"][batch] if c not in configs]
        rows = []
        for config in configs:
            cells = []
            for result in engine["models"].values():
                found = result["sweep"][batch]
                base = found["default"]["median"]
                value = found.get(config, {}).get("median")
                cells.append("-" if value is None else f"{rate(value)} ({value / base:.2f})")
            rows.append([config, *cells])
        lines += [f"Batch {batch}:", "", *table(["session options", *engine["models"]], rows)]
    tuned = [[name, result["tuned"]["label"]] for name, result in engine["models"].items()]
    return [*lines, "Tuned session (fastest at the largest sweep batch):", "",
            *table(["model", "options"], tuned)]  # fmt: skip


def service_lines(service: dict[str, Any]) -> list[str]:
    items, chunk = service["items"], service["default_chunk_size"]
    lines = [
        f"## 2. Service: {items:,}-image job, .npy in and out, chunk size {chunk}",
        "",
        "Images/s (median of repeats; ratio to in-process ONNX Runtime in brackets):",
        "",
    ]
    header = ["model", "in-process ORT", "local mode", *service["layouts"], "CLI (1 worker)"]
    rows = []
    for name, result in service["models"].items():
        cells = [rate(result["in_process"]["median"]), rate(result["local_mode"]["median"])]
        for layout in service["layouts"]:
            found = result["layouts"][layout]
            cells.append(f"{rate(found['images_per_s'])} ({ratio(found['ratio_vs_in_process'])})")
        rows.append([name, *cells, rate(result["cli_images_per_s"])])
    lines += table(header, rows)
    return lines + chunk_lines(service) + breakdown_lines(service)


def chunk_lines(service: dict[str, Any]) -> list[str]:
    sizes = [str(size) for size in service["chunk_sizes"]]
    rows = []
    for name, result in service["models"].items():
        sweep = result["chunk_sweep"]
        cells = [
            f"{rate(sweep[s]['images_per_s'])} ({ratio(sweep[s]['ratio_vs_in_process'])})"
            for s in sizes
            if s in sweep
        ]
        rows.append([name, *cells])
    best = service.get("best_chunk_size") or {}
    lines = ["Chunk-size sweep, 1 worker (images/s, ratio to in-process):", ""]
    lines += table(["model", *sizes], rows)
    memory_rows = [
        [name, *[f"{result['chunk_sweep'][s]['worker_rss_mib_after']:.0f}" for s in sizes
                 if s in result["chunk_sweep"]]]
        for name, result in service["models"].items()
    ]  # fmt: skip
    lines += ["Worker RSS after each sweep job (MiB; sizes in sweep order, models in turn):", ""]
    lines += table(["model", *sizes], memory_rows)
    if best:
        lines += [
            f"Best chunk size by geometric-mean ratio over the models: {best['chunk_size']} "
            f"({best['geomean_ratio']:.2f}x).",
            "",
        ]
    return lines


def breakdown_lines(service: dict[str, Any]) -> list[str]:
    first = service["layouts"][0]
    lines = [f"Where the time of a job goes ({first}, median run; seconds, % of wall):", ""]
    phases: list[str] = []
    for result in service["models"].values():
        found = result["layouts"][first]
        phases += [p for p in found["client_phases_s"] if p not in phases]
        phases += [p for p in found["worker_split_s"] if p not in phases]
    rows = [
        ["wall", *[f"{r['layouts'][first]['seconds']:.3f}" for r in service["models"].values()]]
    ]
    for phase in phases:
        cells = []
        for result in service["models"].values():
            found = result["layouts"][first]
            value = {**found["client_phases_s"], **found["worker_split_s"]}.get(phase, 0.0)
            cells.append(f"{value:.3f} ({100 * value / found['seconds']:.0f}%)")
        rows.append([phase, *cells])
    return lines + table(["phase", *service["models"]], rows)


def latency_lines(latency: dict[str, Any]) -> list[str]:
    header = ["model", "submit->result p50", "p95", "inference p50", "command path p50", "p95",
              "CLI p50"]  # fmt: skip
    rows = []
    for name, result in latency["models"].items():
        trip, command = result["submit_to_result"], result["command_path"]
        rows.append([
            name, f"{trip['p50_ms']:.1f} ms", f"{trip['p95_ms']:.1f} ms",
            f"{result['inference']['p50_ms']:.2f} ms", f"{command['p50_ms']:.1f} ms",
            f"{command['p95_ms']:.1f} ms", f"{result['cli']['p50_ms']:.0f} ms",
        ])  # fmt: skip
    title = f"## 3. Latency: one-image jobs, warm worker ({latency['jobs']} jobs per model)"
    return [title, "", *table(header, rows)]


def memory_lines(memory: dict[str, Any]) -> list[str]:
    rows = []
    for size in map(str, memory["sizes"]):
        job = memory["jobs"][size]
        rows.append([
            f"{int(size):,}", f"{job['client_peak_mib']:.0f}",
            f"{job['worker_peak_mib']:.0f} (before {job['worker_before_mib']:.0f})",
            f"{job['redis_peak_mib']:.0f} (before {job['redis_before_mib']:.0f})",
            f"{job['seconds']:.1f}",
        ])  # fmt: skip
    growth = memory["growth"]
    rows.append(["growth", ratio(growth["client"]), ratio(growth["worker"]), ratio(growth["redis"]),
                 ""])  # fmt: skip
    title = f"## 4. Peak memory (RSS, MiB), `{memory['model']}` jobs through the real CLI"
    header = ["images", "client peak", "worker peak", "redis-server peak", "seconds"]
    return [title, "", *table(header, rows)]


def sgemm_line(flops: dict[str, Any]) -> str:
    """The measured ceiling, and what it says about the clock."""
    sgemm, nominal = flops["sgemm"]["gflops"], flops["peak"]["gflops"]
    share = sgemm / nominal if nominal else 0.0
    why = (
        "the cores run above the clock /proc/cpuinfo shows"
        if share > 1
        else "below nominal: the cores were not free while it ran, or the clock is lower"
    )
    return (
        f"Measured ceiling: {flops['sgemm']['what']}: {sgemm:.1f} GFLOP/s "
        f"(= {share:.2f} x nominal; {why})."
    )


def flops_lines(flops: dict[str, Any]) -> list[str]:
    rows = []
    for name, result in flops["models"].items():
        achieved = "; ".join(
            f"{path} {rate(found['images_per_s'])}/s = {found['gflops']:.1f} GFLOP/s "
            f"({found['percent_of_peak']:.0f}% of nominal, {found['percent_of_sgemm']:.0f}% of "
            "SGEMM)"
            for path, found in result["achieved"].items()
        )
        rows.append([name, f"{result['macs']:,}", f"{result['flops'] / 1e6:.2f}",
                     f"{result['parameters']:,}", achieved])  # fmt: skip
    return [
        "## 5. Arithmetic (MAC = 2 FLOPs; Conv2D and Dense layers)",
        "",
        f"Nominal peak: {flops['peak']['arithmetic']}",
        "",
        sgemm_line(flops),
        "",
        *table(
            ["model", "MACs/image", "MFLOP/image", "parameters", "achieved (largest batch)"], rows
        ),  # fmt: skip
    ]


def scale_lines(scale: dict[str, Any]) -> list[str]:
    big, moved, fair = scale["big"], scale["transport"], scale["fair"]
    rss = big["client_rss"]
    rows = [
        [f"{big['items']:,}-image `{big['model']}` job, Redis maxmemory {scale['maxmemory_mb']} MB",
         f"{big['seconds']:.0f} s ({rate(big['images_per_s'])}/s); Redis used_memory peak "
         f"{big['redis_peak_sampled_mib']:.1f} MiB sampled, {big['redis_peak_counter_mib']:.1f} "
         f"MiB Redis' own counter (before the job {big['redis_used_before_mib']:.1f}); client RSS "
         f"{rss.get('first_half_peak_mib', 0):.0f} -> {rss.get('second_half_peak_mib', 0):.0f} MiB "
         "(first half's peak -> second half's)"],
        [f"{moved['items']:,}-image `{moved['model']}` job",
         f"CLI {moved['cli_s']:.1f} s; transport baseline {moved['baseline_s']:.1f} s "
         f"({ratio(moved['ratio_vs_baseline'])}); in-process ORT {moved['in_process_s']:.2f} s "
         f"({ratio(moved['ratio_vs_in_process'])})"],
    ]  # fmt: skip
    for name, found in scale["throughput"].items():
        rows.append([
            f"{found['items']:,}-image `{name}` job",
            f"CLI {found['cli_s']:.1f} s; in-process ORT {found['in_process_s']:.1f} s "
            f"({ratio(found['ratio_vs_in_process'])})",
        ])  # fmt: skip
    alone = ", ".join(f"{value:.2f}" for value in fair["alone_s"])
    behind = ", ".join(f"{value:.2f}" for value in fair["behind_s"])
    rows.append([
        f"{fair['small_items']}-image `{fair['model']}` job, alone / {fair['head_start_s']:g} s "
        f"after a {fair['big_items']:,}-image one",
        f"{alone} s / {behind} s ({ratio(fair['ratio'])} of alone, medians)",
    ])  # fmt: skip
    for name, found in scale["start"].items():
        rows.append([f"`{name}`", f"{found['wall_s']:.3f} s wall, {found['cpu_s']:.3f} s CPU "
                     f"(median of {found['runs']})"])  # fmt: skip
    notice = scale["notice"]
    said = "never" if notice["seconds"] is None else f"{notice['seconds']:.1f} s"
    rows.append(["no worker: the client's notice", f"{said}: {notice['line']!r}"])
    title = "## 6. Scale: jobs of any size through the CLI (one default `aeq worker`)"
    return [title, "", *table(["measured", "figure"], rows)]


SECTION_LINES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "engine": engine_lines,
    "service": service_lines,
    "latency": latency_lines,
    "memory": memory_lines,
    "flops": flops_lines,
    "scale": scale_lines,
}


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    lines = [f"# aeq bench, {report['started_at']}", "", *machine_lines(report)]
    lines += target_lines(report["verdicts"])
    for section, render in SECTION_LINES.items():
        if section in report["results"]:
            lines += render(report["results"][section])
    return "\n".join(lines).rstrip() + "\n"


def write(
    report: dict[str, Any],
    folder: Path,
    render: Callable[[dict[str, Any]], str] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` (``render``, default this report's ``markdown``)
    into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = folder / JSON_NAME, folder / MARKDOWN_NAME
    write_atomic(json_path, json.dumps(report, indent=2, default=str, allow_nan=False) + "\n")
    write_atomic(markdown_path, (render or markdown)(report))
    return json_path, markdown_path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` under a hidden temporary name, then rename: readers never see half."""
    staged = path.with_name(f".{path.name}.partial")
    staged.write_text(text)
    os.replace(staged, path)
