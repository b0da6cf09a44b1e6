"""MNIST's IDX format (optionally gzipped), the format keras and torchvision ship, parsed here once.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one
big-endian uint32 per dimension, then the data.

``read_idx_header`` parses the header from an open stream; the training side loads whole files
with ``read_idx``, and the client streams a job's IDX input (``aeq.files.array_files.open_idx``)
from the same header.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import IO, cast

import numpy as np

from aeq.core.errors import InputError

IDX_UNSIGNED_BYTE = 0x08
GZIP_SUFFIX = ".gz"
_HEADER_BYTES = 4
_DIM_BYTES = 4


def read_idx(path: Path | str) -> np.ndarray:
    """Load an IDX file (``.gz`` or plain) as a uint8 array of its declared shape.

    Raises:
        InputError: the file is missing, not IDX, not unsigned bytes, or truncated.
    """
    path = Path(path)
    try:
        with open_idx_stream(path) as stream:
            shape, _ = read_idx_header(stream, str(path))
            data = stream.read()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise InputError(f"cannot read IDX file {path}: {error}") from None
    expected = math.prod(shape)
    if len(data) != expected:
        raise InputError(
            f"{path}: IDX header promises {expected} bytes of data, file holds {len(data)}"
        )
    return np.frombuffer(data, np.uint8).reshape(shape)


def read_idx_header(stream: IO[bytes], label: str) -> tuple[tuple[int, ...], int]:
    """Read an IDX header from the start of ``stream``: the declared shape and the data offset.

    Raises:
        InputError: bad magic number, a type other than unsigned bytes, or a truncated header.
    """
    head = stream.read(_HEADER_BYTES)
    if len(head) < _HEADER_BYTES or head[0] != 0 or head[1] != 0:
        raise InputError(f"{label} is not an IDX file (bad magic number)")
    if head[2] != IDX_UNSIGNED_BYTE:
        raise InputError(f"{label}: IDX type 0x{head[2]:02x} is not unsigned bytes")
    rank = head[3]
    dims = stream.read(_DIM_BYTES * rank)
    if rank == 0 or len(dims) < _DIM_BYTES * rank:
        raise InputError(f"{label}: truncated IDX header")
    shape = tuple(
        int.from_bytes(dims[start : start + _DIM_BYTES], "big")
        for start in range(0, len(dims), _DIM_BYTES)
    )
    return shape, _HEADER_BYTES + _DIM_BYTES * rank


def open_idx_stream(path: Path) -> IO[bytes]:
    """Open an IDX file for reading, decompressing it on the fly when its name ends in ``.gz``."""
    if is_gzip_path(path):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def is_gzip_path(path: Path) -> bool:
    """True for names ending in ``.gz`` (in any case)."""
    return path.suffix.lower() == GZIP_SUFFIX


def is_idx_path(path: Path) -> bool:
    """True for names like ``t10k-images-idx3-ubyte`` or ``train-labels.idx1-ubyte.gz``."""
    name = path.name.lower()
    return "idx" in name and "ubyte" in name
