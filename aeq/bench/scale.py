"""Section 6, scale (issue 12): jobs of any size, side by side, through the real CLI.

Everything here runs the ``aeq`` command as a user does (interpreter start included) against a
private redis-server capped at ``maxmemory`` with ``noeviction`` (docker-compose's policy), and
one default ``aeq worker``:

- ``start``: wall and CPU time of ``aeq denoise --help`` and ``aeq status --help``;
- ``notice``: with no worker at all (a Redis of its own), how long a job command takes to say so;
- ``big``: one very large denoise job: Redis' ``used_memory`` sampled during it (and Redis' own
  peak counter: the job runs first on a fresh server), the client's RSS over time;
- ``transport``: a large ``vanilla`` job against a pure transport baseline, the same chunk bytes
  moved through the same Redis as a job moves them (input in, input out, output in, output out:
  SET, GET, SET, GET, DEL) by one redis-py client, no Celery, no inference; and against
  in-process ONNX Runtime;
- ``throughput``: 200,000-image jobs of the compute-bound models against in-process ONNX
  Runtime's default session at batch 1024 over the same images (float32, prepared beforehand);
- ``fair``: a 10-image job alone, then queued a few seconds after a large one.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aeq.bench.cluster import LAYOUTS, Cluster
from aeq.bench.memory import MIB, tree_rss
from aeq.bench.models import BenchModel
from aeq.bench.service import operation, warm_up
from aeq.bench.sessions import OrtConfig
from aeq.core.catalog import Graph
from aeq.private_service import RedisServer, aeq_executable
from aeq.queue.protocol import DEFAULT_CHUNK_SIZE, encode_array
from aeq.queue.store import connect

NO_WORKER_NOTICE = "no worker is consuming queue"
NOTICE_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 3600.0
ORT_BATCH = 1024
REDIS_SAMPLE_S = 0.05
RSS_SAMPLE_S = 0.2
FAIR_HEAD_START_S = 3.0
# Where each part's figures are judged (the models); another model is measured, not judged.
PREFERRED = {"big": "denoising", "fair": "denoising", "transport": "vanilla"}
THROUGHPUT_MODELS = ("denoising", "conv")


@dataclass(frozen=True)
class ScaleSizes:
    """How large each part's jobs are (``aeq bench`` full and ``--quick`` sizes in the suite)."""

    big_items: int
    transport_items: int
    throughput_items: int
    fair_items: int
    fair_small_items: int
    rounds: int
    maxmemory_mb: int


def run(
    models: dict[str, BenchModel], images: Any, folder: Path, repository: Path, sizes: ScaleSizes
) -> dict[str, Any]:
    """Every part, in an order that keeps Redis' peak counter the big job's own."""
    folder.mkdir(parents=True, exist_ok=True)
    chosen = {
        part: models.get(name) or next(iter(models.values())) for part, name in PREFERRED.items()
    }
    results: dict[str, Any] = {"maxmemory_mb": sizes.maxmemory_mb}
    results["start"] = command_start(sizes.rounds)
    results["notice"] = no_worker_notice(chosen["big"], images, folder / "notice", repository)
    cluster = Cluster.start(folder / "service", repository, redis_args(sizes.maxmemory_mb))
    try:
        cluster.start_workers(LAYOUTS["1 worker"])
        warm_up(cluster, models, images, folder / "service")
        results["big"] = big_job(cluster, chosen["big"], images, folder, sizes.big_items)
        results["transport"] = transport(
            cluster, chosen["transport"], images, folder, sizes.transport_items
        )
        picked = [models[name] for name in THROUGHPUT_MODELS if name in models]
        results["throughput"] = {
            model.name: throughput(cluster, model, images, folder, sizes.throughput_items)
            for model in picked or [next(iter(models.values()))]
        }
        results["fair"] = fair_turns(cluster, chosen["fair"], images, folder, sizes)
    finally:
        cluster.stop()
    return results


def redis_args(maxmemory_mb: int) -> tuple[str, ...]:
    return ("--maxmemory", f"{maxmemory_mb}mb", "--maxmemory-policy", "noeviction")


# -- the command line ---------------------------------------------------------------------------


