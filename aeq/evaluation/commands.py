"""``aeq evaluate``: the quality report on the published models (see ``aeq.evaluation.pipeline``).

scikit-learn, scikit-image, matplotlib and ONNX Runtime are imported inside the command, so
``aeq --help`` stays quick and the service install needs none of the ``eval`` extra. A full run
takes minutes: each model and stage is announced on stderr as it goes.
"""

from __future__ import annotations

import json
import shlex
import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from aeq.core.catalog import MODELS
from aeq.core.errors import UsageError
from aeq.core.options import JsonOption, RepositoryOption
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
    repository: RepositoryOption = None,
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
    as_json: JsonOption = False,
) -> None:
    """Measure the published models against PCA and classical filters; write report.md,
    metrics.json and figures."""
    from aeq.evaluation.pipeline import Options
    from aeq.evaluation.pipeline import evaluate as run_evaluation
    from aeq.evaluation.report import METRICS_FILE, REPORT_FILE
    from aeq.repository import ModelRepository

    if model != "all" and model not in MODELS:
        raise UsageError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}, all")
    settings = load_settings().with_overrides(model_repository=repository)
    target = out if out is not None else DEFAULT_REPORTS_DIR / date.today().isoformat()
    options = Options(
        quick=quick,
        seed=seed,
        overwrite=overwrite,
        command=shlex.join(["aeq", *sys.argv[1:]]),
        progress=_progress,
    )
    published = ModelRepository(settings.model_repository)
    written = run_evaluation(model, published, data, settings, target, options)
    report_path = written / REPORT_FILE
    if as_json:
        metrics = json.loads((written / METRICS_FILE).read_text())
        print(json.dumps({"report": str(report_path), "metrics": metrics}, indent=2))
    else:
        typer.echo(f"report written to {report_path}")


def _progress(line: str) -> None:
    typer.echo(f"evaluate: {line}", err=True)
