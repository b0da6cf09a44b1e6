"""The service a benchmark measures: a private redis-server and real ``aeq worker`` processes
(``aeq.private_service``), in the layouts the report compares.

Redis runs with the persistence the compose file gives it (append-only file, fsync every second),
so the transfer costs are the deployed ones. Workers log at INFO, where Celery writes one
``Task ... succeeded in S s`` line per chunk: the benchmark reads those to learn how long each
task held the worker, which with the chunk statuses' inference time splits the worker's time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aeq.private_service import RedisServer, WorkerProcess, service_env, start_worker

_TASK_SECONDS = re.compile(r"Task aeq\.run_chunk\[[^\]]+\] succeeded in ([0-9.eE+-]+)s")


def task_seconds(worker: WorkerProcess, since: int) -> list[float]:
    """Durations Celery logged for each chunk task after byte offset ``since`` of the log."""
    return [float(match) for match in _TASK_SECONDS.findall(worker.text(since))]


@dataclass(frozen=True)
class Layout:
    """How the workers of a measurement are started.

    Attributes:
        name: how the report names it.
        commands: one ``aeq worker`` argument list per worker command.
    """

    name: str
    commands: tuple[tuple[str, ...], ...]


# "1 worker" is ``aeq worker`` with its defaults (on a CPU host one process per core, one ONNX
# Runtime thread each); the solo layouts are the default before that (one process, every core
# as a thread) and its one-thread variant; the last is two solo one-thread commands side by side.
SOLO = ("--concurrency", "1")
LAYOUTS = {
    "1 worker": Layout("1 worker", ((),)),
    "1 worker (solo)": Layout("1 worker (solo)", (SOLO,)),
    "1 worker (solo, 1 thread)": Layout("1 worker (solo, 1 thread)", ((*SOLO, "--threads", "1"),)),
    "2 workers (2 solo commands)": Layout(
        "2 workers (2 solo commands)", ((*SOLO, "--threads", "1"),) * 2
    ),
}


@dataclass
class Cluster:
    """A redis-server plus the workers currently running against it."""

    folder: Path
    repository: Path
    redis: RedisServer
    workers: list[WorkerProcess] = field(default_factory=list)

    @classmethod
    def start(cls, folder: Path, repository: Path, redis_args: Sequence[str] = ()) -> Cluster:
        return cls(folder, repository, RedisServer(folder / "redis", redis_args))

    @property
    def env(self) -> dict[str, str]:
        """A user's environment with aeq's variables pointing at this service (CPU only)."""
        return {**service_env(self.repository), "AEQ_BROKER_URL": self.redis.url}

    def start_workers(self, layout: Layout) -> list[WorkerProcess]:
        """Start ``layout``'s workers and wait until each is ready."""
        started = [
            start_worker(f"bench{len(self.workers) + index}@bench", extra, self.folder, self.env)
            for index, extra in enumerate(layout.commands)
        ]
        self.workers += started
        for worker in started:
            worker.wait_ready()
        return started

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        self.redis.stop()
