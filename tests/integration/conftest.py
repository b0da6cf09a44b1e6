"""Integration fixtures: real models, a real redis-server, real ``aeq worker`` processes.

- ``model_repository``: the real pipeline, quickly: ``aeq train all`` (three short epochs on
  2,000 images) then ``aeq export all`` into a test repository. Built once per session and cached in
  pytest's cache folder under a hash of the training/export sources and the data, so a re-run
  with unchanged code reuses it (a clean checkout, as in CI, builds it).
  ``AEQ_TEST_MODEL_REPOSITORY`` names a ready repository instead.
- ``service``: the session's redis-server, flushed, plus a way to start and stop workers
  (``aeq.private_service``, as ``aeq bench`` does) and run ``aeq`` as a user would, with
  ``AEQ_BROKER_URL`` pointing at that server.
- Data: MNIST test images from ``AEQ_DATA_DIR`` (``make test`` sets it where ../shared/data/mnist
  exists) else generated digit-like images, written as a keras-style ``mnist.npz`` for training.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from aeq.core.idx import read_idx
from aeq.core.settings import load_settings
from aeq.private_service import WorkerProcess, aeq_executable, service_env, start_worker

ROOT = Path(__file__).resolve().parents[2]
AEQ = aeq_executable()
TRAIN_LIMIT = 2000
# Three epochs of small batches on 2,000 images: enough steps that no model collapses (one
# epoch left the dense ones no better than the mean image), about a minute on 2 cores.
TRAIN_EPOCHS = 3
TRAIN_BATCH_SIZE = 32
# What the integration tests run: denoise, reconstruct (conv), encode/decode (multilayer).
REQUIRED_MODELS = ("denoising", "conv", "multilayer")
COMMAND_TIMEOUT_S = 300.0
_CACHE_KEY_SOURCES = ("aeq/core", "aeq/repository.py", "training", "export")
# Set to a repository 'aeq export' wrote to skip building one (for iterating on worker code).
PREBUILT_REPOSITORY_VARIABLE = "AEQ_TEST_MODEL_REPOSITORY"


# -- data ----------------------------------------------------------------------------------------


def _generated_digits(count: int, seed: int) -> np.ndarray:
    """Digit-like uint8 images: a few thick bright strokes on black."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, 28, 28), np.float32)
    for _ in range(3):
        rows = rng.integers(6, 22, (count, 2))
        cols = rng.integers(6, 22, (count, 2))
        for t in np.linspace(0, 1, 24):
            r = np.rint(rows[:, 0] + t * (rows[:, 1] - rows[:, 0])).astype(int)
            c = np.rint(cols[:, 0] + t * (cols[:, 1] - cols[:, 0])).astype(int)
            for dr in (-1, 0, 1):
                images[np.arange(count), np.clip(r + dr, 0, 27), c] = 1.0
    return (images * 255).astype(np.uint8)


@dataclass(frozen=True)
class Mnist:
    """Test images (uint8, N x 28 x 28) and where training data comes from."""

    test_images: np.ndarray
    data_arg: Path  # what ``aeq train --data`` / ``aeq export --data`` gets
    source: str


@pytest.fixture(scope="session")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> Mnist:
    data_dir = load_settings().data_dir
    if data_dir is not None:
        test_file = next(iter(sorted(data_dir.glob("t10k-images*"))), None)
        if test_file is not None:
            return Mnist(read_idx(test_file), data_dir, f"MNIST {data_dir}")
    folder = tmp_path_factory.mktemp("generated-mnist")
    train, test = _generated_digits(TRAIN_LIMIT, 1), _generated_digits(2000, 2)
    labels = np.zeros(len(train), np.uint8)
    np.savez(
        folder / "mnist.npz", x_train=train, y_train=labels, x_test=test, y_test=labels[: len(test)]
    )
    return Mnist(test, folder / "mnist.npz", "generated digits")


# -- the model repository ------------------------------------------------------------------------


