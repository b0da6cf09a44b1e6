"""``aeq export``, ``aeq models`` and ``aeq triton``.

``aeq export`` imports TensorFlow and tf2onnx inside the command; ``aeq models`` reads only the
repository's ``config.json`` files, so it stays TensorFlow-free like the worker; ``aeq triton``
(``export.triton``) imports onnx inside the command, to read each graph's inputs and outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aeq.core.catalog import MODELS
from aeq.core.errors import AeqError, ModelError, ModelNotFoundError, UsageError
from aeq.core.options import JsonOption, RepositoryOption
from aeq.core.pixel_scale import PixelScale
from aeq.core.settings import Settings, load_settings
from aeq.model_summary import ModelSummary, summarize
from aeq.repository import ModelRepository
from export.foreign_command import ForeignOptions, export_foreign
from export.trained import find_trained, refuse_collapsed, refuse_other_data, trained_models
from export.validate import load_parity_images
from training.tensorflow_logs import import_tensorflow_quietly

if TYPE_CHECKING:
    from export.exporter import ExportResult
    from export.triton import TritonModel

ALL_MODELS = "all"
_BYTES_PER_KB = 1024

_stdout = Console(highlight=False, soft_wrap=True)
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)

FromOption = Annotated[
    Path | None,
    typer.Option(
        "--from", help="Folder 'aeq train' wrote (default: AEQ_TRAINING_DIR or ./trained)."
    ),
]
DataOption = Annotated[
    Path | None,
    typer.Option(
        help="MNIST IDX folder or mnist.npz for the parity images, or --onnx's run check "
        "(default: AEQ_DATA_DIR)."
    ),
]
OnnxOption = Annotated[
    Path | None,
    typer.Option(
        "--onnx",
        help="Publish this ONNX autoencoder made elsewhere (e.g. by torch.onnx.export; 28x28 "
        "gray images in and out) as the next version of --name.",
        show_default=False,
    ),
]
NameOption = Annotated[
    str | None,
    typer.Option(help="The name to publish the --onnx model under.", show_default=False),
]
ScaleOption = Annotated[
    PixelScale | None,
    typer.Option(
        help="The pixel range the --onnx graphs take and give (default: 0-1).",
        show_default=False,
    ),
]
EncoderOption = Annotated[
    Path | None,
    typer.Option(
        help="With --onnx: its encoder (image -> code), with --decoder.", show_default=False
    ),
]
DecoderOption = Annotated[
    Path | None,
    typer.Option(
        help="With --onnx: its decoder (code -> image), with --encoder.", show_default=False
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``export``, ``models`` and ``triton`` to the aeq app."""
    app.command("export")(export_command)
    app.command("models")(models_command)
    app.command("triton")(triton_command)


def export_command(
    model: Annotated[
        str | None,
        typer.Argument(
            help=f"A trained model's name ({', '.join(MODELS)}, or one given with 'aeq train "
            "--name'), or 'all'; leave it out with --onnx.",
            show_default=False,
        ),
    ] = None,
    from_dir: FromOption = None,
    repository: RepositoryOption = None,
    data: DataOption = None,
    other_data: Annotated[
        bool,
        typer.Option(
            "--other-data",
            help="Publish a model trained on other data than the latest version of its name "
            "(with --onnx: a model of another kind) as its next version anyway.",
        ),
    ] = False,
    onnx: OnnxOption = None,
    name: NameOption = None,
    scale: ScaleOption = None,
    encoder: EncoderOption = None,
    decoder: DecoderOption = None,
    as_json: JsonOption = False,
) -> None:
    """Convert trained models to ONNX, check parity with Keras, publish the next version; or
    (--onnx) publish an ONNX autoencoder made elsewhere."""
    foreign = ForeignOptions(onnx, name, scale, encoder, decoder)
    if foreign.given or model is None:
        _refuse_mixed(model, from_dir, foreign)
        settings = load_settings().with_overrides(model_repository=repository)
        export_foreign(foreign, settings, data, other_data, as_json)
        return
    settings = load_settings().with_overrides(training_dir=from_dir, model_repository=repository)
    names = _models_to_export(model, settings.training_dir)
    # Missing and collapsed models are refused before TensorFlow and the data are loaded.
    target = None if other_data else ModelRepository(settings.model_repository)
    failures = _refused(names, settings.training_dir, target, raise_first=model != ALL_MODELS)
    ready = [name for name in names if name not in failures]
    results: list[ExportResult] = []
    if ready:
        # With --json, stdout carries the JSON alone; people get one line per model on stderr.
        show = _print_published if as_json else _print_export
        results, failed = _export_each(ready, settings, data, model != ALL_MODELS, show)
        failures += failed
    if as_json:
        print(json.dumps(_export_json(results, failures, settings.model_repository), indent=2))
    if failures:
        raise ModelError(f"export failed for {', '.join(failures)} (see above)")


