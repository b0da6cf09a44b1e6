"""The GPU check (scripts/gpu-check.sh, aeq.bench.gpu) on this CPU machine.

One real run, with a small budget: a real redis-server, real ``aeq worker`` processes and the real
CLI. It must say "no GPU found (REASON)" in one line, record every CUDA stage as skipped with that
reason (never passed), and still check what it can: the --require-gpu refusal, a queued job and the
engine and service on the CPU. The unit tests below cover the pieces the CPU run cannot reach:
IO binding (on the CPU device), nvidia-smi's answers, the CUDA library folders, and a GPU host's
job that ran on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from aeq.bench.gpu import host, report
from aeq.bench.gpu.check import STAGE_NAMES, Check, parse
from aeq.bench.gpu.engine import PATHS, bind
from aeq.bench.gpu.queued import start_redis
from aeq.bench.gpu.stages import StageFailed, StageResult, Status
from aeq.bench.report import JSON_NAME, MARKDOWN_NAME
from aeq.bench.tiny_models import build_graph
from aeq.core.catalog import MODELS, Graph
from worker.inference import nvidia_device_visible

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
BUDGET_S = 45
# The run that sees a (fake) GPU: only the CPU engine is measured, the rest stops early.
FAKE_GPU_BUDGET_S = 25
# What the run may take beyond its budget: the shell's grace before it stops the check.
OVERRUN_S = 15
CUDA_STAGES = ("cuda_provider", "job_on_cuda", "engine_cuda")
BATCHES = ("1", "64", "1024", "4096")
# The one real run: a real redis-server, real workers, the real CLI.
integration = pytest.mark.integration


@dataclass(frozen=True)
class CpuRun:
    result: subprocess.CompletedProcess[str]
    out: Path
    seconds: float
    report: dict


def _run_check(out: Path, budget_s: int, path_first: Path | None = None) -> CpuRun:
    """scripts/gpu-check.sh OUT with this interpreter, aeq's variables cleared."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AEQ_")}
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env['PATH']}"
    command = [str(SCRIPT), str(out), "--python", sys.executable, "--budget-s", str(budget_s)]
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=budget_s + 60
    )
    seconds = time.monotonic() - started
    written = out / JSON_NAME
    return CpuRun(result, out, seconds, json.loads(written.read_text()) if written.exists() else {})


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> CpuRun:
    if shutil.which("nvidia-smi") or nvidia_device_visible():
        pytest.skip("this host shows a GPU; these tests check the check's CPU path")
    return _run_check(tmp_path_factory.mktemp("gpu-check") / "report", BUDGET_S)


@integration
def test_the_cpu_run_passes_within_its_budget(cpu_run):
    assert cpu_run.result.returncode == 0, cpu_run.result.stdout[-4000:] + cpu_run.result.stderr
    assert cpu_run.report["verdict"] == "passed"
    assert cpu_run.report["seconds"] <= BUDGET_S
    assert cpu_run.seconds <= BUDGET_S + OVERRUN_S


@integration
def test_it_says_no_gpu_found_in_one_line(cpu_run):
    lines = [line for line in cpu_run.result.stdout.splitlines() if "no GPU found (" in line]
    assert len(lines) == 1, cpu_run.result.stdout
    assert lines[0].startswith("gpu-check: no GPU found (nvidia-smi ")
    assert (cpu_run.out / "check.log").read_text() == cpu_run.result.stdout


@integration
def test_cuda_stages_are_skipped_with_the_reason_never_passed(cpu_run):
    stages = cpu_run.report["stages"]
    assert list(stages) == list(STAGE_NAMES)
    assert cpu_run.report["gpu"]["found"] is False
    for name in (*CUDA_STAGES, "driver"):
        assert stages[name]["status"] == "skipped", (name, stages[name])
        assert stages[name]["detail"].startswith("no GPU found (nvidia-smi "), stages[name]
    assert {stage["status"] for stage in stages.values()} <= {"passed", "skipped"}


@integration
def test_require_gpu_is_refused_in_one_clear_line(cpu_run):
    refusal = cpu_run.report["stages"]["require_gpu_refusal"]
    assert refusal["status"] == "passed", refusal
    assert refusal["exit_code"] != 0
    (line,) = refusal["output"]
    assert line.startswith("error: --require-gpu: ") and "not CUDA" in line


