"""What a job reads: image and code inputs, checked completely before anything is queued.

``open_images`` takes the CLI's INPUT arguments (image files, folders, ``.npy``/``.npz`` arrays,
MNIST IDX files), checks every item (decoding each image fully, scanning each array's values) and
returns an ``ImageSource`` that yields the items again, lazily, in chunks of uint8 28 x 28 pixels.
``open_codes`` does the same for the ``.npy``/``.npz`` codes ``aeq encode`` writes. Neither holds a
whole input in memory: images are decoded a chunk at a time and arrays are streamed (see
``worker.array_files``), so a 100,000-item job costs about what a 10,000-item one does. The price
is that images are decoded twice (once to check, once to send); for 28 x 28 PNGs that is cheap.

docs/INPUTS.md lists the formats, the folder rules and the error each bad file gets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from common.catalog import IMAGE_SIDE, PIXELS_PER_IMAGE
from common.errors import InputError
from common.idx import is_idx_path
from worker import names as item_naming
from worker.array_files import ArrayFile, npz_members, open_idx, open_npy, open_npz_member
from worker.image_files import IMAGE_SUFFIXES, decode_image, fit_to_side

ARRAY_SUFFIXES = frozenset({".npy", ".npz"})
# A .npz of images: the array named "images" (what aeq writes), else its only array, else the one
# of these conventional names it holds.
NPZ_IMAGE_KEYS = ("images", "x_test", "x_train", "x", "arr_0")
NPZ_NAMES_KEY = "names"
# A .npz of codes: "codes" (what aeq writes) or its only array; metadata beside it.
NPZ_CODES_KEY = "codes"
NPZ_MODEL_KEY = "model"
NPZ_VERSION_KEY = "version"
SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "aeq-codes"
_GRAY_MAX = 255


class ImagePart(Protocol):
    """A run of items from one input: some image files, or one array."""

    raw_names: list[str]

    @property
    def count(self) -> int:
        """Number of items in this part."""

    def validate(self) -> None:
        """Read every item once and raise ``InputError`` on the first problem."""

    def blocks(self, max_rows: int) -> Iterator[np.ndarray]:
        """Yield the items in order as uint8 ``(k, 28, 28)`` arrays, ``k <= max_rows``."""


@dataclass
class ImageSource:
    """The items of all INPUT arguments, in order, checked and ready to be read in chunks.

    Attributes:
        total: number of items over all inputs.
        names: one safe, unique name per item (``worker.names``), in item order.
        skipped: files inside input folders that were neither images nor arrays (hidden files
            and folders are ignored without being listed).
    """

    total: int
    names: list[str]
    skipped: list[Path]
    parts: list[ImagePart] = field(repr=False)

    def chunks(self, size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(names, pixels)`` with pixels uint8 ``(n, 28, 28)``; every chunk holds ``size``
        items but the last. Reads lazily: only about one chunk is in memory at a time.

        Raises:
            InputError: a file changed since it was checked and no longer reads.
        """
        if size < 1:
            raise ValueError(f"chunk size must be positive, not {size}")
        blocks = (block for part in self.parts for block in part.blocks(size))
        pixels = _rechunk(blocks, size, (IMAGE_SIDE, IMAGE_SIDE), np.dtype(np.uint8))
        for start, chunk in zip(range(0, self.total, size), pixels, strict=True):
            yield self.names[start : start + len(chunk)], chunk


