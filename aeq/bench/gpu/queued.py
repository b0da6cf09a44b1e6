"""The private service the check runs against, and what it checks through the real commands.

- Redis: ``aeq.private_service.RedisServer``, on a free port with its files in the work folder.
- The worker: ``aeq worker`` as a user starts it, with ``AEQ_PROVIDERS=cuda,cpu`` (the deployed
  default) and, where a GPU was found, ``--require-gpu``.
- The refusal (no GPU): ``aeq worker --require-gpu`` must exit non-zero with one line naming
  ``--require-gpu``, before anything starts.
- One queued job: ``aeq denoise IN.npy -o OUT.npy --no-wait``, then ``aeq status JOB --json`` until
  it ends, then ``aeq results JOB``; its output is compared with the CPU engine's in this process,
  and the providers its chunks ran on are read from ``aeq status``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aeq.bench.gpu.stages import Outcome, StageFailed, one_line
from aeq.bench.models import BenchModel
from aeq.bench.service import operation
from aeq.private_service import (
    RedisServer,
    WorkerProcess,
    aeq_executable,
    service_env,
    start_worker,
)

SERVICE_PROVIDERS = "cuda,cpu"
WORKER_HOSTNAME = "gpucheck@%h"
REFUSAL_HOSTNAME = "refusal@%h"
REQUIRE_GPU = "--require-gpu"
JOB_ITEMS = 2048
JOB_SEED = 1
STATUS_POLL_S = 0.2
ENDED_STATES = ("done", "failed", "cancelled", "incomplete")
# Largest |queued output - CPU engine| accepted, in uint8 levels: the same graph on CUDA, whose
# convolutions may use TF32 and other kernels, can move a rounded pixel by a level or two.
PIXEL_TOLERANCE = 4


def start_redis(folder: Path) -> RedisServer:
    """A redis-server of our own on a free port (``StageFailed`` saying plainly if none is here)."""
    if shutil.which("redis-server") is None:
        raise StageFailed(
            "redis-server is missing (not on PATH): the worker, queued job and service stages "
            "cannot run"
        )
    return RedisServer(folder)


@dataclass
class PrivateService:
    """Redis plus the workers started against it, and the environment of every ``aeq`` command."""

    folder: Path
    repository: Path
    redis: RedisServer
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            **service_env(self.repository),
            "AEQ_PROVIDERS": SERVICE_PROVIDERS,
            "AEQ_BROKER_URL": self.redis.url,
        }

    def aeq(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Run ``aeq ARGS`` as a user would (``StageFailed`` if it does not end in time)."""
        try:
            return subprocess.run(
                [aeq_executable(), *args],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise StageFailed(f"'aeq {' '.join(args)}' did not end in {timeout_s:.0f} s") from None

    def start_worker(self, require_gpu: bool, timeout_s: float) -> WorkerProcess:
        """Start ``aeq worker`` and wait until Celery says it is ready."""
        args = [REQUIRE_GPU] if require_gpu else []
        worker = start_worker(WORKER_HOSTNAME, args, self.folder, self.env)
        self.workers.append(worker)
        try:
            worker.wait_ready(timeout_s)
        except RuntimeError as error:
            said = [line for line in worker.text().splitlines() if "error" in line.lower()]
            raise StageFailed(one_line(said[-1] if said else str(error))) from None
        return worker

    def stop(self) -> None:
        """Stop the workers, then Redis (by process id, SIGKILL if they will not go)."""
        for worker in self.workers:
            worker.stop()
        self.redis.stop()


def refusal(service: PrivateService, timeout_s: float) -> Outcome:
    """``aeq worker --require-gpu`` where CUDA cannot run: it must refuse in one clear line."""
    command = ["worker", REQUIRE_GPU, "--hostname", REFUSAL_HOSTNAME]
    try:
        finished = service.aeq(*command, timeout_s=timeout_s)
    except StageFailed:
        raise StageFailed(
            f"'aeq worker {REQUIRE_GPU}' was still running after {timeout_s:.0f} s"
        ) from None
    lines = [line for line in (finished.stderr + finished.stdout).splitlines() if line.strip()]
    data = {"exit_code": finished.returncode, "output": lines}
    if finished.returncode == 0:
        raise StageFailed(f"'aeq worker {REQUIRE_GPU}' exited 0 on a host without a GPU", data)
    if len(lines) != 1 or REQUIRE_GPU not in lines[0]:
        raise StageFailed(
            f"expected one line naming {REQUIRE_GPU}, got {len(lines)} line(s): "
            f"{one_line(lines[-1] if lines else '')}",
            data,
        )
    return Outcome(f"exit {finished.returncode}: {lines[0]}", data)


def queued_job(service: PrivateService, model: BenchModel, timeout_s: float) -> Outcome:
    """One job through the real CLI: submit, follow ``aeq status --json``, collect, compare."""
    deadline = time.monotonic() + timeout_s
    images = np.random.default_rng(JOB_SEED).integers(0, 256, (JOB_ITEMS, 28, 28), np.uint8)
    source, output = service.folder / "job-input.npy", service.folder / "job-output.npy"
    np.save(source, images, allow_pickle=False)
    op = operation(model)
    job = _submit(service, op.value, source, output, model.name, deadline)
    status = _follow(service, job, deadline)
    collected = service.aeq(
        "results", job, "-o", str(output), "--overwrite", timeout_s=_left(deadline)
    )
    if collected.returncode != 0:
        raise StageFailed(f"aeq results: {one_line(collected.stderr)}", {"aeq_status": status})
    written = np.load(output, allow_pickle=False)
    difference = int(np.abs(written.astype(int) - cpu_engine_output(model, images)).max())
    data = {"job": job, "aeq_status": status, "max_pixel_diff_vs_cpu_engine": difference}
    if status["state"] != "done" or written.shape != images.shape:
        raise StageFailed(f"job {job} ended {status['state']}, output {written.shape}", data)
    if difference > PIXEL_TOLERANCE:
        raise StageFailed(f"output differs from the CPU engine's by {difference} levels", data)
    return Outcome(
        f"aeq {op.value} --model {model.name}: {JOB_ITEMS} images, {status['chunks']['total']} "
        f"chunks, providers {', '.join(status['providers'])}, workers "
        f"{', '.join(status['workers'])}, max pixel difference to the CPU engine {difference}",
        data,
    )


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())


