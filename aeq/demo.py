"""``aeq demo``: the first thing a new user runs (``make demo``).

It runs the real commands a user would type, printing each one first: train the five models with
quick settings, export them into a demo model repository, add noise to test digits, denoise them
through the service (local mode, or Redis + a worker of its own when ``AEQ_BROKER_URL`` is set),
then write a before/after picture and print a PSNR table. Everything lands in one folder
(``demo-output/``) so the demo never touches your own ``trained/`` or ``model_repository/``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from aeq.core.catalog import NOISE_FACTOR
from aeq.core.errors import AeqError, UsageError
from aeq.core.settings import load_settings

DEFAULT_OUT = Path("demo-output")
DEMO_MARKER = ".aeq-demo"
# Quick settings: enough for every model to beat the mean image and for the denoiser to clean up
# noise-0.5 digits clearly, in a few minutes on a 2-core CPU (docs/TRAINING.md has the full runs).
QUICK_EPOCHS = 8
QUICK_TRAIN_IMAGES = 5000
DEMO_DIGITS = 64
NOISE_SEED = 2026
GRID_COLUMNS = 8
GRID_SCALE = 3
GRID_GAP_PX = 6
WORKER_STOP_TIMEOUT_S = 20

console = Console(highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class DemoPaths:
    """Where each step of the demo writes."""

    root: Path

    @property
    def trained(self) -> Path:
        return self.root / "trained"

    @property
    def repository(self) -> Path:
        return self.root / "model_repository"

    @property
    def clean(self) -> Path:
        return self.root / "clean.npy"

    @property
    def noisy(self) -> Path:
        return self.root / "noisy.npy"

    @property
    def denoised(self) -> Path:
        return self.root / "denoised.npy"

    @property
    def reconstructed(self) -> Path:
        return self.root / "conv-reconstructed.npy"

    @property
    def denoised_pngs(self) -> Path:
        return self.root / "denoised"

    @property
    def grid(self) -> Path:
        return self.root / "before-after.png"


def register(app: typer.Typer) -> None:
    """Add ``aeq demo`` to the aeq app."""
    app.command("demo")(demo)


def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes.")] = DEFAULT_OUT,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per model.")] = QUICK_EPOCHS,
    limit: Annotated[
        int, typer.Option(min=100, help="Training images per model.")
    ] = QUICK_TRAIN_IMAGES,
    data: Annotated[
        Path | None, typer.Option(help="MNIST IDX folder or mnist.npz (default: AEQ_DATA_DIR).")
    ] = None,
) -> None:
    """Train, export and serve the five autoencoders on MNIST in a few minutes; show the result."""
    started = time.perf_counter()
    paths = DemoPaths(out)
    _fresh_folder(paths.root)
    data_args = ["--data", str(data)] if data else []
    _aeq("train", "all", "--epochs", str(epochs), "--limit", str(limit),
         "--out", str(paths.trained), *data_args)  # fmt: skip
    _aeq("export", "all", "--from", str(paths.trained), "--repository", str(paths.repository),
         *data_args)  # fmt: skip
    _aeq("models", "--repository", str(paths.repository))
    _write_noisy_digits(paths, data)
    env = {"AEQ_MODEL_REPOSITORY": str(paths.repository)}
    with _own_worker_if_queued(env):
        _aeq("denoise", str(paths.noisy), "-o", str(paths.denoised), env=env)
        _aeq("denoise", str(paths.noisy), "-o", str(paths.denoised_pngs), env=env)
        _aeq("reconstruct", str(paths.noisy), "-o", str(paths.reconstructed), env=env)
    _write_grid(paths)
    _print_summary(paths, time.perf_counter() - started)


def _fresh_folder(root: Path) -> None:
    # The demo owns this folder: a re-run starts from scratch rather than adding versions. Only a
    # folder the demo made itself (it carries the marker) is ever cleared.
    if root.exists() and any(root.iterdir()):
        if not (root / DEMO_MARKER).is_file():
            raise UsageError(f"{root} exists and is not a demo folder; choose another with --out")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / DEMO_MARKER).write_text(
        "made by 'aeq demo'; the next 'aeq demo' replaces this folder\n"
    )


def _aeq(*args: str, env: dict[str, str] | None = None) -> None:
    command = ["aeq", *args]
    shown = " ".join(shlex.quote(part) for part in command)
    prefix = " ".join(f"{key}={shlex.quote(value)}" for key, value in (env or {}).items())
    console.print(f"\n[bold cyan]$ {prefix + ' ' if prefix else ''}{shown}[/]")
    result = subprocess.run(_aeq_argv(args), env={**os.environ, **(env or {})}, check=False)
    if result.returncode != 0:
        raise AeqError(f"the demo stopped: '{shown}' exited with {result.returncode}")


def _aeq_argv(args: tuple[str, ...] | list[str]) -> list[str]:
    # The aeq of this interpreter, so the demo works from a virtualenv that is not activated.
    return [sys.executable, "-m", "cli", *args]


def _write_noisy_digits(paths: DemoPaths, data: Path | None) -> None:
    from aeq.samples import mnist_test_digits, noisy_pixels

    clean = mnist_test_digits(DEMO_DIGITS, data)
    np.save(paths.clean, clean)
    np.save(paths.noisy, noisy_pixels(clean, NOISE_FACTOR, NOISE_SEED))
    console.print(
        f"\nwrote {DEMO_DIGITS} MNIST test digits to {paths.clean} and a noisy copy "
        f"(x + 0.5·N(0,1), clipped) to {paths.noisy}"
    )


@contextmanager
def _own_worker_if_queued(env: dict[str, str]) -> Iterator[None]:
    """With a broker configured, run one worker of the demo's own against the demo repository.

    Other workers on the same queue may not have the demo's models, so the demo brings its own.
    """
    if not load_settings().broker_url:
        yield
        return
    console.print("\nAEQ_BROKER_URL is set: starting a worker for the demo's models")
    process = subprocess.Popen(
        _aeq_argv(["worker", "--loglevel", "warning"]), env={**os.environ, **env}
    )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=WORKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()


def _write_grid(paths: DemoPaths) -> None:
    from PIL import Image

    rows = [
        np.load(path, allow_pickle=False) for path in (paths.clean, paths.noisy, paths.denoised)
    ]
    panels = [_tile(images) for images in rows]
    gap = np.full((panels[0].shape[0], GRID_GAP_PX), 255, np.uint8)
    picture = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    picture = picture.repeat(GRID_SCALE, axis=0).repeat(GRID_SCALE, axis=1)
    Image.fromarray(picture).save(paths.grid)


def _tile(images: np.ndarray) -> np.ndarray:
    rows = len(images) // GRID_COLUMNS
    side = images.shape[1]
    grid = images[: rows * GRID_COLUMNS].reshape(rows, GRID_COLUMNS, side, side)
    return grid.transpose(0, 2, 1, 3).reshape(rows * side, GRID_COLUMNS * side)


def _print_summary(paths: DemoPaths, seconds: float) -> None:
    from aeq.evaluation.metrics import psnr

    clean = np.load(paths.clean, allow_pickle=False) / 255.0
    table = Table(title=f"PSNR against the clean digits ({DEMO_DIGITS} MNIST test images)")
    table.add_column("images")
    table.add_column("PSNR (dB)", justify="right")
    for label, path in (
        ("noisy input", paths.noisy),
        ("denoised by 'denoising'", paths.denoised),
        ("reconstructed by 'conv' (trained on clean digits)", paths.reconstructed),
    ):
        table.add_row(label, f"{psnr(clean, np.load(path, allow_pickle=False) / 255.0):.1f}")
    console.print()
    console.print(table)
    console.print(f"before/after picture (clean | noisy | denoised): {paths.grid}")
    console.print(f"denoised PNGs: {paths.denoised_pngs}/   model repository: {paths.repository}")
    console.print(
        f"try: AEQ_MODEL_REPOSITORY={paths.repository} aeq encode {paths.clean} -o codes.npy"
    )
    console.print(f"demo finished in {seconds / 60:.1f} min")
