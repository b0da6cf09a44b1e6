"""``aeq worker``: start the Celery worker with defaults that suit a CPU host and a GPU host.

- By default a CPU host runs one process per core, each with one ONNX Runtime thread (prefork):
  measured faster than one process with every core as a thread in 23 of 25 comparisons
  (docs/BENCHMARKS.md), because single-thread sessions never wait at an intra-op barrier for a
  thread another process has descheduled, and one chunk's Redis I/O overlaps another's inference.
- Where a GPU is used (CUDA asked for and a driver visible, or ``--require-gpu``) the default is
  one process: Celery's solo pool, the task runs in it, no IPC per chunk. One worker per GPU
  (``CUDA_VISIBLE_DEVICES`` picks it).
- ``--concurrency`` / ``AEQ_WORKER_CONCURRENCY`` override both; ONNX Runtime's threads are split so
  the N processes share the cores instead of oversubscribing them.
- Workers run at niceness 10 (``--nice``, ``AEQ_WORKER_NICE``): batch work that leaves the CPU to
  interactive commands on the same host and takes all of it when nothing else wants it.
- ``--require-gpu`` proves CUDA is the provider really in use (a real session, in a subprocess,
  so nothing touches CUDA before the fork) and refuses to start otherwise.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, replace

from aeq.core.errors import ProviderError, RepositoryError, UsageError
from aeq.core.settings import Settings
from aeq.queue.store import connect, redact
from aeq.repository import ModelRepository
from worker.inference import CUDA_PROVIDER, cpu_cores, gpu_expected, threads_per_process

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class LaunchOptions:
    """``aeq worker`` options (``concurrency`` None: ``default_concurrency``)."""

    concurrency: int | None = None
    threads: int | None = None
    require_gpu: bool = False
    loglevel: str = "info"
    hostname: str | None = None


def default_concurrency(settings: Settings, require_gpu: bool) -> int:
    """Worker processes when none are asked for: one per GPU worker, else one per core."""
    if require_gpu or gpu_expected(settings.providers):
        return 1
    return cpu_cores()


def resolved(settings: Settings, options: LaunchOptions) -> LaunchOptions:
    """``options`` with the concurrency decided."""
    if options.concurrency is not None:
        return options
    return replace(options, concurrency=default_concurrency(settings, options.require_gpu))


def celery_argv(options: LaunchOptions) -> list[str]:
    """The ``celery worker`` arguments for ``options`` (concurrency resolved)."""
    pool = "solo" if options.concurrency == 1 else "prefork"
    hostname = options.hostname or f"aeq@{socket.gethostname()}"
    return [
        "worker",
        f"--pool={pool}",
        f"--concurrency={options.concurrency}",
        f"--loglevel={options.loglevel.upper()}",
        f"--hostname={hostname}",
        # No gossip/mingle chatter: workers here share nothing but the queue. Heartbeats stay on:
        # they give the worker the event dispatcher that Flower's "enable events" needs.
        "--without-gossip",
        "--without-mingle",
    ]


def check_options(settings: Settings, options: LaunchOptions) -> None:
    """Refuse options that cannot work, before anything starts."""
    if not settings.broker_url:
        raise UsageError(
            "aeq worker needs a broker: set AEQ_BROKER_URL (e.g. redis://localhost:6379/0)"
        )
    if options.concurrency is not None and options.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {options.concurrency}")
    if options.threads is not None and options.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {options.threads}")
    if options.loglevel.lower() not in LOG_LEVELS:
        raise UsageError(f"--loglevel must be one of {', '.join(LOG_LEVELS)}")


def require_cuda(settings: Settings) -> None:
    """Raise ``ProviderError`` unless a real session here runs on CUDA."""
    from worker.provider_probe import probe

    if CUDA_PROVIDER not in settings.providers:
        raise ProviderError(
            f"--require-gpu, but AEQ_PROVIDERS ({','.join(settings.providers)}) does not ask for "
            "CUDA"
        )
    in_use = probe(settings.providers)
    if not in_use or in_use[0] != CUDA_PROVIDER:
        raise ProviderError(
            f"--require-gpu: ONNX Runtime runs on {in_use[0] if in_use else 'nothing'} here, not "
            "CUDA (no GPU visible, or the CUDA/cuDNN libraries onnxruntime-gpu needs cannot load)"
        )


def published_repository(settings: Settings) -> tuple[Settings, list[str]]:
    """``settings`` with the model repository made absolute, and the models it publishes.

    A worker started in the wrong folder would otherwise read a relative path, say ``ready``, and
    fail every chunk with "no models published".

    Raises:
        RepositoryError: the repository publishes no model.
    """
    root = settings.model_repository.expanduser().resolve()
    models = ModelRepository(root).models()
    if not models:
        where = "does not exist" if not root.is_dir() else "publishes no models"
        raise RepositoryError(
            f"aeq worker: the model repository {root} {where}; point --repository or "
            "AEQ_MODEL_REPOSITORY at one ('aeq train all' and 'aeq export all' make one)"
        )
    return settings.with_overrides(model_repository=root), models


def become_nice(niceness: int) -> int:
    """Lower this process' priority to ``niceness`` (never raise it: that needs privileges);
    the pool's processes inherit it. Returns the niceness now in force."""
    current = os.nice(0)
    return os.nice(niceness - current) if niceness > current else current


def start(settings: Settings, options: LaunchOptions) -> None:
    """Check everything that can be checked, then run the worker until it is stopped."""
    check_options(settings, options)
    settings, models = published_repository(settings)
    options = resolved(settings, options)
    concurrency = options.concurrency or 1
    connect(settings.broker_url or "")
    if settings.results_url != settings.broker_url:
        connect(settings.results_url or "")
    settings = settings.with_overrides(
        threads_per_process=options.threads, worker_concurrency=concurrency
    )
    if options.require_gpu:
        require_cuda(settings)
    from worker import app as app_module

    niceness = become_nice(settings.worker_nice)
    app_module.configure(settings, app_module.WorkerOptions(concurrency, options.require_gpu))
    # Celery sets up logging only once it starts; this line goes out before, on stderr.
    print(
        f"aeq worker: broker {redact(settings.broker_url or '')}, {concurrency} "
        f"process(es) x {threads_per_process(settings, concurrency)} ONNX Runtime "
        f"thread(s), niceness {niceness}, model repository {settings.model_repository} "
        f"({', '.join(models)})",
        file=sys.stderr,
        flush=True,
    )
    app_module.app.worker_main(celery_argv(options))