def _sources_digest(mnist: Mnist) -> str:
    digest = hashlib.sha256(mnist.source.encode())
    for package in _CACHE_KEY_SOURCES:
        source = ROOT / package
        for path in sorted(source.rglob("*.py")) if source.is_dir() else [source]:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _run_pipeline(target: Path, mnist: Mnist) -> None:
    trained, staging = (
        target.parent / f"{target.name}.trained",
        target.parent / f"{target.name}.tmp",
    )
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(trained, ignore_errors=True)
    data = ["--data", str(mnist.data_arg)]
    train = [AEQ, "train", "all", "--epochs", str(TRAIN_EPOCHS), "--limit", str(TRAIN_LIMIT)]
    train += ["--batch-size", str(TRAIN_BATCH_SIZE), "--out", str(trained), *data]
    export = [AEQ, "export", "all", "--from", str(trained), "--repository", str(staging), *data]
    log = []
    for command in (train, export):
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, cwd=ROOT
        )
        # A model that collapsed in this short training is refused by export; that fails only
        # the tests that need it (below), not the whole suite.
        log.append(f"$ {' '.join(command)} -> {result.returncode}\n{result.stderr[-3000:]}")
    missing = [name for name in REQUIRED_MODELS if not (staging / name / "1").is_dir()]
    if missing:
        raise RuntimeError(f"the pipeline did not publish {', '.join(missing)}:\n" + "\n".join(log))
    staging.rename(target)
    shutil.rmtree(trained, ignore_errors=True)


@pytest.fixture(scope="session")
def model_repository(request: pytest.FixtureRequest, mnist: Mnist) -> Path:
    """A repository with every model, made by ``aeq train all`` + ``aeq export all``."""
    prebuilt = os.environ.get(PREBUILT_REPOSITORY_VARIABLE)
    if prebuilt:
        return Path(prebuilt)
    cache = Path(request.config.cache.mkdir("aeq-model-repository"))
    target = cache / _sources_digest(mnist)
    if not target.is_dir():
        _run_pipeline(target, mnist)
        for old in cache.iterdir():
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
    return target


# -- workers and the CLI -------------------------------------------------------------------------


@dataclass
class Service:
    """A private Redis plus helpers to run workers and ``aeq`` commands against it."""

    url: str
    repository: Path
    folder: Path
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        """Start ``aeq worker --hostname NAME@test ARGS`` and wait until it is ready."""
        worker = start_worker(f"{name}@test", args, self.folder, {**self.env, **(env or {})}, ROOT)
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def aeq(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = COMMAND_TIMEOUT_S,
        cwd: Path = ROOT,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``aeq ARGS`` as a user would; the result has returncode, stdout, stderr."""
        return subprocess.run(
            [AEQ, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
            cwd=cwd,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [AEQ, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=ROOT,
            preexec_fn=_as_in_the_foreground,
        )


def _as_in_the_foreground() -> None:
    """Ctrl-C reaches the command, as in a user's terminal: a test run started in the background
    of a shell without job control inherits SIGINT ignored, and so would the command."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def base_env(repository: Path) -> dict[str, str]:
    """The environment of a user's shell with aeq's variables cleared (one thread per worker)."""
    return {**service_env(repository), "AEQ_THREADS": "1"}


@pytest.fixture
def service(redis_server, model_repository: Path, tmp_path: Path) -> Iterator[Service]:
    yield from running_service(redis_server, model_repository, tmp_path)


def running_service(redis_server, repository: Path, tmp_path: Path) -> Iterator[Service]:
    """A ``Service`` on the session's Redis (emptied before and after) serving ``repository``;
    its workers are stopped at the end."""
    client = redis_server.client()
    client.flushdb()
    env = {**base_env(repository), "AEQ_BROKER_URL": redis_server.url}
    service = Service(redis_server.url, repository, tmp_path, env)
    yield service
    for worker in service.workers:
        worker.stop()
    client.flushdb()
    client.close()