def _submit(
    service: PrivateService, verb: str, source: Path, output: Path, model: str, deadline: float
) -> str:
    submitted = service.aeq(
        verb, str(source), "-o", str(output), "--model", model, "--no-wait", "--overwrite",
        timeout_s=_left(deadline),
    )  # fmt: skip
    if submitted.returncode != 0 or not submitted.stdout.strip():
        raise StageFailed(f"aeq {verb} --no-wait: {one_line(submitted.stderr)}")
    return submitted.stdout.strip().splitlines()[-1].strip()


def _follow(service: PrivateService, job: str, deadline: float) -> dict[str, Any]:
    """``aeq status JOB --json`` until the job ends (``StageFailed`` at the deadline)."""
    while True:
        shown = service.aeq("status", job, "--json", timeout_s=_left(deadline))
        if shown.returncode != 0:
            raise StageFailed(f"aeq status {job} --json: {one_line(shown.stderr)}")
        status: dict[str, Any] = json.loads(shown.stdout)
        if status["state"] in ENDED_STATES:
            return status
        if time.monotonic() > deadline:
            raise StageFailed(
                f"job {job} still {status['state']} at the stage's timeout", {"aeq_status": status}
            )
        time.sleep(STATUS_POLL_S)


def cpu_engine_output(model: BenchModel, images: np.ndarray) -> np.ndarray:
    """What the worker's engine makes of ``images`` on the CPU, in this process."""
    from aeq.bench.service import in_process_settings
    from worker.inference import Engine

    return Engine(in_process_settings()).run(model.version, operation(model), images).array
