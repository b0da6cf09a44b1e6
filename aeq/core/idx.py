"""Reading MNIST's IDX files (optionally gzipped), the format keras and torchvision ship.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from aeq.core.errors import InputError

_UNSIGNED_BYTE = 0x08
_HEADER_BYTES = 4


def read_idx(path: Path) -> np.ndarray:
    """Load an IDX file (``.gz`` or plain) as a uint8 array of its declared shape.

    Raises:
        InputError: the file is missing, not IDX, not unsigned bytes, or truncated.
    """
    try:
        raw = _read_bytes(path)
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise InputError(f"cannot read IDX file {path}: {error}") from None
    if len(raw) < _HEADER_BYTES or raw[0] != 0 or raw[1] != 0:
        raise InputError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != _UNSIGNED_BYTE:
        raise InputError(f"{path}: IDX type 0x{raw[2]:02x} is not unsigned bytes")
    rank = raw[3]
    header_end = _HEADER_BYTES + 4 * rank
    if rank == 0 or len(raw) < header_end:
        raise InputError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=rank, offset=_HEADER_BYTES))
    expected = int(np.prod(shape))
    if len(raw) - header_end != expected:
        raise InputError(
            f"{path}: IDX header promises {expected} bytes of data, "
            f"file holds {len(raw) - header_end}"
        )
    return np.frombuffer(raw, np.uint8, offset=header_end).reshape(shape)


def is_idx_path(path: Path) -> bool:
    """True for names like ``t10k-images-idx3-ubyte`` or ``train-labels.idx1-ubyte.gz``."""
    name = path.name.lower()
    return "idx" in name and "ubyte" in name


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as stream:
            return stream.read()
    return path.read_bytes()
