"""Small builders of input files for the input/output tests: digits, images, arrays, IDX files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 28


def digits(count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct uint8 28 x 28 images: a bright blob on black, plus noise, like MNIST."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIDE, :SIDE]
    images = np.empty((count, SIDE, SIDE), np.uint8)
    for index in range(count):
        center = rng.uniform(8, 20, size=2)
        blob = np.exp(-((rows - center[0]) ** 2 + (cols - center[1]) ** 2) / rng.uniform(8, 30))
        images[index] = np.clip(blob * 255 + rng.integers(0, 20, (SIDE, SIDE)), 0, 255)
    return images


def save_png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    """Write ``pixels`` as a PNG through Pillow (mode picked from the array unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels) if mode is None else Image.fromarray(pixels).convert(mode)
    image.save(path)
    return path


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array in MNIST's IDX format (gzipped when the name ends in ``.gz``)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)
    return path


def read_all(source: object, size: int = 7) -> tuple[list[str], np.ndarray]:
    """Every (name, item) of an ImageSource/CodeSource, gathered from chunks of ``size``."""
    names: list[str] = []
    arrays = []
    for chunk_names, chunk in source.chunks(size):  # type: ignore[attr-defined]
        names.extend(chunk_names)
        arrays.append(chunk)
    return names, np.concatenate(arrays)
