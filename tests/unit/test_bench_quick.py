"""``aeq bench --quick`` end to end, so the harness cannot rot: real Redis, real workers.

It checks the report's structure and that every figure is a positive, finite number; it asserts
no speed targets (the verdicts may say met or missed, both are valid outcomes here).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AEQ = str(Path(sys.executable).parent / "aeq")
QUICK_TIMEOUT_S = 240
SECTIONS = {"engine", "service", "latency", "memory", "flops", "scale"}


def _numbers(value, path=""):
    """Every number in a JSON value, with where it is (booleans are not numbers here)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}[{index}]")


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "report"
    env_note = "AEQ_DATA_DIR from make test where ../shared/data/mnist exists, else random pixels"
    result = subprocess.run(
        [AEQ, "bench", "--quick", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=QUICK_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 0, f"{env_note}\n{result.stderr[-4000:]}"
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_quick_report_has_every_section_and_the_machine(quick_report):
    data, text = quick_report
    assert set(data["results"]) == SECTIONS
    machine = data["machine"]
    assert machine["usable_cores"] >= 1 and machine["peak"]["gflops"] > 0
    assert "onnxruntime" in " ".join(machine["libraries"]) and machine["command"].startswith("aeq")
    assert data["load_average"]["start"] and data["config"]["quick"] is True
    for heading in ("## Targets", "## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert heading in text


def test_every_figure_is_positive_and_finite(quick_report):
    data, _ = quick_report
    numbers = list(_numbers(data["results"]))
    assert len(numbers) > 100
    bad = [(path, value) for path, value in numbers if not math.isfinite(value) or value < 0]
    assert not bad
    rates = [(p, v) for p, v in numbers if p.endswith(("/median", "/images_per_s", "p50_ms"))]
    assert rates and all(value > 0 for _, value in rates)


def test_engine_section_covers_every_engine_and_batch(quick_report):
    engine = quick_report[0]["results"]["engine"]
    for result in engine["models"].values():
        for batch in map(str, engine["batches"]):
            # ort_tf2onnx runs only where export's rewrites change the graph.
            assert set(engine["engines"]) - {"ort_tf2onnx"} <= set(result["rates"][batch])
            assert set(result["rates"][batch]) <= set(engine["engines"])
            assert result["ratios"][batch]["ort_tuned/fastest_tf"] > 0
        assert "default" in next(iter(result["sweep"].values()))
        assert result["parity_max_abs_diff"] < 1e-4  # same weights: the engines agree


def test_service_jobs_really_ran_through_the_workers(quick_report):
    service = quick_report[0]["results"]["service"]
    for result in service["models"].values():
        assert set(result["layouts"]) == set(service["layouts"]) and len(service["layouts"]) == 2
        for layout in result["layouts"].values():
            assert layout["max_pixel_diff_vs_in_process"] <= 1
            assert layout["chunks"] == -(-service["items"] // service["default_chunk_size"])
            assert (
                layout["worker_split_s"]["worker: inference (ONNX Runtime + pixel conversion)"] > 0
            )
        assert set(result["chunk_sweep"]) == {str(size) for size in service["chunk_sizes"]}


def test_verdicts_name_a_figure_for_each_target(quick_report):
    verdicts = quick_report[0]["verdicts"]
    assert {v["target"].split()[0].rstrip(":") for v in verdicts} == {
        "engine",
        "service",
        "latency",
        "memory",
        "scale",
    }
    assert all(v["figure"] and isinstance(v["met"], bool) for v in verdicts)


def test_scale_jobs_ran_whole_against_a_capped_redis(quick_report):
    scale = quick_report[0]["results"]["scale"]
    big = scale["big"]
    assert big["items_written"] == big["items"]
    assert big["redis_maxmemory_mib"] == scale["maxmemory_mb"]
    assert 0 < big["redis_peak_sampled_mib"] <= big["redis_maxmemory_mib"]
    assert big["client_rss"]["samples"] >= 1
    assert scale["notice"]["seconds"] is not None and "no worker" in scale["notice"]["line"]
    fair = scale["fair"]
    assert len(fair["alone_s"]) == len(fair["behind_s"]) == len(fair["big_ended_after_s"])
    assert scale["transport"]["baseline_s"] > 0 and scale["throughput"]