def command_start(rounds: int) -> dict[str, Any]:
    """Median wall and CPU seconds of job commands' ``--help`` (all imports, no work)."""
    commands = {
        "aeq denoise --help": ["denoise", "--help"],
        "aeq status --help": ["status", "--help"],
    }
    measured: dict[str, dict[str, list[float]]] = {
        name: {"wall": [], "cpu": []} for name in commands
    }
    for _ in range(max(rounds, 3)):
        for name, args in commands.items():
            wall, cpu = _timed_command([aeq_executable(), *args])
            measured[name]["wall"].append(wall)
            measured[name]["cpu"].append(cpu)
    return {
        name: {
            "wall_s": statistics.median(times["wall"]),
            "cpu_s": statistics.median(times["cpu"]),
            "runs": len(times["wall"]),
        }
        for name, times in measured.items()
    }


def _timed_command(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one command run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True, timeout=60)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def job_command(model: BenchModel, input_path: Path, output: Path) -> list[str]:
    """The real command a user runs for ``model`` on ``input_path``."""
    return [
        aeq_executable(), operation(model).value, str(input_path), "-o", str(output),
        "--model", model.name, "--overwrite",
    ]  # fmt: skip


def cli_job(command: list[str], env: dict[str, str]) -> float:
    """Run a job command to its end; its wall seconds."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=JOB_TIMEOUT_S)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return seconds


def no_worker_notice(
    model: BenchModel, images: Any, folder: Path, repository: Path
) -> dict[str, Any]:
    """Seconds from starting a job command, with no worker anywhere, to its one-line notice."""
    folder.mkdir(parents=True, exist_ok=True)
    redis = RedisServer(folder / "redis")
    try:
        env = {**Cluster(folder, repository, redis).env}
        input_path = images.save(folder / "small.npy", 10)
        started = time.perf_counter()
        client = subprocess.Popen(
            job_command(model, input_path, folder / "out.npy"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        line = _first_line_with(client, NO_WORKER_NOTICE, NOTICE_TIMEOUT_S)
        seconds = time.perf_counter() - started
        client.kill()
        client.wait()
    finally:
        redis.stop()
    return {"seconds": seconds if line else None, "line": line}


def _first_line_with(process: subprocess.Popen[str], text: str, timeout_s: float) -> str:
    """The first stderr line of ``process`` holding ``text`` ('' if none within the timeout)."""
    found: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if text in line:
                found.append(line.strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout_s)
    return found[0] if found else ""


# -- one very large job -------------------------------------------------------------------------


@dataclass
class Watch:
    """Samples Redis' ``used_memory`` and a client's RSS on a thread while a job runs."""

    redis: Any
    process: Any
    redis_peak: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        started = last_rss = time.perf_counter()
        while not self._stop.wait(REDIS_SAMPLE_S):
            used = int(self.redis.info("memory")["used_memory"])
            self.redis_peak = max(self.redis_peak, used)
            now = time.perf_counter()
            if now - last_rss >= RSS_SAMPLE_S:
                last_rss = now
                self.rss.append((now - started, tree_rss(self.process)))


def big_job(
    cluster: Cluster, model: BenchModel, images: Any, folder: Path, items: int
) -> dict[str, Any]:
    """One job of ``items`` images through the CLI against the capped Redis."""
    import psutil

    input_path = images.save(folder / "big.npy", items)
    output = folder / "big-out.npy"
    redis = cluster.redis.client()
    baseline = int(redis.info("memory")["used_memory"])
    started = time.perf_counter()
    client = subprocess.Popen(
        job_command(model, input_path, output),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cluster.env,
    )  # fmt: skip
    with Watch(redis, psutil.Process(client.pid)) as watch:
        _, error = client.communicate(timeout=JOB_TIMEOUT_S)
    seconds = time.perf_counter() - started
    if client.returncode != 0:
        raise RuntimeError(f"the {items:,}-image job failed: {error.decode()[-2000:]}")
    memory = redis.info("memory")
    redis.close()
    done = np.load(output, mmap_mode="r").shape[0]
    input_path.unlink()
    output.unlink()
    return {
        "model": model.name,
        "items": items,
        "items_written": int(done),
        "seconds": seconds,
        "images_per_s": items / seconds,
        "redis_used_before_mib": baseline / MIB,
        "redis_peak_sampled_mib": watch.redis_peak / MIB,
        "redis_peak_counter_mib": int(memory["used_memory_peak"]) / MIB,
        "redis_maxmemory_mib": int(memory["maxmemory"]) / MIB,
        "client_rss": rss_growth(watch.rss),
    }


def rss_growth(samples: list[tuple[float, int]]) -> dict[str, Any]:
    """The client's RSS: peak in the first and the second half of the job, and their ratio
    ("flat": the second half's peak at most 10% above the first's)."""
    if len(samples) < 2:
        return {"samples": len(samples)}
    half = len(samples) // 2  # samples come at a steady pace: half of them, half of the time
    first = max(rss for _, rss in samples[:half])
    second = max(rss for _, rss in samples[half:])
    return {
        "samples": len(samples),
        "first_half_peak_mib": first / MIB,
        "second_half_peak_mib": second / MIB,
        "growth": second / first,
    }


# -- against ceilings ---------------------------------------------------------------------------


def in_process_seconds(model: BenchModel, floats: np.ndarray) -> float:
    """ONNX Runtime's default session over ``floats`` at batch 1024 (after one warm-up call)."""
    session = OrtConfig().session(model.version.read_verified(Graph.AUTOENCODER))
    name = session.get_inputs()[0].name
    session.run(None, {name: floats[:ORT_BATCH]})
    started = time.perf_counter()
    for start in range(0, len(floats), ORT_BATCH):
        session.run(None, {name: floats[start : start + ORT_BATCH]})
    return time.perf_counter() - started


