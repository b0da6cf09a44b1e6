"""Small builders of input files for the input/output tests: digits, images, arrays, IDX files."""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from collections.abc import Callable
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


# --- Hostile files: a few hundred bytes whose headers declare billions of items or pixels ---


def npy_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    """A valid .npy header declaring ``shape``, with no data after it."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def idx_header(shape: tuple[int, ...]) -> bytes:
    return struct.pack(f">BBBB{len(shape)}I", 0, 0, 0x08, len(shape), *shape)


def huge_npy(folder: Path) -> Path:
    path = folder / "huge.npy"
    path.write_bytes(npy_header((2**60, SIDE, SIDE)))  # 2**60 * 784 wraps to 0 in int64
    return path


def huge_npz(folder: Path) -> Path:
    path = folder / "huge.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", npy_header((10**8, SIDE, SIDE)))
    return path


def huge_idx_gz(folder: Path) -> Path:
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header((2**32 - 1, SIDE, SIDE))))
    return path


def huge_png(folder: Path) -> Path:
    path = folder / "huge.png"
    Image.fromarray(np.zeros((8192, 8192), np.uint16)).save(path)  # 16-bit gray, 130 KB
    return path


# Each builder with the one line the CLI must answer it with (tests/unit/test_bad_files.py, and
# with a broker configured, tests/integration/test_service_bad_inputs.py).
HOSTILE_FILES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "npy-2**60": (
        huge_npy,
        r"huge\.npy is truncated: its header promises 903890459611768029184 bytes",
    ),
    "npz-10**8": (
        huge_npz,
        r"huge\.npz\[images\] is truncated: its header promises 78400000000 bytes",
    ),
    "idx-gz-2**32": (huge_idx_gz, r"idx3-ubyte\.gz .*promises 3367254359280 bytes"),
    "png-8192-16bit": (huge_png, r"huge\.png is 8192x8192 pixels, not 28x28 \(pass --resize"),
}
