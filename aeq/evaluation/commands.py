"""``aeq evaluate``: the quality report on the published models (see ``aeq.evaluation.pipeline``).

scikit-learn, scikit-image, matplotlib and ONNX Runtime are imported inside the command, so
``aeq --help`` stays quick and the service install needs none of the ``eval`` extra.
"""

from __future__ import annotations

import shlex
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from aeq.core.catalog import MODELS
from aeq.core.errors import UsageError
from aeq.core.settings import load_settings

# Reports land in reports/<YYYY-MM-DD>/ unless --out says otherwise.
DEFAULT_REPORTS_DIR = Path("reports")


def register(app: typer.Typer) -> None:
    """Add ``aeq evaluate`` to the aeq app."""
    app.command("evaluate")(evaluate)


def evaluate(
    model: Annotated[
        str, typer.Argument(help=f"A model ({', '.join(MODELS)}) or 'all' (every published one).")
    ] = "all",
    repository: Annotated[
        Path | None,
        typer.Option(
            "--repository",
            help="Model repository to read (default: AEQ_MODEL_REPOSITORY or ./model_repository).",
            show_default=False,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="MNIST IDX folder or mnist.npz (default: AEQ_DATA_DIR, then the keras cache).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder (default: reports/<today>).", show_default=False),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Use 1,000 training and 1,000 test images (smoke run).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the noise, PCA and t-SNE.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the report folder if it exists.")
    ] = False,
) -> None:
    """Measure the published models against PCA and classical filters; write report.md,
    metrics.json and figures."""
    from aeq.evaluation.pipeline import Options
    from aeq.evaluation.pipeline import evaluate as run_evaluation
    from aeq.repository import ModelRepository

    if model != "all" and model not in MODELS:
        raise UsageError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}, all")
    settings = load_settings()
    root = repository if repository is not None else settings.model_repository
    target = out if out is not None else DEFAULT_REPORTS_DIR / date.today().isoformat()
    options = Options(
        quick=quick, seed=seed, overwrite=overwrite, command=shlex.join(["aeq", *sys.argv[1:]])
    )
    written = run_evaluation(model, ModelRepository(root), data, settings, target, options)
    typer.echo(f"report written to {written / 'report.md'}")