def throughput(
    cluster: Cluster, model: BenchModel, images: Any, folder: Path, items: int
) -> dict[str, Any]:
    """A job of ``items`` images through the CLI against in-process ONNX Runtime on them."""
    in_process = in_process_seconds(model, images.floats(items, model.spec.input_dims))
    input_path, output = images.save(folder / "job.npy", items), folder / "out.npy"
    seconds = cli_job(job_command(model, input_path, output), cluster.env)
    input_path.unlink()
    output.unlink()
    return {
        "items": items,
        "cli_s": seconds,
        "in_process_s": in_process,
        "ratio_vs_in_process": in_process / seconds,
    }


def transport_baseline_seconds(redis: Any, images: np.ndarray, chunk_size: int) -> float:
    """The chunks of ``images`` moved through Redis as a job moves them: the client puts the
    input, a worker gets it, puts an output of the same size, the client gets it; then both go."""
    started = time.perf_counter()
    for start in range(0, len(images), chunk_size):
        data = encode_array(images[start : start + chunk_size])  # as a job sends it
        redis.set("aeq:bench:in", data)
        taken = redis.get("aeq:bench:in")
        redis.set("aeq:bench:out", taken)
        redis.get("aeq:bench:out")
        redis.delete("aeq:bench:in", "aeq:bench:out")
    return time.perf_counter() - started


def transport(
    cluster: Cluster, model: BenchModel, images: Any, folder: Path, items: int
) -> dict[str, Any]:
    """A large job of a transport-bound model against the transport baseline and in-process ORT,
    each measured right before the job."""
    pixels = images.take(items)
    redis = connect(cluster.redis.url, check=False)  # the client the service's own parts use
    try:
        baseline = transport_baseline_seconds(redis, pixels, DEFAULT_CHUNK_SIZE)
    finally:
        redis.close()
    del pixels
    job = throughput(cluster, model, images, folder, items)
    return {
        **job,
        "model": model.name,
        "chunk_size": DEFAULT_CHUNK_SIZE,
        "baseline_s": baseline,
        "ratio_vs_baseline": baseline / job["cli_s"],
    }


# -- fair turns ---------------------------------------------------------------------------------


def fair_turns(
    cluster: Cluster, model: BenchModel, images: Any, folder: Path, sizes: ScaleSizes
) -> dict[str, Any]:
    """The small job alone, then ``FAIR_HEAD_START_S`` after the big one started; each round."""
    big = images.save(folder / "fair-big.npy", sizes.fair_items)
    small = images.save(folder / "fair-small.npy", sizes.fair_small_items)
    small_job = job_command(model, small, folder / "small-out.npy")
    alone, behind, big_after = [], [], []
    for _ in range(sizes.rounds):
        alone.append(cli_job(small_job, cluster.env))
        big_client = subprocess.Popen(
            job_command(model, big, folder / "big-out.npy"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cluster.env,
        )  # fmt: skip
        time.sleep(FAIR_HEAD_START_S)
        behind.append(cli_job(small_job, cluster.env))
        waited = time.perf_counter()
        if big_client.wait(timeout=JOB_TIMEOUT_S) != 0:
            raise RuntimeError("the big job of the fairness check failed")
        big_after.append(time.perf_counter() - waited)
    big.unlink()
    return {
        "model": model.name,
        "big_items": sizes.fair_items,
        "small_items": sizes.fair_small_items,
        "head_start_s": FAIR_HEAD_START_S,
        "alone_s": alone,
        "behind_s": behind,
        "big_ended_after_s": big_after,
        "ratio": statistics.median(behind) / statistics.median(alone),
    }
