"""The compose deployment on real containers (issue 13): each scenario as docs/DEPLOY.md runs it.

The scenarios share one stack and run in this file's order: training first, then the stack with
the docs' commands (default compose file), then the host CLI through docker/expose-redis.yml, the
faults, and `down`/`up` last. What each measured goes into the harness's report.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.container.stack import COMPOSE_FILE, EXPOSE_REDIS_FILE, WORKERS, Stack, mnist_folder

VENV_BIN = Path(sys.executable).parent
MODEL_NAMES = {"vanilla", "multilayer", "conv", "sparse", "denoising"}
IMAGE_UID = 10001
# A host user other than root and the images' aeq user: the owner of the bind-mounted folder.
HOST_USER = "12345:12345"
JOB_IMAGES = 5000
FAULT_IMAGES = 20_000
FAULT_CHUNK_SIZE = 100
# The quick training's denoiser must still lift noisy digits clearly (make demo: 9.4 -> 18.7 dB).
MIN_PSNR_GAIN_DB = 4.0
JOB_TIMEOUT_S = 240
REDIS_OUTAGE_S = 3.0
UNAUTHENTICATED = re.compile(r"NOAUTH|WRONGPASS|[Aa]uthentication", re.MULTILINE)


@dataclass
class Digits:
    """Noisy test digits and their clean originals, in a folder the containers can mount."""

    folder: Path
    noisy: np.ndarray
    clean: np.ndarray


def psnr_db(images: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio of uint8 images against the reference, in dB."""
    error = np.mean((images.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return 10 * math.log10(255.0**2 / error)


def host_environment(**settings: str) -> dict[str, str]:
    """The host's environment with no aeq settings of its own, plus ``settings``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AEQ_")}
    return {**environment, **settings}


def host_aeq(*args: str, env: dict[str, str], timeout: float = JOB_TIMEOUT_S) -> str:
    """Run the host's ``aeq``; its stdout. Fails with its stderr."""
    result = subprocess.run(
        [str(VENV_BIN / "aeq"), *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert result.returncode == 0, f"aeq {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    """5,000 noisy MNIST test digits (the article's noise) and the clean ones, from the host CLI."""
    folder = tmp_path_factory.mktemp("digits")
    env = host_environment(AEQ_DATA_DIR=str(mnist_folder()))
    count = str(JOB_IMAGES)
    host_aeq("samples", str(folder / "noisy.npy"), "--count", count, env=env)
    host_aeq("samples", str(folder / "clean.npy"), "--count", count, "--noise", "0", env=env)
    folder.chmod(0o755)
    return Digits(folder, np.load(folder / "noisy.npy"), np.load(folder / "clean.npy"))


@pytest.fixture(scope="module")
def host_repository(running: Stack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The models copied out of the volume, as docs/DEPLOY.md section 4b does."""
    repository = tmp_path_factory.mktemp("model_repository")
    running.run("cp", "worker:/models/.", str(repository))
    return repository


@pytest.fixture(scope="module")
def reference(host_repository: Path, digits: Digits) -> np.ndarray:
    """The 5,000 digits denoised in the host's own process (local mode), to compare outputs with."""
    env = host_environment(AEQ_MODEL_REPOSITORY=str(host_repository))
    output = digits.folder / "reference.npy"
    host_aeq("denoise", str(digits.folder / "noisy.npy"), "-o", str(output), env=env)
    return np.load(output)


def assert_denoised(output: np.ndarray, digits: Digits, reference: np.ndarray) -> dict[str, str]:
    """Every item back, equal to the in-process result, and a PSNR gain like make demo's."""
    assert output.shape == digits.noisy.shape and output.dtype == np.uint8
    difference = np.abs(output.astype(np.int16) - reference.astype(np.int16))
    assert difference.max() <= 1, "the workers' outputs match in-process ONNX Runtime"
    noisy_db, denoised_db = psnr_db(digits.noisy, digits.clean), psnr_db(output, digits.clean)
    assert denoised_db - noisy_db >= MIN_PSNR_GAIN_DB, (noisy_db, denoised_db)
    return {"psnr_noisy_db": f"{noisy_db:.1f}", "psnr_denoised_db": f"{denoised_db:.1f}"}


# --- training and the stack, with the docs' commands --------------------------------------------


def test_train_publishes_five_models_that_workers_read_only(
    stack: Stack, models: str, record
) -> None:  # type: ignore[no-untyped-def]
    listing = stack.run("run", "--rm", "--no-deps", "worker", "aeq", "models", "--json").stdout
    names = {model["model"] for model in json.loads(listing)}
    assert names == MODEL_NAMES
    probe = stack.run(
        "run", "--rm", "--no-deps", "worker", "sh", "-c", "id -u; touch /models/x", check=False
    )
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe
    assert probe.stdout.split()[0] == str(IMAGE_UID)
    record("models", published=len(names), worker_mount="read-only", uid=IMAGE_UID)


def test_redis_and_workers_are_healthy_by_their_own_healthchecks(running: Stack) -> None:
    for service, count in (("redis", 1), ("worker", WORKERS)):
        containers = running.containers(service)
        assert len(containers) == count
        for container in containers:
            health = running.inspect(container)["State"]["Health"]
            assert health["Status"] == "healthy"
            assert any(check["ExitCode"] == 0 for check in health["Log"]), "a check really ran"


def test_redis_refuses_clients_without_the_password(running: Stack) -> None:
    (redis,) = running.containers("redis")
    anonymous = running.docker_run(
        "exec", "-e", "REDISCLI_AUTH=", redis, "redis-cli", "ping", check=False
    )
    assert UNAUTHENTICATED.search(anonymous.stdout + anonymous.stderr), anonymous
    network = f"{running.project}_default"
    client = running.docker_run(
        "run", "--rm", "--network", network, "-e", "AEQ_BROKER_URL=redis://redis:6379/0",
        "aeq-worker:latest", "aeq", "jobs", check=False,
    )  # fmt: skip
    assert client.returncode != 0
    assert "Traceback" not in client.stderr
    last_line = client.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error:") and "refused no password" in last_line, client.stderr


def test_job_from_compose_run_into_a_bind_mount_owned_by_the_host_user(
    running: Stack, digits: Digits, reference: np.ndarray, record
) -> None:  # type: ignore[no-untyped-def]
    work = digits.folder / "work"
    work.mkdir()
    (work / "noisy.npy").write_bytes((digits.folder / "noisy.npy").read_bytes())
    uid, gid = (int(part) for part in HOST_USER.split(":"))
    os.chown(work, uid, gid)
    started = time.monotonic()
    running.run(
        "run", "--rm", "--user", HOST_USER, "-v", f"{work}:/work", "-w", "/work",
        "worker", "aeq", "denoise", "noisy.npy", "-o", "clean.npy",
    )  # fmt: skip
    seconds = time.monotonic() - started
    output = work / "clean.npy"
    assert (output.stat().st_uid, output.stat().st_gid) == (uid, gid)
    quality = assert_denoised(np.load(output), digits, reference)
    record(
        "compose run job", items=JOB_IMAGES, seconds=f"{seconds:.1f}", owner=HOST_USER, **quality
    )


def test_flower_answers_on_loopback_only_and_is_the_only_published_port(
    running: Stack, record
) -> None:  # type: ignore[no-untyped-def]
    running.run("--profile", "monitor", "up", "-d", "flower")
    port = running.settings["FLOWER_PORT"]
    started = time.monotonic()
    health = _http_get(f"http://127.0.0.1:{port}/healthcheck", timeout_s=90)
    assert health.strip() == "OK"
    metrics = _http_get(f"http://127.0.0.1:{port}/metrics", timeout_s=30)
    assert "flower_" in metrics
    published = running.published_ports()
    assert published.pop("flower") == [f"127.0.0.1:{port}"]
    assert all(not ports for ports in published.values()), published
    assert set(published) >= {"redis", "worker"}
    record("flower", answered_seconds=f"{time.monotonic() - started:.1f}", published=port)


def _http_get(url: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode())
        except OSError as error:
            if time.monotonic() > deadline:
                raise AssertionError(f"{url}: {error}") from error
            time.sleep(1)


def test_gpu_image_refuses_to_serve_without_a_gpu(running: Stack, record) -> None:  # type: ignore[no-untyped-def]
    password = running.settings["REDIS_PASSWORD"]
    broker = f"AEQ_BROKER_URL=redis://:{password}@redis:6379/0"
    network = f"{running.project}_default"
    image = "aeq-worker-gpu:latest"
    # As the worker-gpu service runs it, less the GPU reservation: the models volume, read-only.
    models = f"{running.project}_models:/models:ro"
    worker = running.docker_run(
        "run", "--rm", "--network", network, "-e", broker, "-v", models, image,
        "aeq", "worker", "--require-gpu", check=False,
    )  # fmt: skip
    assert worker.returncode != 0
    lines = worker.stderr.strip().splitlines()
    assert "Traceback" not in worker.stderr and len(lines) == 1, worker.stderr
    assert re.search(r"GPU|CUDA", lines[0]), lines
    default = running.docker_run(
        "run", "--rm", "--network", network, "-e", broker, image, check=False
    )
    assert default.returncode == 1 and "no GPU visible" in default.stderr, default
    providers = running.docker_run(
        "run", "--rm", image, "python", "-c",
        "import onnxruntime; print(onnxruntime.get_available_providers())",
    ).stdout  # fmt: skip
    assert "CUDAExecutionProvider" in providers
    record("gpu image without a GPU", exit=worker.returncode, line=lines[0][:100])


# --- the host's CLI through docker/expose-redis.yml, and the faults ------------------------------


@pytest.fixture(scope="module")
def exposed(running: Stack) -> dict[str, str]:
    """The stack with Redis published on the host's loopback; the host CLI's environment."""
    running.files = (COMPOSE_FILE, EXPOSE_REDIS_FILE)
    running.run("up", "-d", "--scale", f"worker={WORKERS}")
    running.wait_healthy({"redis": 1, "worker": WORKERS}, 180)
    settings = running.settings
    port = settings["REDIS_HOST_PORT"]
    assert running.published_ports()["redis"] == [f"127.0.0.1:{port}"]
    return {"AEQ_BROKER_URL": f"redis://:{settings['REDIS_PASSWORD']}@127.0.0.1:{port}/0"}


def test_job_from_the_host_cli_through_the_exposed_redis(
    exposed: dict[str, str], digits: Digits, host_repository: Path, reference: np.ndarray, record
) -> None:  # type: ignore[no-untyped-def]
    env = host_environment(AEQ_MODEL_REPOSITORY=str(host_repository), **exposed)
    output = digits.folder / "host-clean.npy"
    started = time.monotonic()
    host_aeq("denoise", str(digits.folder / "noisy.npy"), "-o", str(output), env=env)
    seconds = time.monotonic() - started
    quality = assert_denoised(np.load(output), digits, reference)
    record("host CLI job", items=JOB_IMAGES, seconds=f"{seconds:.1f}", **quality)


@dataclass
class FaultRun:
    """A 20,000-image job from the host, a fault acted out while it runs, and what came back."""

    seconds_to_fault: float
    seconds_after_fault: float
    status: dict[str, Any]
    duplicates: int

    @property
    def items_back(self) -> int:
        """Items the job reports done."""
        return int(self.status["items"]["done"])


@pytest.fixture(scope="module")
def fault_inputs(digits: Digits, reference: np.ndarray) -> tuple[Path, np.ndarray]:
    """20,000 noisy digits (the 5,000 four times over) and their in-process denoised reference."""
    repeats = (FAULT_IMAGES // JOB_IMAGES, 1, 1)
    np.save(digits.folder / "many.npy", np.tile(digits.noisy, repeats))
    return digits.folder / "many.npy", np.tile(reference, repeats)


def run_with_fault(
    stack: Stack, env: dict[str, str], inputs: Path, fault, recover=None
) -> FaultRun:  # type: ignore[no-untyped-def]
    """Submit ``inputs`` from the host; once chunks are done, ``fault()``; then ``recover()``.

    The job must end within JOB_TIMEOUT_S (never a hang) with every item back.
    """
    output = inputs.with_name(inputs.stem + "-out.npy")
    output.unlink(missing_ok=True)
    argv = [str(VENV_BIN / "aeq"), "denoise", str(inputs), "-o", str(output)]
    argv += ["--chunk-size", str(FAULT_CHUNK_SIZE)]
    started = time.monotonic()
    client = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    job = _wait_for_progress(env, client)
    fault_at = time.monotonic()
    fault()
    if recover:
        recover()
    try:
        _, stderr = client.communicate(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        client.kill()
        raise AssertionError(f"the client hung for {JOB_TIMEOUT_S} s after the fault") from None
    ended = time.monotonic()
    assert client.returncode == 0, stderr[-3000:]
    status = json.loads(host_aeq("status", job, "--json", env=env))
    logs = stack.run("logs", "--no-color", "worker").stdout
    duplicates = len(re.findall(rf"job {job} chunk \d+ already finished", logs))
    return FaultRun(
        fault_at - started, ended - fault_at, {**status, "output": str(output)}, duplicates
    )


def _wait_for_progress(env: dict[str, str], client: subprocess.Popen[str]) -> str:
    """The id of the newest job once some of its chunks are done, while the client still runs."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        assert client.poll() is None, "the job ended before the fault: make it bigger"
        jobs = json.loads(host_aeq("jobs", "--json", "--limit", "1", env=env) or "[]")
        jobs = jobs.get("jobs", jobs) if isinstance(jobs, dict) else jobs
        if jobs and jobs[0]["chunks"]["done"] >= 5 and jobs[0]["state"] != "done":
            return str(jobs[0]["job"])
        time.sleep(0.2)
    raise AssertionError("the job made no progress")


def assert_every_item_once(run: FaultRun, reference: np.ndarray) -> None:
    """The job completed with every chunk done once and every item equal to the reference."""
    status = run.status
    chunks, items = status["chunks"], status["items"]
    assert status["state"] == "done", status
    assert chunks["done"] == chunks["total"] and not chunks["failed"], chunks
    assert items["done"] == items["total"] == FAULT_IMAGES, items
    output = np.load(str(status["output"]))
    assert output.shape == reference.shape
    assert np.abs(output.astype(np.int16) - reference.astype(np.int16)).max() <= 1


def test_a_crashed_worker_process_is_restarted_and_loses_nothing(
    exposed: dict[str, str], running: Stack, fault_inputs, host_repository: Path, record
) -> None:  # type: ignore[no-untyped-def]
    """A crash, not a stop: the process inside dies, so the restart policy applies."""
    inputs, reference = fault_inputs
    env = host_environment(AEQ_MODEL_REPOSITORY=str(host_repository), **exposed)
    victim = running.containers("worker")[0]
    restarts = running.inspect(victim)["RestartCount"]

    def crash() -> None:
        # PID 1 is docker-init (init: true); its child is `aeq worker`. Kill that from the host.
        init_pid = running.inspect(victim)["State"]["Pid"]
        children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
        os.kill(int(children[0]), 9)

    run = run_with_fault(running, env, inputs, crash)
    assert_every_item_once(run, reference)
    state = running.inspect(victim)
    assert state["RestartCount"] == restarts + 1 and state["State"]["Running"], state["State"]
    record(
        "worker process SIGKILL (crash) mid-job", items_back=run.items_back,
        duplicates_ignored=run.duplicates, completed_after_crash_s=f"{run.seconds_after_fault:.1f}",
        restarts=state["RestartCount"] - restarts,
    )  # fmt: skip


def test_a_worker_killed_mid_job_loses_nothing(
    exposed: dict[str, str], running: Stack, fault_inputs, host_repository: Path, record
) -> None:  # type: ignore[no-untyped-def]
    inputs, reference = fault_inputs
    env = host_environment(AEQ_MODEL_REPOSITORY=str(host_repository), **exposed)
    victim = running.containers("worker")[0]
    run = run_with_fault(
        running, env, inputs, lambda: running.docker_run("kill", "-s", "KILL", victim)
    )
    assert_every_item_once(run, reference)
    state = running.inspect(victim)["State"]
    assert state["Status"] == "exited", "docker kill is a manual stop: no restart"
    record(
        "worker docker kill -s KILL mid-job", items_back=run.items_back,
        duplicates_ignored=run.duplicates, killed_after_s=f"{run.seconds_to_fault:.1f}",
        completed_after_kill_s=f"{run.seconds_after_fault:.1f}",
    )  # fmt: skip
    # The next scenarios run with the one worker left; `down` and `up` bring back both.


def test_redis_killed_and_started_again_mid_job(
    exposed: dict[str, str], running: Stack, fault_inputs, host_repository: Path, record
) -> None:  # type: ignore[no-untyped-def]
    inputs, reference = fault_inputs
    env = host_environment(AEQ_MODEL_REPOSITORY=str(host_repository), **exposed)
    (redis,) = running.containers("redis")
    timeline: dict[str, float] = {}

    def kill() -> None:
        timeline["killed"] = time.monotonic()
        running.docker_run("kill", "-s", "KILL", redis)

    def start_again() -> None:
        time.sleep(REDIS_OUTAGE_S)
        running.docker_run("start", redis)
        timeline["started"] = time.monotonic()

    run = run_with_fault(running, env, inputs, kill, start_again)
    assert_every_item_once(run, reference)
    outage_s = timeline["started"] - timeline["killed"]
    record(
        "redis docker kill -s KILL + start mid-job", items_back=run.items_back,
        duplicates_ignored=run.duplicates, outage_s=f"{outage_s:.1f}",
        completed_after_restart_s=f"{time.monotonic() - timeline['started']:.1f}",
    )  # fmt: skip


def test_down_and_up_keep_the_models_and_uncollected_results(
    exposed: dict[str, str],
    running: Stack,
    digits: Digits,
    host_repository: Path,
    reference: np.ndarray,
    record,
) -> None:  # type: ignore[no-untyped-def]
    env = host_environment(AEQ_MODEL_REPOSITORY=str(host_repository), **exposed)
    job = host_aeq("denoise", str(digits.folder / "noisy.npy"), "--no-wait", env=env).strip()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while json.loads(host_aeq("status", job, "--json", env=env))["state"] != "done":
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.5)
    started = time.monotonic()
    # Every profile: a plain `down` leaves Flower (profile monitor) running on the network.
    running.run("--profile", "monitor", "down")
    running.run("up", "-d", "--scale", f"worker={WORKERS}")
    running.wait_healthy({"redis": 1, "worker": WORKERS}, 180)
    seconds = time.monotonic() - started
    listing = running.run("run", "--rm", "worker", "aeq", "models", "--json").stdout
    assert {model["model"] for model in json.loads(listing)} == MODEL_NAMES
    output = digits.folder / "after-restart.npy"
    host_aeq("results", job, "-o", str(output), env=env)
    assert_denoised(np.load(output), digits, reference)
    record("down + up", models=len(MODEL_NAMES), results_back=JOB_IMAGES, seconds=f"{seconds:.0f}")