@dataclass
class CodeSource:
    """Codes written by ``aeq encode`` (or any float array of N codes), ready to be decoded.

    Attributes:
        total: number of codes.
        code_dim: length of each code.
        model: the model that made them, when the file says so.
        version: that model's version, when the file says so.
        names: one safe, unique name per code.
    """

    total: int
    code_dim: int
    model: str | None
    version: int | None
    names: list[str]
    array: ArrayFile = field(repr=False)

    def chunks(self, size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(names, codes)`` with codes float32 ``(n, code_dim)``, ``size`` per chunk but
        the last, streamed from the file."""
        if size < 1:
            raise ValueError(f"chunk size must be positive, not {size}")
        blocks = (block.astype(np.float32) for block in self.array.rows(block_rows=size))
        for start, chunk in zip(range(0, self.total, size), blocks, strict=True):
            yield self.names[start : start + len(chunk)], chunk


def open_images(paths: Sequence[Path], resize: bool = False) -> ImageSource:
    """Check every INPUT argument and return its items as one ``ImageSource``.

    Args:
        paths: image files, folders (searched recursively, in sorted order), ``.npy``/``.npz``
            arrays and MNIST IDX files; their items are concatenated in this order.
        resize: resize images that are not 28 x 28 instead of refusing them.

    Raises:
        InputError: on the first unusable input, naming it and what is wrong with it.
    """
    if not paths:
        raise InputError("no input given: name image files, folders, .npy/.npz arrays or IDX files")
    parts: list[ImagePart] = []
    skipped: list[Path] = []
    for path in map(Path, paths):
        new_parts, new_skipped = _parts_of(path, resize)
        for part in new_parts:
            part.validate()
        parts.extend(new_parts)
        skipped.extend(new_skipped)
    raw_names = [name for part in parts for name in part.raw_names]
    return ImageSource(len(raw_names), item_naming.unique_names(raw_names), skipped, parts)


def open_codes(path: Path) -> CodeSource:
    """Check a codes file (``.npy`` with its ``.npy.json`` sidecar, or ``.npz``) and open it.

    Without metadata the names default to ``<stem>_<index>`` and model/version are ``None``.

    Raises:
        InputError: missing, unreadable, not a 2-D float array, NaN/inf values, or metadata
            that does not fit the array.
    """
    path = Path(path)
    _refuse_missing_or_empty(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = open_npy(path)
        meta = _read_sidecar(sidecar_path(path))
    elif suffix == ".npz":
        array, meta = _open_codes_npz(path)
    else:
        raise InputError(f"{path}: codes must be a .npy or .npz file (as aeq encode writes)")
    _check_codes(array)
    raw_names = meta.get("names") or item_naming.item_names(_stem(path), array.count)
    _check_meta(path, array, raw_names, meta)
    return CodeSource(
        total=array.count,
        code_dim=array.shape[1],
        model=meta.get("model"),
        version=meta.get("version"),
        names=item_naming.unique_names(raw_names),
        array=array,
    )


def sidecar_path(codes: Path) -> Path:
    """Where the metadata of a ``.npy`` codes file lives: ``codes.npy`` -> ``codes.npy.json``."""
    return codes.with_name(codes.name + SIDECAR_SUFFIX)


def input_kind(path: Path) -> str | None:
    """``image``, ``npy``, ``npz``, ``idx``, or ``None`` for files aeq does not read."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in ARRAY_SUFFIXES:
        return suffix[1:]
    if is_idx_path(path):
        return "idx"
    return None


# --- Inputs into parts ---------------------------------------------------------------------


@dataclass
class _ImageFiles:
    """Consecutive image files; decoded one by one."""

    files: list[Path]
    raw_names: list[str]
    resize: bool

    @property
    def count(self) -> int:
        return len(self.files)

    def validate(self) -> None:
        for path in self.files:
            decode_image(path, self.resize)

    def blocks(self, max_rows: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self.files), max_rows):
            batch = self.files[start : start + max_rows]
            pixels = np.empty((len(batch), IMAGE_SIDE, IMAGE_SIDE), np.uint8)
            for row, path in enumerate(batch):
                pixels[row] = decode_image(path, self.resize)
            yield pixels


