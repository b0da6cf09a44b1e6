"""Fixtures of the container scenarios: one compose project, its models, its running stack.

Run through ``make compose-test`` (scripts/compose-test.sh), which starts the engine and builds the
images first; every test here is marked ``container`` and left out of the default ``pytest`` run.
The project gets its own name (``aeq-compose-test``), its own env file and its own volumes, which
are removed before and after, so a deployment of aeq on the same host is never touched.
``COMPOSE_TEST_REUSE=1`` (for working on the scenarios) keeps the project and its volumes at the
end and reuses models already published in them instead of training again.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.stack import WORKERS, Stack, mnist_folder

PROJECT = "aeq-compose-test"
IMAGES = ("aeq-worker", "aeq-flower", "aeq-train", "aeq-worker-gpu")
# Short training (aeq-train-all's arguments; COMPOSE_TEST_TRAIN_ARGS replaces them): the shortest
# tried here in which no model collapses (with one epoch the vanilla and sparse models do, and
# export rightly refuses them).
TRAIN_ARGS = tuple(os.environ.get("COMPOSE_TEST_TRAIN_ARGS", "--epochs 4 --limit 2000").split())
MODELS = 5
HEALTHY_TIMEOUT_S = 180
# Chunks a killed worker held come back after 1.25 x this (docs/SERVICE.md).
VISIBILITY_TIMEOUT_S = 10
SCENARIO_REPORT = "scenarios.txt"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder runs real containers."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.container)


def free_port() -> int:
    """A TCP port free on the host's loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def report_dir() -> Path:
    """Where the scenarios write what they measured (scripts/compose-test.sh prints it)."""
    folder = Path(os.environ.get("COMPOSE_TEST_DIR", "/tmp/aeq-compose-test"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SCENARIO_REPORT).write_text("")
    return folder


@pytest.fixture(scope="session")
def record(report_dir: Path):  # type: ignore[no-untyped-def]
    """``record(name, **measures)``: one line per scenario into the report."""

    def write(name: str, **measures: object) -> None:
        line = f"{name}: " + ", ".join(f"{key}={value}" for key, value in measures.items())
        with (report_dir / SCENARIO_REPORT).open("a") as handle:
            handle.write(line + "\n")
        print(line)

    return write


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The compose project, configured the way docs/DEPLOY.md's section 1 says, with free ports."""
    docker = os.environ.get("COMPOSE_TEST_DOCKER", "/usr/bin/docker")
    compose = os.environ.get("COMPOSE_TEST_COMPOSE", "")
    if not compose or not Path(docker).exists():
        pytest.fail(
            "run these through 'make compose-test' (it starts Docker and builds the images)"
        )
    folder = tmp_path_factory.mktemp("compose")
    env_file = folder / ".env"
    settings = {
        "REDIS_PASSWORD": secrets.token_hex(32),
        "AEQ_HOST_DATA_DIR": str(mnist_folder()),
        "AEQ_VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S),
        # Two containers on this host: one process each (docs/DEPLOY.md, "Scaling on one host").
        "AEQ_WORKER_CONCURRENCY": "1",
        "FLOWER_PORT": str(free_port()),
        "REDIS_HOST_PORT": str(free_port()),
    }
    for name in ("REDIS_IMAGE", "PYTHON_IMAGE", "CUDA_IMAGE", "CUDA_LIBRARIES", "AEQ_IMAGE_TAG"):
        if os.environ.get(name):
            settings[name] = os.environ[name]
    env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
    project = Stack(docker, compose, PROJECT, env_file, settings=settings)
    reuse = os.environ.get("COMPOSE_TEST_REUSE") == "1"
    if not reuse:
        _remove(project)
    for image in IMAGES:
        if project.docker_run("image", "inspect", f"{image}:latest", check=False).returncode:
            pytest.fail(f"image {image} is missing: run 'make compose-test' (it builds the images)")
    yield project
    if not reuse:
        _remove(project)


def _remove(project: Stack) -> None:
    profiles = ("--profile", "train", "--profile", "monitor")
    project.run(*profiles, "down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


@pytest.fixture(scope="session")
def models(stack: Stack, record) -> str:  # type: ignore[no-untyped-def]
    """Train and publish the five models into the `models` volume, as section 2 of the docs does."""
    if os.environ.get("COMPOSE_TEST_REUSE") == "1":
        listing = stack.run("run", "--rm", "--no-deps", "worker", "aeq", "models", "--json")
        if len(json.loads(listing.stdout)) == MODELS:
            return listing.stdout
    started = time.monotonic()
    result = stack.run("--profile", "train", "run", "--rm", "train", "aeq-train-all", *TRAIN_ARGS)
    seconds = time.monotonic() - started
    record("train", seconds=f"{seconds:.0f}", args=" ".join(TRAIN_ARGS))
    return result.stdout


@pytest.fixture(scope="session")
def running(stack: Stack, models: str, record) -> Stack:  # type: ignore[no-untyped-def]
    """Redis and two CPU workers up and healthy (section 3 of the docs)."""
    started = time.monotonic()
    stack.run("up", "-d", "--scale", f"worker={WORKERS}")
    up_s = time.monotonic() - started
    healthy_s = stack.wait_healthy({"redis": 1, "worker": WORKERS}, HEALTHY_TIMEOUT_S)
    record("up", up_seconds=f"{up_s:.0f}", healthy_seconds=f"{up_s + healthy_s:.0f}")
    return stack
