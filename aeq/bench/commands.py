"""``aeq bench``: measure the engines, the service, latency, memory and arithmetic; write a report.

TensorFlow, ONNX Runtime and Celery are imported inside the command. Scratch data (the models'
repository, input arrays, Redis's files) lives in a temporary folder deleted afterwards; the
report goes to ``--out`` (default ``reports/bench/<timestamp>/``, git-ignored).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from aeq.core.catalog import MODELS
from aeq.core.errors import UsageError
from aeq.core.options import JsonOption

if TYPE_CHECKING:
    from aeq.bench.suite import BenchConfig

RESULTS_FOLDER = Path("reports") / "bench"

_stdout = Console(highlight=False, soft_wrap=True)
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``aeq bench`` to the aeq app."""
    app.command("bench")(bench)


def parse_list(text: str | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...] | None:
    """A comma-separated choice list, checked against ``allowed`` (None if not given)."""
    if text is None:
        return None
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in chosen if name not in allowed]
    if unknown or not chosen:
        raise UsageError(f"unknown {what} {', '.join(unknown) or '(none)'}; choose from "
                         f"{', '.join(allowed)}")  # fmt: skip
    return tuple(name for name in allowed if name in chosen)


def _in_given_order(text: str | None, chosen: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """``chosen`` in the order the user wrote them (the first layout is the reference one)."""
    if text is None or chosen is None:
        return chosen
    given = [part.strip() for part in text.split(",")]
    return tuple(sorted(chosen, key=given.index))


def parse_sizes(text: str | None) -> tuple[int, ...] | None:
    """Comma-separated chunk sizes, each 1..MAX_CHUNK_SIZE (None if not given)."""
    from aeq.queue.protocol import MAX_CHUNK_SIZE

    if text is None:
        return None
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--chunk-sizes takes whole numbers, got {text!r}") from None
    if not sizes or not all(1 <= size <= MAX_CHUNK_SIZE for size in sizes):
        raise UsageError(f"--chunk-sizes must be between 1 and {MAX_CHUNK_SIZE}, got {text!r}")
    return sizes


def bench(
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Small sizes and few repeats (< 1 min): checks the harness."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report folder (default reports/bench/<timestamp>/).", show_default=False
        ),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated models (default: all; --quick: vanilla). "
            f"Of: {', '.join(MODELS)}."
        ),
    ] = None,  # fmt: skip
    sections: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated sections (default all): engine, service, latency, memory, flops, "
            "scale."
        ),
    ] = None,  # fmt: skip
    repository: Annotated[
        Path | None,
        typer.Option(
            help="Serve ONNX graphs from this repository (default: untrained models "
            "converted here; speed does not depend on the weights)."
        ),
    ] = None,  # fmt: skip
    layouts: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated worker layouts of section 2 (default all; the first also runs "
            "the chunk sweep, latency and memory)."
        ),
    ] = None,  # fmt: skip
    chunk_sizes: Annotated[
        str | None,
        typer.Option(help="Comma-separated chunk sizes of section 2's sweep (default 64...4096)."),
    ] = None,  # fmt: skip
    as_json: JsonOption = False,
) -> None:
    """Benchmark inference engines, the service, latency, memory and FLOPs; write a report."""
    from aeq.bench.cluster import LAYOUTS
    from aeq.bench.suite import FULL, QUICK, SECTIONS

    config = QUICK if quick else FULL
    chosen_models = parse_list(models, tuple(MODELS), "model")
    chosen_sections = parse_list(sections, SECTIONS, "section")
    chosen_layouts = parse_list(layouts, tuple(LAYOUTS), "layout")
    if repository is not None and not repository.is_dir():
        raise UsageError(f"--repository {repository} is not a folder")
    config = replace(
        config,
        models=chosen_models or config.models,
        sections=chosen_sections or config.sections,
        layouts=_in_given_order(layouts, chosen_layouts) or config.layouts,
        chunk_sizes=parse_sizes(chunk_sizes) or config.chunk_sizes,
        repository=repository,
    )
    folder = out or RESULTS_FOLDER / time.strftime("%Y%m%d-%H%M%S")
    _run(config, folder, as_json)


def _run(config: BenchConfig, folder: Path, as_json: bool) -> None:
    from training.tensorflow_logs import import_tensorflow_quietly

    import_tensorflow_quietly()
    from aeq.bench import report, targets
    from aeq.bench.suite import run_suite

    sections, names = ", ".join(config.sections), ", ".join(config.models)
    _stderr.print(f"aeq bench: sections {sections}; models {names}; report in {folder}")
    # With --json, stdout carries the JSON alone: anything the suite prints goes to stderr.
    with (
        tempfile.TemporaryDirectory(prefix="aeq-bench-") as scratch,
        redirect_stdout(sys.stderr if as_json else sys.stdout),
    ):
        results = run_suite(config, Path(scratch), lambda line: _stderr.print(f"  {line}"))
    results["verdicts"] = targets.verdicts(results["results"])
    json_path, markdown_path = report.write(results, folder)
    if as_json:
        # The report's own JSON file, as written (strict JSON, every number of the tables).
        document = {"report": str(markdown_path), "results": json.loads(json_path.read_text())}
        print(json.dumps(document, indent=2))
    else:
        _stdout.print(markdown_path.read_text())
    _stderr.print(f"report: {markdown_path} and {json_path}")
