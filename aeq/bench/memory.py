"""Section 4, memory: peak resident memory of the client, the worker and Redis per job size.

The client is the real command (``aeq reconstruct IN.npy -o OUT.npy``) in its own process, so
its memory is what a user's machine sees (no TensorFlow from this process). A sampler thread
polls RSS (psutil) of the client, of the worker (its children too, for a prefork worker) and of
redis-server every few milliseconds; for the client the kernel's own high-water mark (VmHWM) is
read too, which catches peaks between samples. The worker and Redis run through both jobs, so
their figures are the peak during each job.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aeq.bench.cluster import Cluster
from aeq.bench.models import BenchModel
from aeq.bench.service import CLI_TIMEOUT_S, operation
from aeq.private_service import aeq_executable

SAMPLE_INTERVAL_S = 0.005
MIB = 2**20
# "Flat" worker memory: the larger job's peak at most this much above the smaller job's.
FLAT_TOLERANCE = 1.10


def high_water_mark(pid: int) -> int:
    """The kernel's peak RSS of a live process in bytes (0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(process: Any) -> int:
    """RSS of a process and its children, in bytes (0 once it is gone)."""
    import psutil

    try:
        members = [process, *process.children(recursive=True)]
        return sum(member.memory_info().rss for member in members)
    except psutil.Error:
        return 0


@dataclass
class Sampler:
    """Polls the peak memory of named processes on a thread until stopped."""

    processes: dict[str, Any]
    hwm_pids: dict[str, int] = field(default_factory=dict)
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for name, process in self.processes.items():
                self.peaks[name] = max(self.peaks.get(name, 0), tree_rss(process))
            for name, pid in self.hwm_pids.items():
                self.peaks[name] = max(self.peaks.get(name, 0), high_water_mark(pid))
            time.sleep(SAMPLE_INTERVAL_S)


def measure_job(cluster: Cluster, model: BenchModel, input_path: Path, output: Path) -> dict:
    """Run the real command on ``input_path``; peak MiB of client, worker and Redis, seconds."""
    import psutil

    command = [aeq_executable(), operation(model).value, str(input_path), "-o", str(output)]
    command += ["--model", model.name, "--overwrite"]
    watched = {
        "worker": psutil.Process(cluster.workers[0].process.pid),
        "redis": psutil.Process(cluster.redis.process.pid),
    }
    before = {f"{name}_before_mib": tree_rss(process) / MIB for name, process in watched.items()}
    started = time.perf_counter()
    client = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cluster.env
    )
    watched["client"] = psutil.Process(client.pid)
    with Sampler(watched, hwm_pids={"client": client.pid}) as sampler:
        _, error = client.communicate(timeout=CLI_TIMEOUT_S)
    seconds = time.perf_counter() - started
    if client.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {error.decode()[-2000:]}")
    peaks = {f"{name}_peak_mib": value / MIB for name, value in sampler.peaks.items()}
    return {**before, **peaks, "seconds": seconds}


def run(
    cluster: Cluster, model: BenchModel, images: Any, folder: Path, sizes: tuple[int, ...]
) -> dict[str, Any]:
    """Section 4: the same model on jobs of each size, smallest first, with the cluster's
    (one, warm) worker."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = {}
    for size in sorted(sizes):
        input_path = images.save(folder / f"memory-{size}.npy", size)
        jobs[str(size)] = measure_job(cluster, model, input_path, folder / "memory-out.npy")
        input_path.unlink()
    small, large = str(min(sizes)), str(max(sizes))
    growth = {
        part: jobs[large][f"{part}_peak_mib"] / jobs[small][f"{part}_peak_mib"]
        for part in ("client", "worker", "redis")
    }
    return {
        "model": model.name,
        "sizes": sorted(sizes),
        "jobs": jobs,
        "growth": growth,
        "flat_tolerance": FLAT_TOLERANCE,
    }