@dataclass
class _ImageArray:
    """One array of images (``.npy``, ``.npz`` member or IDX file), streamed."""

    array: ArrayFile
    raw_names: list[str]
    resize: bool
    grid: tuple[int, int] = (IMAGE_SIDE, IMAGE_SIDE)

    def __post_init__(self) -> None:
        self.grid = _image_grid(self.array, self.resize)

    @property
    def count(self) -> int:
        return self.array.count

    def validate(self) -> None:
        if self.array.dtype == np.uint8 and self.array.data_bytes is not None:
            return  # any byte is a valid pixel, and the file's size was checked on opening
        start = 0
        for block in self.array.rows(check_end=True):
            _check_pixel_values(block, self.array.label, start)
            start += len(block)

    def blocks(self, max_rows: int) -> Iterator[np.ndarray]:
        for block in self.array.rows(block_rows=max_rows):
            gray = _to_uint8(block).reshape(len(block), *self.grid)
            if self.grid != (IMAGE_SIDE, IMAGE_SIDE):
                gray = np.stack([fit_to_side(item, True, self.array.label) for item in gray])
            yield gray


def _parts_of(path: Path, resize: bool) -> tuple[list[ImagePart], list[Path]]:
    """The parts one INPUT argument contributes, and the folder files it skipped."""
    if path.is_dir():
        return _folder_parts(path, resize)
    _refuse_missing_or_empty(path)
    kind = input_kind(path)
    if kind is None:
        raise InputError(
            f"{path} is not an input aeq reads (PNG, JPEG or BMP images, .npy/.npz arrays, "
            "MNIST IDX files, or folders of them)"
        )
    return [_file_part(path, kind, _stem(path), resize)], []


def _file_part(path: Path, kind: str, stem: str, resize: bool) -> ImagePart:
    if kind == "image":
        return _ImageFiles([path], [stem], resize)
    _refuse_missing_or_empty(path)
    array, raw_names = _open_image_array(path, kind)
    return _ImageArray(array, raw_names or item_naming.item_names(stem, array.count), resize)


def _folder_parts(folder: Path, resize: bool) -> tuple[list[ImagePart], list[Path]]:
    usable, skipped = _walk(folder)
    if not usable:
        raise InputError(
            f"folder {folder} holds no PNG/JPEG/BMP images or .npy/.npz/IDX arrays"
            + (f" ({len(skipped)} other files skipped)" if skipped else "")
        )
    parts: list[ImagePart] = []
    for path in usable:
        relative = path.relative_to(folder)
        stem = "/".join((*relative.parts[:-1], _stem(path)))
        kind = input_kind(path) or ""
        previous = parts[-1] if parts else None
        if kind == "image" and isinstance(previous, _ImageFiles):
            previous.files.append(path)
            previous.raw_names.append(stem)
        else:
            parts.append(_file_part(path, kind, stem, resize))
    return parts, skipped


def _walk(folder: Path) -> tuple[list[Path], list[Path]]:
    """Usable files under ``folder`` sorted by their relative path, and the files skipped.

    Hidden files and folders are ignored; symbolic links to folders are not followed (no loops);
    IDX labels files are skipped (a folder holding MNIST's files is read as its images).
    """

    def refuse(error: OSError) -> None:
        raise InputError(f"cannot read folder {error.filename}: {error.strerror}")

    usable: list[Path] = []
    skipped: list[Path] = []
    for root, folders, files in os.walk(folder, onerror=refuse):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(root, name)
            kind = input_kind(path)
            is_labels = kind == "idx" and "idx1" in name.lower()
            (skipped if kind is None or is_labels else usable).append(path)
    usable.sort(key=lambda path: path.relative_to(folder).parts)
    skipped.sort()
    return usable, skipped


def _open_image_array(path: Path, kind: str) -> tuple[ArrayFile, list[str] | None]:
    """The array of images a ``.npy``/``.npz``/IDX file holds, and names stored beside them."""
    if kind == "npy":
        return open_npy(path), None
    if kind == "idx":
        array = open_idx(path)
        if len(array.shape) == 1:
            raise InputError(
                f"{path} is an IDX labels file (one number per item); pass the images file "
                "(e.g. t10k-images-idx3-ubyte.gz)"
            )
        return array, None
    keys = npz_members(path)
    array = open_npz_member(path, _npz_image_key(path, keys))
    stored = _npz_names(path, array.count) if NPZ_NAMES_KEY in keys else None
    return array, stored


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


