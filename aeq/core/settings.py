"""aeq's settings: read once from the environment into one typed, frozen object.

No other module reads ``os.environ``; they take a ``Settings`` (or call ``load_settings()``).
Connections are URLs. Durations and sizes carry their unit in the name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aeq.core.errors import UsageError

DEFAULT_MODEL_REPOSITORY = Path("model_repository")
DEFAULT_TRAINING_DIR = Path("trained")
DEFAULT_RESULT_TTL_S = 24 * 60 * 60
# A chunk runs for well under a second on a 2-core CPU at the default chunk size; an unacknowledged
# message is handed to another worker after this long, so it bounds how late a killed worker's chunk
# comes back, and must stay far above the slowest chunk's runtime (docs/SERVICE.md).
DEFAULT_VISIBILITY_TIMEOUT_S = 60
DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
# How long a client following a job rides out a lost Redis (a restart, a failover) before it stops
# and says how to resume: long enough for a Redis container to restart and reload its data.
DEFAULT_RECONNECT_WINDOW_S = 60
# Workers are batch work: they yield the CPU to interactive commands on the same host (a job
# command starting, a shell). On a 2-core host with one worker busy on a 50,000-image job, a
# 10-image job took 1.0 s at niceness 0 and 0.71 s at 10 (0.52 s alone); a host that runs only
# workers loses nothing, since idle CPU goes to them whatever their niceness.
DEFAULT_WORKER_NICE = 10
MAX_NICE = 19

_PROVIDER_ALIASES = {
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class Settings:
    """Everything aeq reads from its environment.

    Attributes:
        broker_url: Celery broker (``AEQ_BROKER_URL``); ``None`` means local, in-process mode.
        result_backend_url: where job results live (``AEQ_RESULT_BACKEND``, default the broker).
        model_repository: the model repository folder (``AEQ_MODEL_REPOSITORY``).
        training_dir: where ``aeq train`` writes and ``aeq export`` reads (``AEQ_TRAINING_DIR``).
        data_dir: an MNIST folder or ``mnist.npz`` (``AEQ_DATA_DIR``).
        keras_home: Keras' own folder (``KERAS_HOME``; ``None`` = ``~/.keras``), where its MNIST
            download is cached.
        providers: ONNX Runtime execution providers in order of preference (``AEQ_PROVIDERS``).
        result_ttl_s: how long job data stays in Redis (``AEQ_RESULT_TTL_S``).
        visibility_timeout_s: Redis visibility timeout for unacknowledged tasks
            (``AEQ_VISIBILITY_TIMEOUT_S``).
        worker_concurrency: worker processes per ``aeq worker`` (``AEQ_WORKER_CONCURRENCY``;
            ``None`` = one per core on a CPU host, one where a GPU is used).
        threads_per_process: ONNX Runtime intra-op threads per worker process (``AEQ_THREADS``;
            ``None`` = the machine's cores divided by the concurrency).
        reconnect_window_s: how long a client following a job waits for a lost Redis to come
            back (``AEQ_RECONNECT_WINDOW_S``).
        window_chunks: how many chunks a waiting client keeps queued and unfinished at once
            (``AEQ_WINDOW_CHUNKS``; ``None`` = two per live worker process, at least four).
        worker_nice: the niceness ``aeq worker`` runs at, 0-19 (``AEQ_WORKER_NICE``).
    """

    broker_url: str | None = None
    result_backend_url: str | None = None
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    training_dir: Path = DEFAULT_TRAINING_DIR
    data_dir: Path | None = None
    keras_home: Path | None = None
    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    result_ttl_s: int = DEFAULT_RESULT_TTL_S
    visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S
    worker_concurrency: int | None = None
    threads_per_process: int | None = None
    reconnect_window_s: int = DEFAULT_RECONNECT_WINDOW_S
    window_chunks: int | None = None
    worker_nice: int = DEFAULT_WORKER_NICE

    @property
    def results_url(self) -> str | None:
        """The Redis URL job data is stored in: the result backend, else the broker."""
        return self.result_backend_url or self.broker_url

    def with_overrides(self, **changes: Any) -> Settings:
        """Return a copy with the given fields replaced, skipping ``None`` values."""
        return replace(self, **{key: value for key, value in changes.items() if value is not None})


def parse_providers(text: str) -> tuple[str, ...]:
    """Turn ``"cuda,cpu"`` or full provider names into ONNX Runtime provider names."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UsageError("AEQ_PROVIDERS is empty; give e.g. 'cuda,cpu' or 'cpu'")
    return tuple(_PROVIDER_ALIASES.get(name.lower(), name) for name in names)


def _positive_int(environ: Mapping[str, str], key: str, default: int) -> int:
    raw = environ.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{key} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise UsageError(f"{key} must be positive, got {value}")
    return value


def _niceness(environ: Mapping[str, str]) -> int:
    raw = environ.get("AEQ_WORKER_NICE") or str(DEFAULT_WORKER_NICE)
    if not raw.isdigit() or int(raw) > MAX_NICE:
        raise UsageError(f"AEQ_WORKER_NICE must be a whole number 0-{MAX_NICE}, got {raw!r}")
    return int(raw)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read aeq's settings from ``environ`` (default: the process environment)."""
    env = os.environ if environ is None else environ
    threads = env.get("AEQ_THREADS")
    concurrency = env.get("AEQ_WORKER_CONCURRENCY")
    window = env.get("AEQ_WINDOW_CHUNKS")
    return Settings(
        broker_url=env.get("AEQ_BROKER_URL") or None,
        result_backend_url=env.get("AEQ_RESULT_BACKEND") or None,
        model_repository=Path(env.get("AEQ_MODEL_REPOSITORY") or DEFAULT_MODEL_REPOSITORY),
        training_dir=Path(env.get("AEQ_TRAINING_DIR") or DEFAULT_TRAINING_DIR),
        data_dir=Path(env["AEQ_DATA_DIR"]) if env.get("AEQ_DATA_DIR") else None,
        keras_home=Path(env["KERAS_HOME"]) if env.get("KERAS_HOME") else None,
        providers=parse_providers(env.get("AEQ_PROVIDERS") or ",".join(DEFAULT_PROVIDERS)),
        result_ttl_s=_positive_int(env, "AEQ_RESULT_TTL_S", DEFAULT_RESULT_TTL_S),
        visibility_timeout_s=_positive_int(
            env, "AEQ_VISIBILITY_TIMEOUT_S", DEFAULT_VISIBILITY_TIMEOUT_S
        ),
        worker_concurrency=(
            _positive_int(env, "AEQ_WORKER_CONCURRENCY", 1) if concurrency else None
        ),
        threads_per_process=_positive_int(env, "AEQ_THREADS", 1) if threads else None,
        reconnect_window_s=_positive_int(env, "AEQ_RECONNECT_WINDOW_S", DEFAULT_RECONNECT_WINDOW_S),
        window_chunks=_positive_int(env, "AEQ_WINDOW_CHUNKS", 1) if window else None,
        worker_nice=_niceness(env),
    )
