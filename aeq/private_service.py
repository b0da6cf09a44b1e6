"""A private aeq service on this machine: its own ``redis-server`` on a free port and real
``aeq worker`` processes, started as a user starts them and stopped by process id afterwards.

``aeq bench`` measures one (``aeq.bench.cluster``) and the tests run against one
(``tests/conftest.py``, ``tests/integration/conftest.py``). It needs only the standard library
and redis-py, which the serving side installs anyway, so the test suite can use it without the
bench's extra. Redis keeps its data in a folder of its own, with the persistence the compose file
gives it (append-only file, fsync every second, no RDB snapshots); a Redis on 6379 is never
touched. Workers log at INFO into ``<folder>/worker-<name>.log``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

REDIS_START_TIMEOUT_S = 10.0
WORKER_READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
# Celery logs "<hostname> ready." once a worker consumes from its queues.
_READY_MARK = " ready."


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def aeq_executable() -> str:
    """The ``aeq`` script of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / "aeq"
    if beside.exists():
        return str(beside)
    found = shutil.which("aeq")
    if found is None:
        raise RuntimeError("cannot find the aeq command (is the project installed?)")
    return found


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, wait, then SIGKILL if it will not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def service_env(repository: Path) -> dict[str, str]:
    """A user's environment with aeq's own variables cleared, then pointed at ``repository`` and
    the CPU (what the workers and the ``aeq`` commands of a private service run with)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AEQ_")}
    env.update({"AEQ_MODEL_REPOSITORY": str(repository), "AEQ_PROVIDERS": "cpu", "COLUMNS": "120"})
    return env


class RedisServer:
    """A ``redis-server`` subprocess on a free port, with its data and log in ``folder``."""

    def __init__(self, folder: Path, extra_args: Sequence[str] = ()) -> None:
        """Start it; ``extra_args`` are more ``redis-server`` options (``--maxmemory 256mb``)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (.ci/run installs it with apt)")
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = folder / "redis.log"
        command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--logfile", str(self.log), *extra_args,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] = subprocess.Popen(command)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the server answers PING (``RuntimeError`` if it exits or stays silent)."""
        client = self.client(socket_connect_timeout=0.5)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def client(self, **options: float) -> redis.Redis:
        """A new client of this server (redis-py connection ``options`` passed on)."""
        return redis.Redis.from_url(self.url, **options)

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class WorkerProcess:
    """One ``aeq worker`` subprocess and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def text(self, since: int = 0) -> str:
        """The log from byte offset ``since`` on (``log_size`` marks where a step starts)."""
        with open(self.log, "rb") as stream:
            stream.seek(since)
            return stream.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log.stat().st_size

    def wait_ready(self, timeout_s: float = WORKER_READY_TIMEOUT_S) -> None:
        """Wait until Celery says the worker is ready (``RuntimeError`` if it exits first)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _READY_MARK in self.text():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited:\n{self.text()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.name} not ready after {timeout_s:.0f} s")

    def stop(self) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL if it will not go."""
        stop_process(self.process)

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no message handed back."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def start_worker(
    hostname: str,
    args: Sequence[str],
    folder: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> WorkerProcess:
    """Start ``aeq worker --hostname HOSTNAME --loglevel info ARGS``, logging into
    ``folder/worker-<name>.log`` (name: the hostname before its ``@``); does not wait for it."""
    name = hostname.partition("@")[0]
    log = folder / f"worker-{name}.log"
    command = [aeq_executable(), "worker", "--hostname", hostname, "--loglevel", "info", *args]
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            command, stdout=stream, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd
        )
    return WorkerProcess(name, process, log)
