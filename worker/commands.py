"""``aeq worker``: start a Celery worker that serves aeq jobs on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from aeq.core.options import RepositoryOption
from aeq.core.settings import load_settings


def register(app: typer.Typer) -> None:
    """Add ``aeq worker`` to the aeq app."""
    app.command("worker")(worker)


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (1: solo pool; default AEQ_WORKER_CONCURRENCY, else one per "
            "core on a CPU host, 1 where a GPU is used).",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="ONNX Runtime threads per process (default: cores / processes)."),
    ] = None,
    require_gpu: Annotated[
        bool,
        typer.Option(
            "--require-gpu", help="Refuse to start unless CUDA is the provider really in use."
        ),
    ] = False,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    hostname: Annotated[str | None, typer.Option(help="Worker name (default aeq@HOST).")] = None,
    nice: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=19,
            help="Niceness, 0-19 (default AEQ_WORKER_NICE, else 10: jobs yield the CPU to "
            "interactive commands on this host).",
            show_default=False,
        ),
    ] = None,
    repository: RepositoryOption = None,
) -> None:
    """Run a Celery worker that serves aeq jobs (needs AEQ_BROKER_URL)."""
    from worker.launcher import LaunchOptions, start

    settings = load_settings().with_overrides(model_repository=repository, worker_nice=nice)
    options = LaunchOptions(
        concurrency=concurrency or settings.worker_concurrency,
        threads=threads or settings.threads_per_process,
        require_gpu=require_gpu,
        loglevel=loglevel,
        hostname=hostname,
    )
    start(settings, options)
