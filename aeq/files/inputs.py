"""What a job reads: image and code inputs, checked completely before anything is queued.

``open_images`` takes the CLI's INPUT arguments (image files, folders, ``.npy``/``.npz`` arrays,
MNIST IDX files), checks every item (decoding each image fully, scanning each array's values) and
returns an ``ImageSource`` that yields the items again, lazily, in chunks of uint8 28 x 28 pixels.
``open_codes`` does the same for the ``.npy``/``.npz`` codes ``aeq encode`` writes
(``aeq.files.code_files``). Neither holds a whole input in memory: images are decoded a chunk at a
time and arrays are streamed (``aeq.files.array_files``), so a 100,000-item job costs about what a
10,000-item one does. The price is that images are decoded twice (once to check, once to send);
for 28 x 28 PNGs that is cheap (about 10,000 decodes a second on one core).

docs/INPUTS.md lists the formats, the folder rules and the error each bad file gets.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aeq.core.catalog import IMAGE_SIDE
from aeq.core.errors import InputError
from aeq.core.idx import is_idx_path
from aeq.files.array_files import ArrayFile
from aeq.files.code_files import open_codes_file
from aeq.files.image_files import IMAGE_SUFFIXES
from aeq.files.image_parts import ImageFiles, ImagePart, open_image_array
from aeq.files.names import ItemNames, NameSlice, NumberedNames

ARRAY_SUFFIXES = frozenset({".npy", ".npz"})


@dataclass
class ImageSource:
    """The items of all INPUT arguments, in order, checked and ready to be read in chunks.

    Attributes:
        total: number of items over all inputs.
        names: one safe, unique name per item (``aeq.files.names``), in item order; made a
            chunk at a time (``ItemNames``), never for a whole declared count at once.
        skipped: files inside input folders that were neither images nor arrays (hidden files
            and folders are ignored without being listed).
    """

    total: int
    names: Sequence[str]
    skipped: list[Path]
    parts: list[ImagePart] = field(repr=False)

    def chunks(self, size: int) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        """Yield ``(names, pixels)`` with pixels uint8 ``(n, 28, 28)``; every chunk holds ``size``
        items but the last. Reads lazily: only about one chunk is in memory at a time, and the
        names are made only when read (``NameSlice``).

        Raises:
            InputError: a file changed since it was checked and no longer reads.
        """
        if size < 1:
            raise ValueError(f"chunk size must be positive, not {size}")
        blocks = (block for part in self.parts for block in part.blocks(size))
        pixels = _rechunk(blocks, size, (IMAGE_SIDE, IMAGE_SIDE), np.dtype(np.uint8))
        for start, chunk in zip(range(0, self.total, size), pixels, strict=True):
            yield NameSlice(self.names, start, start + len(chunk)), chunk


@dataclass
class CodeSource:
    """Codes written by ``aeq encode`` (or any float array of N codes), ready to be decoded.

    Attributes:
        total: number of codes.
        code_dim: length of each code.
        model: the model that made them, when the file says so.
        version: that model's version, when the file says so.
        names: one safe, unique name per code, made a chunk at a time.
    """

    total: int
    code_dim: int
    model: str | None
    version: int | None
    names: Sequence[str]
    array: ArrayFile = field(repr=False)

    def chunks(self, size: int) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        """Yield ``(names, codes)`` with codes float32 ``(n, code_dim)``, ``size`` per chunk but
        the last, streamed from the file (names made only when read)."""
        if size < 1:
            raise ValueError(f"chunk size must be positive, not {size}")
        blocks = (block.astype(np.float32) for block in self.array.rows(block_rows=size))
        for start, chunk in zip(range(0, self.total, size), blocks, strict=True):
            yield NameSlice(self.names, start, start + len(chunk)), chunk


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
    total = sum(part.count for part in parts)
    return ImageSource(total, ItemNames([part.raw_names for part in parts]), skipped, parts)


def open_codes(path: Path) -> CodeSource:
    """Check a codes file (``.npy`` with its ``.npy.json`` sidecar, or ``.npz``) and open it.

    Without metadata the names default to ``<stem>_<index>`` and model/version are ``None``.

    Raises:
        InputError: missing, unreadable, not a 2-D float array, NaN/inf values, or metadata
            that does not fit the array.
    """
    path = Path(path)
    _refuse_missing_or_empty(path)
    array, meta = open_codes_file(path)
    raw_names = meta.get("names") or NumberedNames(_stem(path), array.count)
    return CodeSource(
        total=array.count,
        code_dim=array.shape[1],
        model=meta.get("model"),
        version=meta.get("version"),
        names=ItemNames([raw_names]),
        array=array,
    )


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
        return ImageFiles([path], [stem], resize)
    _refuse_missing_or_empty(path)
    return open_image_array(path, kind, stem, resize)


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
        if kind == "image" and isinstance(previous, ImageFiles):
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
