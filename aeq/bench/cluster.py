"""A private service to measure: its own redis-server on a free port and real ``aeq worker``
processes, started as a user would start them and stopped by process id afterwards.

Redis runs with the persistence the compose file gives it (append-only file, fsync every second),
so the transfer costs are the deployed ones. Workers log at INFO, where Celery writes one
``Task ... succeeded in S s`` line per chunk: the benchmark reads those to learn how long each
task held the worker, which with the chunk statuses' inference time splits the worker's time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

REDIS_START_TIMEOUT_S = 10.0
WORKER_READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
_READY_MARK = " ready."
_TASK_SECONDS = re.compile(rb"Task aeq\.run_chunk\[[^\]]+\] succeeded in ([0-9.eE+-]+)s")


def aeq_executable() -> str:
    """The ``aeq`` script of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / "aeq"
    if beside.exists():
        return str(beside)
    found = shutil.which("aeq")
    if found is None:
        raise RuntimeError("cannot find the aeq command (is the project installed?)")
    return found


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, then SIGKILL if it will not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class RedisProcess:
    """A ``redis-server`` on a free port, with its data in ``folder``."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; the service sections need it")
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = folder / "redis.log"
        command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--logfile", str(self.log),
        ]  # fmt: skip
        self.process = subprocess.Popen(command)
        self.client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        self.client.close()
        stop_process(self.process)


@dataclass
class WorkerProcess:
    """One ``aeq worker`` subprocess and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if _READY_MARK in self.log.read_text(errors="replace"):
                return
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker {self.name} exited:\n{tail}")
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready after {WORKER_READY_TIMEOUT_S} s")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def task_seconds(self, since: int) -> list[float]:
        """Durations Celery logged for each chunk task after byte offset ``since``."""
        with open(self.log, "rb") as stream:
            stream.seek(since)
            return [float(match) for match in _TASK_SECONDS.findall(stream.read())]


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
    redis: RedisProcess
    workers: list[WorkerProcess] = field(default_factory=list)

    @classmethod
    def start(cls, folder: Path, repository: Path) -> Cluster:
        return cls(folder, repository, RedisProcess(folder / "redis"))

    @property
    def env(self) -> dict[str, str]:
        """A user's environment with aeq's variables pointing at this service (CPU only)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("AEQ_")}
        env.update(
            {
                "AEQ_BROKER_URL": self.redis.url,
                "AEQ_MODEL_REPOSITORY": str(self.repository),
                "AEQ_PROVIDERS": "cpu",
                "COLUMNS": "120",
            }
        )
        return env

    def start_workers(self, layout: Layout) -> list[WorkerProcess]:
        """Start ``layout``'s workers and wait until each is ready."""
        started = []
        for index, extra in enumerate(layout.commands):
            name = f"bench{len(self.workers) + index}"
            log = self.folder / f"worker-{name}.log"
            command = [aeq_executable(), "worker", "--hostname", f"{name}@bench", *extra]
            with open(log, "wb") as stream:
                process = subprocess.Popen(
                    [*command, "--loglevel", "info"], stdout=stream, stderr=subprocess.STDOUT,
                    env=self.env,
                )  # fmt: skip
            started.append(WorkerProcess(name, process, log))
        self.workers += started
        for worker in started:
            worker.wait_ready()
        return started

    def stop_workers(self) -> None:
        for worker in self.workers:
            stop_process(worker.process)
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        self.redis.stop()
