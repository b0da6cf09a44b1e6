"""What a job reads from and writes to memory: the NumPy arrays of the Python API.

``aeq.denoise(array)`` and its siblings take images or codes as arrays instead of files. An array
goes through the file readers' own checks (``aeq.files.image_parts``), so it is accepted or
refused exactly as the same array saved to a ``.npy`` would be: uint8 0-255, other integers
0-255, or floats in [0, 1] (scaled by 255 and rounded); N x 784, N x H x W, N x H x W x 1 or
N x 1 x H x W; NaN/inf and out-of-range values are refused naming the first bad item. Codes must
be a non-empty, finite N x code_dim float array, as ``aeq decode`` requires of a codes file.

Results come back through ``ArrayWriter``, the in-memory ``ChunkWriter``: chunks land at their
item offset in one preallocated array, in whatever order they finish.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from aeq.core.catalog import IMAGE_SIDE, PIXELS_PER_IMAGE, Operation
from aeq.core.errors import InputError, JobError
from aeq.files.array_files import BLOCK_BYTES
from aeq.files.image_files import fit_to_side
from aeq.files.image_parts import ImagePart, _check_pixel_values, _to_uint8
from aeq.files.image_parts import image_grid as check_grid
from aeq.files.inputs import ImageSource
from aeq.files.names import item_names, unique_names
from aeq.queue.protocol import output_layout

IMAGES_LABEL = "the images array"
CODES_LABEL = "the codes array"
# Item names of arrays (``images_00000`` ...): arrays have no file names to carry.
IMAGES_STEM = "images"
CODES_STEM = "codes"


@dataclass
class ArrayPart:
    """An in-memory array of images: an ``ImagePart`` like a ``.npy`` file's, without the file."""

    array: np.ndarray = field(repr=False)
    raw_names: list[str]
    resize: bool
    label: str = IMAGES_LABEL
    grid: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.grid = image_grid(self.array, self.label, self.resize)

    @property
    def count(self) -> int:
        """Number of images in the array."""
        return len(self.array)

    def validate(self) -> None:
        """Scan every value (NaN/inf, range) a block at a time, so the scan's temporaries stay
        small however large the array."""
        for start, block in _blocks(self.array, _rows_per_block(self.array)):
            _check_pixel_values(block, self.label, start)

    def blocks(self, max_rows: int) -> Iterator[np.ndarray]:
        """Yield ``max_rows`` images at a time, converted to uint8 28 x 28."""
        for _, block in _blocks(self.array, max_rows):
            gray = _to_uint8(block).reshape(len(block), *self.grid)
            if self.grid != (IMAGE_SIDE, IMAGE_SIDE):
                gray = np.stack([fit_to_side(item, True, self.label) for item in gray])
            yield gray


def images_from_array(array: np.ndarray, resize: bool = False) -> ImageSource:
    """Check an array of images completely and return it as an ``ImageSource``.

    Args:
        array: N images in one of the module's shapes and dtypes.
        resize: resize images that are not 28 x 28 instead of refusing them.

    Raises:
        InputError: the dtype, shape or values are not images aeq reads.
    """
    names = item_names(IMAGES_STEM, len(array) if array.ndim else 0)
    part: ImagePart = ArrayPart(array, names, resize)
    part.validate()
    return ImageSource(part.count, unique_names(names), [], [part])


def image_grid(array: np.ndarray, label: str, resize: bool) -> tuple[int, int]:
    """(height, width) of each image, after the checks ``.npy`` image files get.

    Raises:
        InputError: not numbers, no images, a shape that is not N images, or (without
            ``resize``) images that are not 28 x 28.
    """
    return check_grid(
        array.shape,
        array.dtype,
        label,
        resize,
        resize_hint="pass resize=True to resize them",
        shape_hint=_shape_hint(array.shape),
    )


def _shape_hint(shape: tuple[int, ...]) -> str:
    if int(np.prod(shape)) == PIXELS_PER_IMAGE and len(shape) <= 3:
        return " (one image? add the batch axis: images[None])"
    if len(shape) == 2:
        return " (codes? decode them with aeq.decode)"
    return ""


