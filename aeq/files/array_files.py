"""Array files read as streams of rows: ``.npy``, members of ``.npz``, MNIST IDX (plain or ``.gz``).

The bottom of the readers: it knows file formats, not what the arrays mean
(``aeq.files.image_parts`` reads images from them, ``aeq.files.code_files`` codes).

Every kind is opened the same way: its header is parsed (never the data) and checked against what
the file can hold, and ``rows`` reads the data front to back in blocks, so memory stays at one
block however big the file. A header is never trusted for more than the file's size: plain files
must hold exactly the bytes it declares; a ``.npz`` member's header must match the member's
uncompressed size in the zip directory, and that size what its compressed bytes can unpack to; a
gzipped IDX file cannot declare more than ``MAX_DEFLATE_RATIO`` times its size. What a compressed
stream really holds is known only by reading it: reading stops at the first short block.
Sizes are Python integers, so no declared shape can overflow them. Nothing here
unpickles: ``.npy`` headers are parsed with ``numpy.lib.format`` and object dtypes are refused
before any data is read.

Plain ``.npy`` and IDX files are read with ordinary positioned reads rather than ``np.memmap``:
pages of a memory map that has been read stay in the process's resident set until it is closed,
which would make a client reading a 100,000-image file look 80 MB bigger than one reading 10,000.
``.npz`` members (stored or deflated) and ``.gz`` files are decompressed as a stream.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from aeq.core.errors import InputError
from aeq.core.idx import is_gzip_path, open_idx_stream, read_idx_header

# Rows per read while streaming: 4 MiB of uint8 images, bounded for float64 too.
BLOCK_BYTES = 4 * 1024 * 1024
# Deflate (zip, gzip) packs at most about 1032 bytes into one: 258-byte matches at 2 bits each.
MAX_DEFLATE_RATIO = 1032
# The array of item names a .npz may hold beside its images or codes (as aeq writes).
NPZ_NAMES_KEY = "names"
_NPY_SUFFIX = ".npy"
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError)
# gzip.BadGzipFile is an OSError; zlib.error surfaces from corrupt deflate data in either format.
_STREAM_ERRORS = (*_ZIP_ERRORS, zlib.error)


@dataclass(frozen=True)
class ArrayFile:
    """One array in a file, known by its header.

    Attributes:
        path: the file (for a ``.npz`` member, the archive).
        label: how messages name it: the path, plus ``[key]`` for a ``.npz`` member.
        shape: the array's shape as the header declares it.
        dtype: its element type (native or not; conversions handle byte order).
        open_data: opens a binary stream positioned at the first data byte.
        data_bytes: bytes of data the file holds after the header, where that is known without
            reading it (plain files); ``None`` for compressed streams.
    """

    path: Path
    label: str
    shape: tuple[int, ...]
    dtype: np.dtype
    open_data: Callable[[], AbstractContextManager[IO[bytes]]]
    data_bytes: int | None

    @property
    def count(self) -> int:
        """Number of rows (items) along the first axis."""
        return self.shape[0] if self.shape else 0

    @property
    def row_bytes(self) -> int:
        """Bytes one row occupies in the file."""
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def rows(self, block_rows: int | None = None, check_end: bool = False) -> Iterator[np.ndarray]:
        """Yield the rows front to back as arrays of shape ``(k, *shape[1:])``.

        Args:
            block_rows: rows per block (default: about ``BLOCK_BYTES`` worth).
            check_end: after the last row, read on to the end of the stream, which makes gzip and
                zip verify their checksums, and refuse data beyond what the header declares.

        Raises:
            InputError: the data ends before (or goes on after) the header's promise, or
                decompression fails.
        """
        block = block_rows or max(1, BLOCK_BYTES // max(self.row_bytes, 1))
        try:
            with self.open_data() as stream:
                for start in range(0, self.count, block):
                    count = min(block, self.count - start)
                    yield self._read_block(stream, start, count)
                if check_end and stream.read(1):
                    raise InputError(f"{self.label} holds more data than its header declares")
        except _STREAM_ERRORS as error:
            raise InputError(f"cannot read {self.label}: {error}") from None

    def value(self) -> np.generic:
        """The one value of a 0-d array.

        Raises:
            InputError: the data is missing or does not decompress.
        """
        try:
            with self.open_data() as stream:
                data = stream.read(self.dtype.itemsize)
        except _STREAM_ERRORS as error:
            raise InputError(f"cannot read {self.label}: {error}") from None
        if self.shape != () or len(data) != self.dtype.itemsize:
            raise InputError(f"{self.label} is truncated")
        return np.frombuffer(data, self.dtype)[0]

    def _read_block(self, stream: IO[bytes], start: int, count: int) -> np.ndarray:
        wanted = count * self.row_bytes
        data = stream.read(wanted)
        if len(data) != wanted:
            raise InputError(
                f"{self.label} is truncated: its header promises {self.count} items, "
                f"the data ends after {start + len(data) // max(self.row_bytes, 1)}"
            )
        return np.frombuffer(data, self.dtype).reshape((count, *self.shape[1:]))


def open_npy(path: Path) -> ArrayFile:
    """Parse a ``.npy`` header.

    Raises:
        InputError: not a ``.npy`` file, an object/structured dtype, Fortran order, or truncated.
    """
    try:
        with path.open("rb") as stream:
            shape, dtype, offset = _read_npy_header(stream, str(path))
            size = path.stat().st_size
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None

    @contextmanager
    def open_data() -> Iterator[IO[bytes]]:
        with path.open("rb") as stream:
            stream.seek(offset)
            yield stream

    array = ArrayFile(path, str(path), shape, dtype, open_data, size - offset)
    _check_size(array, size - offset)
    return array


def npz_members(path: Path) -> list[str]:
    """Names of the arrays in a ``.npz`` archive (member names without ``.npy``).

    Raises:
        InputError: the file is not a zip archive or holds no ``.npy`` members.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except _ZIP_ERRORS as error:
        raise InputError(f"{path} is not a readable .npz archive: {error}") from None
    keys = [name[: -len(_NPY_SUFFIX)] for name in names if name.endswith(_NPY_SUFFIX)]
    if not keys:
        raise InputError(f"{path} holds no arrays (no .npy members in the archive)")
    return keys