def _npz_names(path: Path, count: int) -> list[str]:
    """Item names stored in a ``.npz`` beside its images (``aeq`` writes them as ``names``)."""
    member = open_npz_member(path, NPZ_NAMES_KEY)
    if member.dtype.kind != "U" or member.shape != (count,):
        raise InputError(
            f"{member.label} must hold {count} strings (one name per image), "
            f"not {member.dtype} of shape {member.shape}"
        )
    return [str(name) for block in member.rows() for name in block]


def _image_grid(array: ArrayFile, resize: bool) -> tuple[int, int]:
    """(height, width) of each item; shapes N x 784, N x H x W, N x H x W x 1 or N x 1 x H x W."""
    shape = array.shape
    _check_numeric(array)
    if not shape or shape[0] == 0:
        raise InputError(f"{array.label} holds no images (shape {shape})")
    if len(shape) == 2 and shape[1] == PIXELS_PER_IMAGE:
        return IMAGE_SIDE, IMAGE_SIDE
    if len(shape) == 3 or (len(shape) == 4 and 1 in (shape[1], shape[3])):
        grid = (shape[2], shape[3]) if len(shape) == 4 and shape[1] == 1 else shape[1:3]
        height, width = int(grid[0]), int(grid[1])
        if height and width and (resize or (height, width) == (IMAGE_SIDE, IMAGE_SIDE)):
            return height, width
        if height and width:
            raise InputError(
                f"{array.label} holds {width}x{height} images, not {IMAGE_SIDE}x{IMAGE_SIDE} "
                "(pass --resize to resize them)"
            )
    hint = " (codes? decode them with aeq decode)" if len(shape) == 2 else ""
    raise InputError(
        f"{array.label} has shape {shape}; images must be N x {IMAGE_SIDE} x {IMAGE_SIDE} "
        f"or N x {PIXELS_PER_IMAGE}{hint}"
    )


def _check_numeric(array: ArrayFile) -> None:
    if array.dtype.kind not in "uif":
        raise InputError(
            f"{array.label} has dtype {array.dtype}; images must be uint8 (0-255) or float (0-1)"
        )


def _check_pixel_values(block: np.ndarray, label: str, start: int) -> None:
    """Refuse NaN/inf, floats outside [0, 1] and integers outside 0-255, naming the first item."""
    if block.dtype.kind == "f":
        finite = np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if not finite.all():
            first = start + int(np.argmin(finite))
            raise InputError(f"{label} holds NaN or infinite values (first in item {first})")
        low, high, allowed = float(block.min()), float(block.max()), "floats must be in [0, 1]"
        valid = 0.0 <= low and high <= 1.0
    elif block.dtype == np.uint8:
        return
    else:
        low, high, allowed = int(block.min()), int(block.max()), "integers must be in 0-255"
        valid = 0 <= low and high <= _GRAY_MAX
    if not valid:
        per_item = block.reshape(len(block), -1)
        upper = 1.0 if block.dtype.kind == "f" else _GRAY_MAX
        bad = (per_item.min(axis=1) < 0) | (per_item.max(axis=1) > upper)
        first = start + int(np.argmax(bad))
        raise InputError(
            f"{label} holds values from {low:g} to {high:g} (first bad in item {first}); "
            f"{allowed}: scale floats to 0-1 or save uint8 0-255"
        )


def _to_uint8(block: np.ndarray) -> np.ndarray:
    """Checked pixel values as uint8: floats 0-1 rounded to 0-255, integers taken as they are."""
    if block.dtype.kind == "f":
        return np.rint(block.astype(np.float32) * _GRAY_MAX).astype(np.uint8)
    return block.astype(np.uint8)