def _refuse_mixed(model: str | None, from_dir: Path | None, foreign: ForeignOptions) -> None:
    """A trained model's name and --onnx exclude each other; one of them is needed."""
    if model is None and not foreign.given:
        raise UsageError(
            "missing argument 'model' (a trained model's name, or 'all'), or --onnx FILE --name "
            "NAME; see 'aeq export -h'"
        )
    if foreign.onnx is None:
        raise UsageError(
            f"{foreign.given_text}: only with --onnx FILE (an ONNX model made elsewhere)"
        )
    if model is not None or from_dir is not None:
        given = f"MODEL {model!r}" if model is not None else "--from"
        raise UsageError(f"--onnx publishes the ONNX file given; {given} does not go with it")


def _models_to_export(model: str, training_dir: Path) -> list[str]:
    if model != ALL_MODELS:
        return [model]  # find_trained says what is wrong with it, before TensorFlow loads
    names = trained_models(training_dir)
    if not names:
        raise ModelNotFoundError(
            f"no trained models in {training_dir}; run 'aeq train all' or pass --from"
        )
    missing = [name for name in MODELS if name not in names]
    if missing:
        _stderr.print(f"[yellow]not trained, skipped:[/] {', '.join(missing)} (in {training_dir})")
    return names


def _refused(
    names: list[str], training_dir: Path, target: ModelRepository | None, raise_first: bool
) -> list[str]:
    """Names whose trained model is unusable, collapsed, or (``target`` given) trained on other
    data than the latest version of its name there (each reported on stderr)."""
    refused = []
    for name in names:
        try:
            trained = find_trained(training_dir, name)
            refuse_collapsed(trained)
            if target is not None:
                refuse_other_data(trained, target)
        except AeqError as error:
            if raise_first:
                raise
            _stderr.print(f"[bold red]{name} refused:[/] {error}")
            refused.append(name)
    return refused


def _export_each(
    names: list[str],
    settings: Settings,
    data: Path | None,
    raise_first: bool,
    show: Callable[[ExportResult], None],
) -> tuple[list[ExportResult], list[str]]:
    """Export each model in turn, showing each as it is published; return what was published
    and the names that failed (each reported on stderr). Parity is checked on ``data``, else on
    the data each model's training record names (where it still is), else where ``aeq train``
    looks."""
    paths = {name: _parity_path(name, settings, data) for name in names}
    parity = {path: load_parity_images(path, settings) for path in set(paths.values())}
    import_tensorflow_quietly()
    from export import exporter

    target = ModelRepository(settings.model_repository)
    published, failed = [], []
    for name in names:
        images, source = parity[paths[name]]
        try:
            with _stderr.status(f"exporting {name}…"):
                result = exporter.export_model(name, settings.training_dir, target, images, source)
        except AeqError as error:
            if raise_first:
                raise
            _stderr.print(f"[bold red]{name} failed:[/] {error}")
            failed.append(name)
            continue
        show(result)
        published.append(result)
    return published, failed


def _parity_path(name: str, settings: Settings, data: Path | None) -> Path | None:
    """The data to check ``name``'s parity on: ``--data``, else its training data (None: where
    ``aeq train`` looks)."""
    if data is not None:
        return data
    recorded = find_trained(settings.training_dir, name).record.get("data_path") or ""
    return Path(recorded) if recorded and Path(recorded).exists() else None


def _export_json(results: list[ExportResult], failed: list[str], root: Path) -> dict[str, Any]:
    """What ``aeq export --json`` prints: each published version, and the models that failed."""
    return {
        "repository": str(root),
        "published": [
            {
                "model": result.version.model,
                "version": result.version.version,
                "path": str(result.version.path),
                "parity_max_abs_diff": {
                    graph.value: item.max_abs_diff for graph, item in result.parity.items()
                },
                "size_bytes": dict(result.sizes),
            }
            for result in results
        ],
        "failed": failed,
    }


def _print_published(result: ExportResult) -> None:
    _stderr.print(f"[bold green]{result.version.label}[/] published to {result.version.path}")


def _print_export(result: ExportResult) -> None:
    version = result.version
    diffs = ", ".join(f"{graph} {item.max_abs_diff:.2g}" for graph, item in result.parity.items())
    sizes = ", ".join(f"{file} {_kb(size)}" for file, size in result.sizes.items())
    _stdout.print(f"[bold green]{version.label}[/] published to {version.path}")
    _stdout.print(f"  parity max |diff|: {diffs}")
    _stdout.print(f"  files: {sizes}")


