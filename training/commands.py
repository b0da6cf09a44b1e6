"""``aeq train MODEL|all``: train the article's autoencoders and write them for ``aeq export``.

The data is found (and its absence reported) before TensorFlow is imported, so a missing MNIST
costs no TensorFlow start-up; TensorFlow is imported inside the command, never at module import.
A model that collapses is still written (its record says so and export refuses it), the run
carries on with the other models, and the command ends with exit 1 naming the collapsed ones.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from aeq.core.catalog import MODELS, check_model_name, model_spec
from aeq.core.errors import AeqError, CollapsedModelError, OutputExistsError, UsageError
from aeq.core.options import JsonOption
from aeq.core.settings import load_settings
from training.data import MnistData, load_mnist, parse_digits
from training.recipe import DEFAULT_RECIPE, RECIPES, TrainingConfig, recipe
from training.tensorflow_logs import import_tensorflow_quietly

if TYPE_CHECKING:
    from training.record import TrainingRecord

ALL_MODELS = "all"

_stdout = Console(highlight=False, soft_wrap=True)
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``aeq train`` to the aeq app."""
    app.command("train")(train)


def train(
    model: Annotated[str, typer.Argument(help=f"One of {', '.join(MODELS)}, or 'all'.")],
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Most epochs to run (recipe's default if omitted).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Images per step.")] = None,
    seed: Annotated[
        int,
        typer.Option(
            min=0,
            help="Seeds weights, shuffling and noise (same seed and CPU kernel path = same "
            "weights).",
        ),
    ] = 0,
    data: Annotated[
        Path | None,
        typer.Option(help="MNIST IDX folder or keras mnist.npz (default: AEQ_DATA_DIR, keras)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=2, help="Use only N training images, for quick runs.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Where to write <model>/ (default: AEQ_TRAINING_DIR or ./trained)."),
    ] = None,
    recipe_name: Annotated[
        str,
        typer.Option("--recipe", help=f"{' or '.join(RECIPES)}: 'article' reproduces the article."),
    ] = DEFAULT_RECIPE,
    digits: Annotated[
        str | None,
        typer.Option(
            help="Train (and test) on these digits only, e.g. 0-8: the rest become anomalies "
            "for 'aeq score'.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="The name to train (and export and serve) the model under, e.g. conv-fashion "
            "(default: the architecture's; one architecture at a time).",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace models already trained in --out.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Train the article's autoencoders on MNIST; write model.keras and record.json for each."""
    settings = load_settings()
    names = model_names(model)
    if name is not None:
        if model == ALL_MODELS:
            raise UsageError("--name names one model: give one architecture, not 'all'")
        check_model_name(name, names[0])
    out_dir = out if out is not None else settings.training_dir
    if not overwrite:
        refuse_trained(out_dir, [name] if name else names)
    options = {"epochs": epochs, "batch_size": batch_size, "seed": seed, "train_limit": limit}
    try:
        configs = {name: recipe(recipe_name, model=name, **options) for name in names}
        chosen_digits = None if digits is None else parse_digits(digits)
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        mnist = load_mnist(data, settings).with_digits(chosen_digits)
    except ValueError as error:
        raise UsageError(f"--digits {digits}: {error}") from None
    # With --json, stdout carries the JSON alone: the progress lines (Keras' too) go to stderr.
    progress = _stderr if as_json else _stdout
    progress.print(f"data: {mnist.source} ({len(mnist.train_images)} training images)")
    with redirect_stdout(sys.stderr if as_json else sys.stdout):
        records = train_all(configs, mnist, out_dir, progress, model_name=name)
    if as_json:
        print(json.dumps(training_json(records, out_dir), indent=2))
    else:
        _stdout.print(summary_table(records, out_dir))
    collapsed = [record for record in records if record.collapsed]
    if collapsed:
        raise CollapsedModelError(collapse_message(collapsed))


def refuse_trained(out_dir: Path, names: list[str]) -> None:
    """Refuse to train over models already trained in ``out_dir`` (a silent replacement lost a
    model trained on other data); says what is there and how to go on."""
    from training.record import MODEL_FILE, RECORD_FILE, read_record_data

    taken = [name for name in names if (out_dir / name / MODEL_FILE).exists()]
    if not taken:
        return
    first = out_dir / taken[0]
    try:
        trained_on = f" (trained on {read_record_data(first)['data_source']})"
    except (AeqError, KeyError):  # read_record_data turns an unreadable file into an AeqError
        trained_on = f" (no readable {RECORD_FILE})"
    more = f" and {len(taken) - 1} more" if len(taken) > 1 else ""
    raise OutputExistsError(
        f"{first} already holds a trained {taken[0]}{trained_on}{more}: pass --overwrite to "
        "replace it, or --out another folder"
    )


def model_names(model: str) -> list[str]:
    """``all`` -> every catalogued model; otherwise the one name, checked."""
    if model == ALL_MODELS:
        return list(MODELS)
    return [model_spec(model).name]


def train_all(
    configs: dict[str, TrainingConfig],
    mnist: MnistData,
    out_dir: Path,
    progress: Console = _stdout,
    model_name: str | None = None,
) -> list[TrainingRecord]:
    """Train each architecture in turn (one of them under ``model_name`` if given), printing
    Keras' per-epoch lines and a warning per collapse."""
    import_tensorflow_quietly()
    from training.train import train_model

    records = []
    for architecture, config in configs.items():
        name = model_name or architecture
        progress.print(
            f"[bold]{name}[/]: recipe {config.recipe} ({config.loss}, batch {config.batch_size}, "
            f"learning rate {config.learning_rate:g} {config.schedule}, "
            f"at most {config.epochs} epochs, seed {config.seed})"
        )
        started = time.monotonic()
        record = train_model(architecture, config, mnist, out_dir, model_name=name)
        records.append(record)
        if record.collapsed:
            _stderr.print(
                f"[bold yellow]warning:[/] {name} collapsed: validation MSE "
                f"{record.validation_mse:.4f} vs {record.baseline_mse:.4f} for the mean image"
            )
        progress.print(
            f"{name}: test MSE {record.test_mse:.5f} in {time.monotonic() - started:.0f} s"
        )
    return records


def training_json(records: list[TrainingRecord], out_dir: Path) -> dict[str, Any]:
    """What ``aeq train --json`` prints: each model's record (as in record.json) and folder."""
    return {
        "trained_into": str(out_dir),
        "models": [
            {"path": str(out_dir / record.name), **json.loads(record.to_json())}
            for record in records
        ],
    }


def summary_table(records: list[TrainingRecord], out_dir: Path) -> Table:
    """One row per trained model: epochs, time, test MSE, PSNR, code zeros, collapse."""
    table = Table(
        title=f"trained into {out_dir}",
        caption="* PSNR of the denoised output from noisy (0.5) test inputs",
    )
    for column in ("model", "epochs", "best", "time s", "test MSE", "PSNR dB", "zeros", "status"):
        table.add_column(column, justify="left" if column in ("model", "status") else "right")
    for record in records:
        table.add_row(
            record.name,
            str(record.epochs_run),
            str(record.best_epoch),
            f"{record.duration_s:.0f}",
            f"{record.test_mse:.5f}",
            f"{record.test_psnr_db:.1f}" + ("*" if record.test_input != "clean" else ""),
            f"{record.test_code_zero_fraction:.0%}",
            "COLLAPSED" if record.collapsed else "ok",
        )
    return table


def collapse_message(collapsed: list[TrainingRecord]) -> str:
    """The one-line error for collapsed models."""
    names = ", ".join(record.name for record in collapsed)
    return (
        f"{names} collapsed (validation MSE no better than predicting the mean image); "
        "the record says so and aeq export will refuse it: "
        "retrain with the default recipe or another --seed"
    )
