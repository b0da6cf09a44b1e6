"""``aeq samples``: MNIST test digits to try the job commands on, clean or with the article's noise.

The README's pipeline and ``aeq demo`` both start from here, so a reader has inputs without
writing any code: ``aeq samples noisy_digits/`` (a folder of PNGs) or ``aeq samples noisy.npy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from aeq.core.catalog import NOISE_FACTOR
from aeq.core.noise import add_noise
from aeq.core.settings import load_settings

DEFAULT_COUNT = 64
DEFAULT_SEED = 2026

console = Console(stderr=True, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``aeq samples`` to the aeq app."""
    app.command("samples")(samples)


def samples(
    output: Annotated[
        Path, typer.Argument(help="A folder of PNGs (no suffix), or a .npy/.npz file.")
    ],
    count: Annotated[int, typer.Option(min=1, max=10_000, help="How many test digits.")] = (
        DEFAULT_COUNT
    ),
    noise: Annotated[
        float, typer.Option(min=0.0, help="Gaussian noise factor (0: the clean digits).")
    ] = NOISE_FACTOR,
    seed: Annotated[int, typer.Option(help="Seed of the noise.")] = DEFAULT_SEED,
    data: Annotated[
        Path | None, typer.Option(help="MNIST IDX folder or mnist.npz (default: AEQ_DATA_DIR).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT.")] = False,
) -> None:
    """Write MNIST test digits with the article's noise (x + 0.5·N(0,1), clipped) to OUTPUT."""
    digits = mnist_test_digits(count, data)
    pixels = noisy_pixels(digits, noise, seed)
    write_images(output, pixels, [f"digit-{index:05d}" for index in range(count)], overwrite)
    what = f"with noise {noise:g} (seed {seed})" if noise else "clean"
    console.print(f"wrote {count} MNIST test digits, {what}, to {output}")


def mnist_test_digits(count: int, data: Path | None = None) -> np.ndarray:
    """The first ``count`` MNIST test images, uint8 N x 28 x 28, from wherever aeq finds MNIST."""
    from training.data import load_mnist

    return load_mnist(data, load_settings()).test_images[:count]


def noisy_pixels(digits: np.ndarray, factor: float, seed: int) -> np.ndarray:
    """``digits`` with the article's noise at ``factor``, back to uint8 pixels."""
    if not factor:
        return digits
    noisy = add_noise(digits.astype(np.float32) / 255.0, np.random.default_rng(seed), factor)
    return np.round(noisy * 255.0).astype(np.uint8)


def write_images(output: Path, pixels: np.ndarray, names: list[str], overwrite: bool) -> None:
    """Write uint8 images as aeq writes job outputs (staged, then renamed into place)."""
    from aeq.files.outputs import open_image_output

    with open_image_output(output, len(pixels), overwrite) as writer:
        writer.write(0, names, pixels)
        writer.commit()