@integration
def test_a_queued_job_runs_on_the_cpu(cpu_run):
    job = cpu_run.report["stages"]["queued_job"]
    assert job["status"] == "passed", job
    assert job["aeq_status"]["state"] == "done"
    assert job["aeq_status"]["providers"] == ["CPUExecutionProvider"]
    assert job["max_pixel_diff_vs_cpu_engine"] == 0
    assert (cpu_run.out / "worker-gpucheck.log").read_text().count(" ready.") == 1


@integration
def test_the_engine_is_measured_on_the_cpu_for_every_model_and_batch(cpu_run):
    assert cpu_run.report["stages"]["engine_cpu"]["status"] == "passed"
    engine = cpu_run.report["engine"]
    assert engine["providers"] == ["CPUExecutionProvider"]
    assert list(engine["models"]) == ["denoising", *sorted(n for n in MODELS if n != "denoising")]
    measured = 0
    for model in engine["models"].values():
        assert model["sessions"] == {"cpu": ["CPUExecutionProvider"]}
        for rates in model["rates"].values():
            assert set(rates) == {f"cpu/{path}" for path in PATHS}
            for rate in rates.values():
                assert math.isfinite(rate["median"]) and rate["median"] > 0
            measured += 1
    # Everything fits the budget on an idle machine; a loaded one may leave a few groups out,
    # and then says which.
    assert list(engine["models"]["denoising"]["rates"]) == list(BATCHES)
    assert measured + len(engine["not_measured"]) == len(MODELS) * len(BATCHES)


@integration
def test_the_service_is_measured_against_the_engine(cpu_run):
    assert cpu_run.report["stages"]["service"]["status"] == "passed"
    sweep = cpu_run.report["service"]["models"]["denoising"]["chunk_sweep"]
    assert set(sweep) == {"512", "1024", "2048", "4096"}
    for cell in sweep.values():
        assert 0 < cell["ratio_vs_in_process"] < 10
        assert cell["max_pixel_diff_vs_in_process"] == 0


@integration
def test_report_md_shows_the_verdict_and_every_stage(cpu_run):
    text = (cpu_run.out / MARKDOWN_NAME).read_text()
    assert "GPU: no GPU found (nvidia-smi " in text
    for name in STAGE_NAMES:
        assert f"| {name} | " in text
    for name in CUDA_STAGES:
        assert f"| {name} | skipped | " in text
    assert "## Engine throughput" in text and "## Queued service" in text


@integration
def test_a_host_that_shows_a_gpu_but_cannot_run_cuda_fails_saying_why(tmp_path):
    if nvidia_device_visible():
        pytest.skip("this host may run CUDA")
    _fake_nvidia_smi(
        tmp_path,
        'case "$1" in --query-gpu*) echo "NVIDIA H200, 580.159.03, 143771, GPU-1";; esac',
    )
    run = _run_check(tmp_path / "report", FAKE_GPU_BUDGET_S, path_first=tmp_path)
    assert run.result.returncode == 1, run.result.stdout[-4000:]
    assert "gpu-check: GPU: 1 GPU(s): NVIDIA H200" in run.result.stdout
    assert "no GPU found" not in run.result.stdout
    stages = run.report["stages"]
    assert run.report["verdict"] == "failed"
    assert stages["cuda_provider"]["status"] == "failed"
    assert stages["cuda_provider"]["in_use"] == ["CPUExecutionProvider"]
    assert stages["worker"]["status"] == "failed"
    assert stages["worker"]["detail"].startswith("error: --require-gpu: ")
    assert stages["engine_cuda"]["status"] == "failed"
    assert stages["engine_cpu"]["status"] == "passed"
    for name in ("require_gpu_refusal", "queued_job", "job_on_cuda", "service"):
        assert stages[name]["status"] == "skipped", (name, stages[name])


# -- the pieces the CPU run cannot reach ---------------------------------------------------------


def _tiny_session():
    import onnxruntime as ort

    model = build_graph(MODELS["conv"], Graph.AUTOENCODER)
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("on_device", [False, True])
def test_io_binding_gives_the_session_s_output(on_device):
    session = _tiny_session()
    inputs = np.random.default_rng(0).random((16, 28, 28, 1), dtype=np.float32)
    (expected,) = session.run(None, {session.get_inputs()[0].name: inputs})
    bound = bind(session, inputs, "cpu", inputs_on_device=on_device)
    returned = bound()
    np.testing.assert_allclose(bound.result(), expected, rtol=1e-6)
    if on_device:
        assert returned is None  # only waited for: nothing copied back
    else:
        np.testing.assert_allclose(returned, expected, rtol=1e-6)


