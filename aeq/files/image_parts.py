"""Parts of an image job: runs of items that come from one input, checked and then streamed.

A part is either some image files (decoded one by one) or one array of images (a ``.npy``, a
member of a ``.npz``, an MNIST IDX file). Arrays may be N x 784, N x H x W, N x H x W x 1 or
N x 1 x H x W, uint8 0-255, integers 0-255, or floats 0-1 (scaled by 255 and rounded); anything
else is refused with the reason. A ``.npz`` gives the array named ``images``, else its only
array, else the one conventional name among ``NPZ_IMAGE_KEYS`` it holds; a ``names`` array of
strings beside the images (as aeq writes) names the items.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from aeq.core.catalog import IMAGE_SIDE, PIXELS_PER_IMAGE
from aeq.core.errors import InputError
from aeq.files.array_files import (
    NPZ_NAMES_KEY,
    ArrayFile,
    npz_members,
    npz_names,
    open_idx,
    open_npy,
    open_npz_member,
)
from aeq.files.image_files import MAX_SOURCE_PIXELS, decode_image, fit_to_side
from aeq.files.names import NumberedNames

NPZ_IMAGE_KEYS = ("images", "x_test", "x_train", "x", "arr_0")
_GRAY_MAX = 255


class ImagePart(Protocol):
    """A run of items from one input: some image files, or one array."""

    @property
    def raw_names(self) -> Sequence[str]:
        """One name per item, as the input gives it (``aeq.files.names`` makes it safe)."""

    @property
    def count(self) -> int:
        """Number of items in this part."""

    def validate(self) -> None:
        """Read every item once and raise ``InputError`` on the first problem."""

    def blocks(self, max_rows: int) -> Iterator[np.ndarray]:
        """Yield the items in order as uint8 ``(k, 28, 28)`` arrays, ``k <= max_rows``."""


@dataclass
class ImageFiles:
    """Consecutive image files, decoded one by one (once to check, again to send)."""

    files: list[Path]
    raw_names: list[str]
    resize: bool

    @property
    def count(self) -> int:
        """Number of files."""
        return len(self.files)

    def validate(self) -> None:
        """Decode every file completely; ``InputError`` names the first that fails."""
        for path in self.files:
            decode_image(path, self.resize)

    def blocks(self, max_rows: int) -> Iterator[np.ndarray]:
        """Decode the files again, ``max_rows`` at a time."""
        for start in range(0, len(self.files), max_rows):
            batch = self.files[start : start + max_rows]
            pixels = np.empty((len(batch), IMAGE_SIDE, IMAGE_SIDE), np.uint8)
            for row, path in enumerate(batch):
                pixels[row] = decode_image(path, self.resize)
            yield pixels


@dataclass
class ImageArray:
    """One array of images, streamed from its file."""

    array: ArrayFile
    raw_names: Sequence[str]
    resize: bool
    grid: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.grid = _image_grid(self.array, self.resize)

    @property
    def count(self) -> int:
        """Number of images in the array."""
        return self.array.count

    def validate(self) -> None:
        """Scan every value (NaN/inf, range) and the data's length; uint8 plain files need
        neither: any byte is a pixel, and the file's size was checked when it was opened."""
        if self.array.dtype == np.uint8 and self.array.data_bytes is not None:
            return
        start = 0
        for block in self.array.rows(check_end=True):
            _check_pixel_values(block, self.array.label, start)
            start += len(block)

    def blocks(self, max_rows: int) -> Iterator[np.ndarray]:
        """Read ``max_rows`` images at a time, converted to uint8 28 x 28."""
        for block in self.array.rows(block_rows=max_rows):
            gray = _to_uint8(block).reshape(len(block), *self.grid)
            if self.grid != (IMAGE_SIDE, IMAGE_SIDE):
                gray = np.stack([fit_to_side(item, True, self.array.label) for item in gray])
            yield gray


def open_image_array(path: Path, kind: str, stem: str, resize: bool) -> ImageArray:
    """Open the images of a ``.npy``, ``.npz`` or IDX file (``kind``), named after ``stem``.

    Raises:
        InputError: the file holds no usable array of images (dtype, shape, labels, keys).
    """
    if kind == "npy":
        array, stored_names = open_npy(path), None
    elif kind == "idx":
        array, stored_names = _open_idx_images(path), None
    else:
        keys = npz_members(path)
        array = open_npz_member(path, _npz_image_key(path, keys))
        stored_names = npz_names(path, array.count) if NPZ_NAMES_KEY in keys else None
    return ImageArray(array, stored_names or NumberedNames(stem, array.count), resize)