def models_command(
    repository: RepositoryOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the published models: versions, latest, code size, test MSE, training data, parity
    error, size."""
    source = _existing_repository(repository)
    summaries = summarize(source)
    if as_json:
        print(json.dumps([summary.to_json() for summary in summaries], indent=2))
        return
    if not summaries:
        _stdout.print(
            f"no models published in {source.root} yet; run 'aeq train all' and 'aeq export all'"
        )
        return
    _stdout.print(_models_table(summaries))


def _existing_repository(repository: Path | None) -> ModelRepository:
    """The model repository ``--repository`` (or the settings) names; a missing one is refused."""
    settings: Settings = load_settings().with_overrides(model_repository=repository)
    if not settings.model_repository.is_dir():
        raise UsageError(
            f"no model repository at {settings.model_repository}: give --repository (or "
            "AEQ_MODEL_REPOSITORY), or make one with 'aeq train all' and 'aeq export all'"
        )
    return ModelRepository(settings.model_repository)


def _models_table(summaries: list[ModelSummary]) -> Table:
    table = Table(title="published models")
    # The latest version is the last listed (--json has it as 'latest').
    columns = (
        "model",
        "versions",
        "code dim",
        "test MSE",
        "data",
        "parity error",
        "size",
    )
    # Names and versions are never cut short on a narrow terminal; the data column gives way.
    whole = {
        "model": max(len(item.model) for item in summaries),
        "versions": len("versions"),
        "size": len("999.9 KB"),
    }
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in ("model", "data") else "right",
            min_width=whole.get(column),
            no_wrap=column in whole,
        )
    for item in summaries:
        table.add_row(
            item.model,
            ", ".join(str(version) for version in item.versions),
            "-" if item.code_dim is None else str(item.code_dim),
            "-" if item.test_mse is None else f"{item.test_mse:.4f}",
            _data_cell(item),
            "-" if item.parity_max_abs_diff is None else f"{item.parity_max_abs_diff:.2g}",
            _kb(item.size_bytes),
        )
    return table


def _data_cell(item: ModelSummary) -> str:
    """The table's data column: the training data, or for a model made elsewhere the ONNX file
    it came from (``ae.onnx``; ``--json`` has its architecture, ``onnx``, and each file's
    sha256)."""
    made_from = (item.source or {}).get("autoencoder", {}).get("file")
    return str(made_from) if made_from else _short_source(item.trained_on)


def _short_source(source: str | None) -> str:
    """A training record's data source as the table shows it: the file or folder name, and the
    digits where only some were kept ('IDX folder /x/fashion' -> 'fashion', 'IDX folder /x/mnist,
    digits 0-8 only' -> 'mnist 0-8'); ``--json`` has it whole."""
    if not source:
        return "-"
    where, _, digits = source.partition(", ")
    kept = digits.removeprefix("digits ").removesuffix(" only")
    return " ".join(part for part in (Path(where.split()[-1]).name, kept) if part)


def _kb(size: int) -> str:
    return f"{size / _BYTES_PER_KB:.1f} KB"


def triton_command(
    out_dir: Annotated[
        Path,
        typer.Argument(help="Folder to write the Triton model repository to (absent or empty)."),
    ],
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="MODEL (every version) or MODEL@VERSION; default: every published model.",
            show_default=False,
        ),
    ] = None,
    repository: RepositoryOption = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT_DIR if it holds anything.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write published models as a Triton Inference Server model repository (one Triton model
    per graph, <model>_<graph>, ONNX Runtime backend)."""
    try:
        from export import triton
    except ModuleNotFoundError as error:
        if error.name != "onnx":
            raise
        # onnx comes with the train extra; a worker image has ONNX Runtime but not onnx.
        raise AeqError(
            "aeq triton reads each graph with the onnx package: pip install onnx (or aeq[train])"
        ) from None

    source = _existing_repository(repository)
    versions = triton.select_versions(source, triton.parse_selection(models or []))
    triton.refuse_out_dir(out_dir, source, overwrite)
    written = triton.write_triton_repository(versions, out_dir)
    # With --json, stdout carries the JSON alone; people get the same lines on stderr.
    console = _stderr if as_json else _stdout
    for model in written:
        console.print(_triton_line(model))
    console.print(f"start Triton on it: {triton.start_command(out_dir)}")
    if as_json:
        report = _triton_json(written, out_dir, source, triton.start_command(out_dir))
        print(json.dumps(report, indent=2))


def _triton_json(
    written: list[TritonModel], out_dir: Path, source: ModelRepository, start: str
) -> dict[str, Any]:
    """What ``aeq triton --json`` prints: where, each Triton model written, how to start Triton."""
    return {
        "triton_repository": str(out_dir.resolve()),
        "model_repository": str(source.root.resolve()),
        "models": [model.to_json(out_dir.resolve()) for model in written],
        "start": start,
    }


def _triton_line(model: TritonModel) -> str:
    """One Triton model written: its versions, signature (-1: any size) and batch limit."""
    batch = model.signature.max_batch_size or "none (fixed first dim)"
    return (
        f"[bold green]{model.name}[/]: {model.versions_text}; "
        f"{escape(model.signature.describe())}; max batch {batch}"
    )