def open_npz_member(path: Path, key: str) -> ArrayFile:
    """Parse the header of one array of a ``.npz`` archive; its data is streamed later.

    Raises:
        InputError: the member is missing, unreadable or not a plain numeric array.
    """
    label = f"{path}[{key}]"

    @contextmanager
    def open_member() -> Iterator[IO[bytes]]:
        with zipfile.ZipFile(path) as archive, archive.open(key + _NPY_SUFFIX) as member:
            yield member

    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(key + _NPY_SUFFIX)
            _check_member_size(info, path.stat().st_size, label)
            with archive.open(info) as member:
                shape, dtype, offset = _read_npy_header(member, label)
    except (*_STREAM_ERRORS, KeyError) as error:
        raise InputError(f"cannot read {label}: {error}") from None

    @contextmanager
    def open_data() -> Iterator[IO[bytes]]:
        with open_member() as member:
            _read_npy_header(member, label)
            yield member

    array = ArrayFile(path, label, shape, dtype, open_data, None)
    _check_size(array, info.file_size - offset, "the archive member")
    return array


def open_idx(path: Path) -> ArrayFile:
    """Parse an MNIST IDX header (plain or ``.gz``) with ``aeq.core.idx``.

    Raises:
        InputError: bad magic number, a type other than unsigned bytes, or truncated.
    """
    try:
        with open_idx_stream(path) as stream:
            shape, offset = read_idx_header(stream, str(path))
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"cannot read IDX file {path}: {error}") from None

    @contextmanager
    def open_data() -> Iterator[IO[bytes]]:
        with open_idx_stream(path) as stream:
            stream.read(offset)
            yield stream

    size = path.stat().st_size
    gzipped = is_gzip_path(path)
    array = ArrayFile(
        path, str(path), shape, np.dtype(np.uint8), open_data, None if gzipped else size - offset
    )
    if gzipped:
        _check_unpacks_to(array, size)
    else:
        _check_size(array, size - offset)
    return array


def npz_names(path: Path, count: int) -> list[str]:
    """Item names stored in a ``.npz`` as a ``names`` array of ``count`` strings.

    Raises:
        InputError: the array is not ``count`` strings.
    """
    member = open_npz_member(path, NPZ_NAMES_KEY)
    if member.dtype.kind != "U" or member.shape != (count,):
        raise InputError(
            f"{member.label} must hold {count} strings (one name per item), "
            f"not {member.dtype} of shape {member.shape}"
        )
    return [str(name) for block in member.rows() for name in block]


def _read_npy_header(stream: IO[bytes], label: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset from a ``.npy`` header, refusing anything but plain numbers."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            # 2.0 and 3.0 share the 4-byte header length; 3.0 only allows UTF-8 field names.
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    except (ValueError, SyntaxError, EOFError) as error:
        raise InputError(f"{label} is not a valid .npy array: {error}") from None
    if dtype.hasobject:
        raise InputError(
            f"{label} holds Python objects (dtype {dtype}); aeq never unpickles: "
            "save a numeric array (uint8 0-255 or float 0-1)"
        )
    if dtype.names is not None or dtype.subdtype is not None:
        raise InputError(f"{label} has a structured dtype ({dtype}); save a plain numeric array")
    if fortran and len(shape) > 1:
        raise InputError(
            f"{label} is stored in Fortran order; save it with np.ascontiguousarray(...) first"
        )
    return tuple(int(dim) for dim in shape), dtype, stream.tell()


def _check_size(array: ArrayFile, data_bytes: int, holder: str = "the file") -> None:
    """Refuse a header that declares other than the ``data_bytes`` the file (or member) holds."""
    expected = math.prod(array.shape) * array.dtype.itemsize
    if data_bytes != expected:
        problem = "is truncated" if data_bytes < expected else "has trailing data"
        raise InputError(
            f"{array.label} {problem}: its header promises {expected} bytes of data, "
            f"{holder} holds {data_bytes}"
        )


def _check_unpacks_to(array: ArrayFile, compressed_bytes: int) -> None:
    """Refuse a gzipped header declaring more data than ``compressed_bytes`` can unpack to."""
    expected = math.prod(array.shape) * array.dtype.itemsize
    if expected > compressed_bytes * MAX_DEFLATE_RATIO:
        raise InputError(
            f"{array.label} is truncated: its header promises {expected} bytes of data, more "
            f"than {compressed_bytes} compressed bytes can hold (at most {MAX_DEFLATE_RATIO}:1)"
        )


def _check_member_size(info: zipfile.ZipInfo, archive_bytes: int, label: str) -> None:
    """Refuse a zip directory entry whose sizes the archive cannot hold, before reading it."""
    if info.compress_size > archive_bytes:
        raise InputError(
            f"{label} is truncated: the archive lists {info.compress_size} compressed bytes, "
            f"the file holds {archive_bytes}"
        )
    ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: MAX_DEFLATE_RATIO}.get(info.compress_type)
    if ratio is not None and info.file_size > info.compress_size * ratio:
        raise InputError(
            f"{label} is corrupt: the archive says {info.compress_size} compressed bytes unpack "
            f"to {info.file_size}, more than they can hold"
        )