def _rechunk(
    blocks: Iterator[np.ndarray], size: int, row_shape: tuple[int, ...], dtype: np.dtype
) -> Iterator[np.ndarray]:
    """Regroup blocks of any length into arrays of exactly ``size`` rows (the last may be short)."""
    buffer = np.empty((size, *row_shape), dtype)
    filled = 0
    for block in blocks:
        used = 0
        while used < len(block):
            take = min(size - filled, len(block) - used)
            buffer[filled : filled + take] = block[used : used + take]
            filled += take
            used += take
            if filled == size:
                yield buffer
                buffer = np.empty((size, *row_shape), dtype)
                filled = 0
    if filled:
        yield buffer[:filled]


# --- Codes ---------------------------------------------------------------------------------


def _open_codes_npz(path: Path) -> tuple[ArrayFile, dict]:
    keys = npz_members(path)
    if NPZ_CODES_KEY in keys:
        key = NPZ_CODES_KEY
    elif len(keys) == 1:
        key = keys[0]
    else:
        raise InputError(
            f"{path} holds several arrays ({', '.join(sorted(keys))}) but none named 'codes'"
        )
    array = open_npz_member(path, key)
    meta: dict = {}
    if NPZ_NAMES_KEY in keys:
        meta["names"] = _npz_names(path, array.count)
    for meta_key, kind, convert in ((NPZ_MODEL_KEY, "U", str), (NPZ_VERSION_KEY, "iu", int)):
        if meta_key in keys:
            meta[meta_key] = _npz_scalar(path, meta_key, kind, convert)
    return array, meta


def _npz_scalar(path: Path, key: str, kinds: str, convert: type) -> object:
    member = open_npz_member(path, key)
    if member.shape != () or member.dtype.kind not in kinds:
        raise InputError(f"{member.label} must be a single {convert.__name__}, not {member.dtype}")
    with member.open_data() as stream:
        value = np.frombuffer(stream.read(member.dtype.itemsize), member.dtype)
    if value.size != 1:
        raise InputError(f"{member.label} is truncated")
    return convert(value[0])


def _read_sidecar(path: Path) -> dict:
    """The metadata aeq writes beside ``.npy`` codes; an empty dict when there is none."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the codes metadata {path}: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise InputError(f'{path} is not aeq codes metadata (no "format": "{SIDECAR_FORMAT}")')
    checks = {"names": list, "model": str, "version": int}
    for key, kind in checks.items():
        value = meta.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise InputError(f'{path}: "{key}" must be a {kind.__name__}')
    if any(not isinstance(name, str) for name in meta.get("names") or []):
        raise InputError(f'{path}: "names" must be a list of strings')
    return meta


def _check_codes(array: ArrayFile) -> None:
    if array.dtype.kind != "f" or len(array.shape) != 2 or 0 in array.shape:
        raise InputError(
            f"{array.label} holds {array.dtype} of shape {array.shape}; codes must be a "
            "non-empty N x code_dim float array (as aeq encode writes)"
        )
    start = 0
    for block in array.rows(check_end=True):
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            first = start + int(np.argmin(finite))
            raise InputError(f"{array.label} holds NaN or infinite values (first in code {first})")
        start += len(block)


def _check_meta(path: Path, array: ArrayFile, raw_names: list[str], meta: dict) -> None:
    if len(raw_names) != array.count:
        raise InputError(
            f"{path}: its metadata names {len(raw_names)} items but the array holds {array.count}"
        )
    code_dim = meta.get("code_dim")
    if code_dim is not None and code_dim != array.shape[1]:
        raise InputError(
            f"{path}: its metadata says codes of {code_dim} numbers, the array has {array.shape[1]}"
        )


# --- Small helpers -------------------------------------------------------------------------


def _refuse_missing_or_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes)")


def _stem(path: Path) -> str:
    """A file's name without its format suffix (``x.npy`` -> ``x``; IDX files lose only ``.gz``)."""
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    kind = input_kind(path)
    return name if kind == "idx" else Path(name).stem