def _open_idx_images(path: Path) -> ArrayFile:
    array = open_idx(path)
    if len(array.shape) == 1:
        raise InputError(
            f"{path} is an IDX labels file (one number per item); pass the images file "
            "(e.g. t10k-images-idx3-ubyte.gz)"
        )
    return array


def _npz_image_key(path: Path, keys: list[str]) -> str:
    if NPZ_IMAGE_KEYS[0] in keys:
        return NPZ_IMAGE_KEYS[0]
    if len(keys) == 1:
        return keys[0]
    candidates = [key for key in NPZ_IMAGE_KEYS if key in keys]
    if len(candidates) == 1:
        return candidates[0]
    raise InputError(
        f"{path} holds several arrays ({', '.join(sorted(keys))}) and aeq cannot tell which are "
        f"the images: name that array 'images' or save it alone"
    )


def _image_grid(array: ArrayFile, resize: bool) -> tuple[int, int]:
    shape = array.shape
    hint = " (codes? decode them with aeq decode)" if len(shape) == 2 else ""
    return image_grid(shape, array.dtype, array.label, resize, shape_hint=hint)


def image_grid(
    shape: tuple[int, ...],
    dtype: np.dtype,
    label: str,
    resize: bool,
    resize_hint: str = "pass --resize to resize them",
    shape_hint: str = "",
) -> tuple[int, int]:
    """(height, width) of each item; shapes N x 784, N x H x W, N x H x W x 1 or N x 1 x H x W.

    The one check of an array's images, for files and for arrays given in memory (which word
    their hints for Python: ``resize_hint``, ``shape_hint``).

    Raises:
        InputError: not numbers, no images, a shape that is not N images, items too large, or
            (without ``resize``) items that are not 28 x 28.
    """
    if dtype.kind not in "uif":
        raise InputError(f"{label} has dtype {dtype}; images must be uint8 (0-255) or float (0-1)")
    if not shape or shape[0] == 0:
        raise InputError(f"{label} holds no images (shape {shape})")
    if len(shape) == 2 and shape[1] == PIXELS_PER_IMAGE:
        return IMAGE_SIDE, IMAGE_SIDE
    grid = _grid_of(shape)
    if grid is None:
        raise InputError(
            f"{label} has shape {shape}; images must be N x {IMAGE_SIDE} x {IMAGE_SIDE} "
            f"or N x {PIXELS_PER_IMAGE}{shape_hint}"
        )
    if grid[0] * grid[1] > MAX_SOURCE_PIXELS:  # one would be a single read of its own
        raise InputError(f"{label} holds {grid[1]}x{grid[0]} images, too large to be digit images")
    if not resize and grid != (IMAGE_SIDE, IMAGE_SIDE):
        raise InputError(
            f"{label} holds {grid[1]}x{grid[0]} images, not {IMAGE_SIDE}x{IMAGE_SIDE} "
            f"({resize_hint})"
        )
    return grid


def _grid_of(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(height, width) from N x H x W, N x H x W x 1 or N x 1 x H x W; None for other shapes."""
    if len(shape) == 3:
        grid = shape[1:3]
    elif len(shape) == 4 and shape[3] == 1:
        grid = shape[1:3]
    elif len(shape) == 4 and shape[1] == 1:
        grid = shape[2:4]
    else:
        return None
    return (grid[0], grid[1]) if grid[0] and grid[1] else None


def _check_pixel_values(block: np.ndarray, label: str, start: int) -> None:
    """Refuse NaN/inf, floats outside [0, 1] and integers outside 0-255, naming the first item."""
    if block.dtype == np.uint8:
        return
    per_item = block.reshape(len(block), -1)
    if block.dtype.kind == "f":
        finite = np.isfinite(per_item).all(axis=1)
        if not finite.all():
            first = start + int(np.argmin(finite))
            raise InputError(f"{label} holds NaN or infinite values (first in item {first})")
    upper, allowed = (1.0, "floats must be in [0, 1]")
    if block.dtype.kind != "f":
        upper, allowed = (_GRAY_MAX, "integers must be in 0-255")
    low, high = per_item.min(), per_item.max()
    if low < 0 or high > upper:
        bad = (per_item.min(axis=1) < 0) | (per_item.max(axis=1) > upper)
        raise InputError(
            f"{label} holds values from {low:g} to {high:g} (first bad in item "
            f"{start + int(np.argmax(bad))}); {allowed}: scale floats to 0-1 or save uint8 0-255"
        )


def _to_uint8(block: np.ndarray) -> np.ndarray:
    """Checked pixel values as uint8: floats 0-1 rounded to 0-255, integers taken as they are."""
    if block.dtype.kind == "f":
        return np.rint(block.astype(np.float32) * _GRAY_MAX).astype(np.uint8)
    return block.astype(np.uint8, copy=False)