@dataclass
class ArrayCodes:
    """Codes held in memory, checked and ready to be read in chunks (a ``ChunkSource``).

    Attributes:
        total: number of codes.
        code_dim: length of each code.
        names: one name per code (``codes_00000`` ...).
    """

    total: int
    code_dim: int
    names: list[str]
    array: np.ndarray = field(repr=False)

    def chunks(self, size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(names, codes)`` with codes float32 ``(n, code_dim)``, ``size`` per chunk but
        the last."""
        if size < 1:
            raise ValueError(f"chunk size must be positive, not {size}")
        for start, block in _blocks(self.array, size):
            yield self.names[start : start + len(block)], block.astype(np.float32)


def codes_from_array(array: np.ndarray) -> ArrayCodes:
    """Check an array of codes completely (the checks a codes file gets) and wrap it.

    Raises:
        InputError: not a non-empty 2-D float array, or NaN/inf values.
    """
    if array.dtype.kind != "f" or array.ndim != 2 or 0 in array.shape:
        raise InputError(
            f"{CODES_LABEL} holds {array.dtype} of shape {array.shape}; codes must be a "
            "non-empty N x code_dim float array (as aeq.encode returns)"
        )
    for start, block in _blocks(array, _rows_per_block(array)):
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            first = start + int(np.argmin(finite))
            raise InputError(f"{CODES_LABEL} holds NaN or infinite values (first in code {first})")
    names = unique_names(item_names(CODES_STEM, len(array)))
    return ArrayCodes(len(array), array.shape[1], names, array)


class ArrayWriter:
    """The in-memory ``ChunkWriter``: each chunk is copied to its offset in one result array.

    Attributes:
        array: the result, preallocated; complete once ``result()`` returns it.
        names: the item names the chunks carried, in item order.
    """

    def __init__(self, total: int, row_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.array = np.empty((total, *row_shape), dtype)
        self.names = [""] * total
        self._written = np.zeros(total, dtype=bool)

    @classmethod
    def for_job(cls, op: Operation, total: int, code_dim: int) -> ArrayWriter:
        """A writer for ``op``'s output: uint8 ``(N, 28, 28)`` images, float32 codes for encode,
        float32 ``(N, len(SCORE_METRICS))`` for score (``aeq.queue.protocol.output_layout``)."""
        dtype, shape = output_layout(op, total, code_dim)
        return cls(total, shape[1:], np.dtype(dtype))

    @property
    def items_written(self) -> int:
        """How many items have arrived so far."""
        return int(np.count_nonzero(self._written))

    def write(self, start: int, names: Sequence[str], array: np.ndarray) -> None:
        """Store the items ``start .. start + len(array) - 1``; chunks may come in any order.

        Raises:
            ValueError: the chunk does not fit the result (shape, dtype, range, name count), or
                one of its items was written before.
        """
        row_shape = self.array.shape[1:]
        if array.dtype != self.array.dtype or array.shape[1:] != row_shape:
            raise ValueError(
                f"chunks must be {self.array.dtype} (n, *{row_shape}), "
                f"not {array.dtype} {array.shape}"
            )
        stop = start + len(array)
        if len(names) != len(array):
            raise ValueError(f"{len(names)} names for {len(array)} items")
        if start < 0 or stop > len(self.array):
            raise ValueError(f"items {start}..{stop - 1} are outside 0..{len(self.array) - 1}")
        if self._written[start:stop].any():
            raise ValueError(f"items {start}..{stop - 1} overlap items written before")
        self.array[start:stop] = array
        self.names[start:stop] = [str(name) for name in names]
        self._written[start:stop] = True

    def result(self) -> np.ndarray:
        """The complete result.

        Raises:
            JobError: some items never arrived.
        """
        missing = len(self.array) - self.items_written
        if missing:
            first = int(np.argmin(self._written))
            raise JobError(
                f"{missing} of {len(self.array)} items never arrived (first missing: item {first})"
            )
        return self.array


def _rows_per_block(array: np.ndarray) -> int:
    row_bytes = array[0].nbytes if len(array) else 1
    return max(1, BLOCK_BYTES // max(row_bytes, 1))


def _blocks(array: np.ndarray, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, array[start : start + rows])`` front to back."""
    for start in range(0, len(array), rows):
        yield start, array[start : start + rows]
