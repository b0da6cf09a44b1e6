"""Section 3, latency: one-image jobs through Redis and one warm worker, p50/p95.

Three views of the same round trip, per model:

- ``submit_to_result``: from ``JobClient.submit`` to the result handed to the output writer, with
  one client kept across jobs (connections open, Celery app made): what the service adds;
- ``command_path``: everything one ``aeq`` command does after its interpreter started: connect,
  open and check the input, submit, follow, commit the ``.npy``, delete the job data;
- ``cli``: the real command as a subprocess (a few runs): what a user at a shell waits.

``inference`` is what the chunk statuses record for the ONNX Runtime part of each job.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from aeq.bench.cluster import Cluster
from aeq.bench.jobs import job_timeout_s, watchdog
from aeq.bench.models import BenchModel
from aeq.bench.service import CLI_TIMEOUT_S, operation
from aeq.bench.timing import percentile
from aeq.core.settings import Settings, load_settings
from aeq.private_service import aeq_executable

WARMUP_JOBS = 5


def _summary(seconds: list[float]) -> dict[str, Any]:
    milliseconds = [1000.0 * value for value in seconds]
    return {
        "p50_ms": percentile(milliseconds, 0.5),
        "p95_ms": percentile(milliseconds, 0.95),
        "min_ms": min(milliseconds),
        "max_ms": max(milliseconds),
        "count": len(milliseconds),
    }


def submit_to_result(
    settings: Settings, model: BenchModel, input_path: Path, output: Path, jobs: int
) -> tuple[list[float], list[float]]:
    """Round trips with one client kept open; also each job's recorded inference seconds."""
    from aeq.client import views
    from aeq.client.client import FollowState, JobClient, Submission
    from aeq.files.inputs import open_images

    client = JobClient(settings)
    submission = Submission(operation(model), model.version, open_images([input_path]), 1)
    trips, inference = [], []
    for index in range(WARMUP_JOBS + jobs):
        submitted: list[str] = []
        with (
            views.open_output(output, submission, True) as writer,
            watchdog(client, submitted, job_timeout_s(1)),
        ):
            started = time.perf_counter()
            submitted.append(job := client.submit(submission))
            client.follow(job, writer, FollowState())
            finished = time.perf_counter()
            writer.commit()
        record = client.record(job)
        client.finish(job, keep=False)
        if index >= WARMUP_JOBS:
            trips.append(finished - started)
            inference.append(sum(status.seconds for status in record.statuses.values()))
    return trips, inference


def command_path(
    settings: Settings, model: BenchModel, input_path: Path, output: Path, jobs: int
) -> list[float]:
    """What one ``aeq`` command does per job, fresh client included."""
    from aeq.client import views
    from aeq.client.client import FollowState, JobClient, Submission
    from aeq.files.inputs import open_images

    seconds = []
    for index in range(WARMUP_JOBS + jobs):
        started = time.perf_counter()
        client = JobClient(settings)
        source = open_images([input_path])
        submission = Submission(operation(model), model.version, source, 1)
        submitted: list[str] = []
        with (
            views.open_output(output, submission, True) as writer,
            watchdog(client, submitted, job_timeout_s(1)),
        ):
            submitted.append(job := client.submit(submission))
            client.follow(job, writer, FollowState())
            writer.commit()
        client.finish(job, keep=False)
        if index >= WARMUP_JOBS:
            seconds.append(time.perf_counter() - started)
    return seconds


def cli_round_trips(
    cluster: Cluster, model: BenchModel, input_path: Path, output: Path, runs: int
) -> list[float]:
    """The real command, ``runs`` times."""
    command = [aeq_executable(), operation(model).value, str(input_path), "-o", str(output)]
    command += ["--model", model.name, "--overwrite"]
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            command, capture_output=True, env=cluster.env, check=True, timeout=CLI_TIMEOUT_S
        )
        seconds.append(time.perf_counter() - started)
    return seconds


def run(
    cluster: Cluster,
    models: dict[str, BenchModel],
    images: Any,
    folder: Path,
    jobs: int,
    cli_runs: int,
) -> dict[str, Any]:
    """Section 3 for every model, with the cluster's (one, warm) worker."""
    folder.mkdir(parents=True, exist_ok=True)
    input_path = images.save(folder / "one-image.npy", 1)
    output = folder / "one-image-out.npy"
    settings = load_settings(cluster.env)
    results = {}
    for name, model in models.items():
        trips, inference = submit_to_result(settings, model, input_path, output, jobs)
        results[name] = {
            "submit_to_result": _summary(trips),
            "inference": _summary(inference),
            "command_path": _summary(command_path(settings, model, input_path, output, jobs)),
            "cli": _summary(cli_round_trips(cluster, model, input_path, output, cli_runs)),
        }
    return {"jobs": jobs, "cli_runs": cli_runs, "workers": len(cluster.workers), "models": results}