def _fake_nvidia_smi(folder: Path, script: str) -> None:
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{script}\n")
    smi.chmod(0o755)


def test_find_gpu_reads_nvidia_smi(tmp_path, monkeypatch):
    _fake_nvidia_smi(
        tmp_path,
        'case "$1" in --query-gpu*) echo "NVIDIA H200, 580.159.03, 143771, GPU-1234";; '
        '*) echo "| NVIDIA-SMI 580.159.03   CUDA Version: 13.0 |";; esac',
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = host.find_gpu()
    assert found.found and found.reason == ""
    assert found.gpus == [
        {
            "name": "NVIDIA H200",
            "driver_version": "580.159.03",
            "memory.total": "143771",
            "uuid": "GPU-1234",
        }
    ]
    assert found.line() == "1 GPU(s): NVIDIA H200, driver 580.159.03, 143771 MiB"
    assert "CUDA Version: 13.0" in found.summary


def test_find_gpu_says_why_when_nvidia_smi_fails(tmp_path, monkeypatch):
    _fake_nvidia_smi(
        tmp_path, 'echo "NVIDIA-SMI has failed because it could not communicate"; exit 9'
    )
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    found = host.find_gpu()
    assert not found.found
    assert found.line() == (
        "no GPU found (nvidia-smi exited with 9: NVIDIA-SMI has failed because it could not "
        "communicate)"
    )


def test_cuda_library_dirs_are_the_nvidia_wheels_lib_folders(tmp_path, monkeypatch):
    for folder, library in (("cu13/lib", "libcudart.so.13"), ("cudnn/lib", "libcudnn.so.9")):
        (tmp_path / "nvidia" / folder).mkdir(parents=True)
        (tmp_path / "nvidia" / folder / library).write_bytes(b"")
    (tmp_path / "nvidia" / "cu13" / "include").mkdir()
    (tmp_path / "nvidia" / "empty" / "lib").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = host.cuda_library_dirs()
    assert tmp_path / "nvidia" / "cu13" / "lib" in found
    assert tmp_path / "nvidia" / "cudnn" / "lib" in found
    assert tmp_path / "nvidia" / "cu13" / "include" not in found
    assert tmp_path / "nvidia" / "empty" / "lib" not in found


def test_a_gpu_host_whose_job_ran_on_the_cpu_fails(tmp_path):
    check = Check(parse([str(tmp_path), "--work", str(tmp_path)]))
    check.gpu = host.GpuFinding(True, gpus=[{"name": "NVIDIA H200"}])
    status = {"providers": ["CPUExecutionProvider"]}
    check.record(StageResult("queued_job", Status.PASSED, 1.0, "done", {"aeq_status": status}))
    with pytest.raises(StageFailed, match="CPUExecutionProvider, not CUDA"):
        check.job_on_cuda()


def test_a_missing_redis_server_is_said_plainly(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(StageFailed, match=r"^redis-server is missing \(not on PATH\)"):
        start_redis(tmp_path)


def test_skipped_stages_are_listed_never_counted_as_passed():
    stages = {
        "driver": {"status": "skipped"},
        "engine_cpu": {"status": "passed"},
        "engine_cuda": {"status": "skipped"},
    }
    assert report.counts(stages) == {"passed": 1, "failed": 0, "skipped": 2}
    line = report.summary_line({"stages": stages, "verdict": "passed", "seconds": 1, "budget_s": 9})
    assert line.startswith("passed: 1 passed, 0 failed, 2 skipped (driver, engine_cuda)")
    assert report.verdict({**stages, "worker": {"status": "failed"}}) == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: give the OUT folder for the report"),
        (["out", "--bogus"], "error: unknown option --bogus"),
        (["out", "--budget-s", "soon"], "error: --budget-s must be whole seconds"),
    ],
)
def test_the_script_refuses_bad_arguments_in_one_line(args, message):
    result = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"{message}; see scripts/gpu-check.sh -h"]
