"""From the Python API's arguments to a checked ``Submission``: inputs, model version, chunk size.

Inputs are what the CLI's INPUT arguments are (image files, folders, ``.npy``/``.npz`` arrays,
MNIST IDX files: ``aeq.files.inputs``) or NumPy arrays (``aeq.files.memory``); either way every
item is checked before anything runs or is queued. The model version is resolved here, on the
caller's side, as the CLI does: a job always names the version it was submitted for.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from aeq.client.client import Submission
from aeq.core.catalog import PIXELS_PER_IMAGE, Operation, check_model_name
from aeq.core.errors import InputError, UsageError
from aeq.core.settings import Settings
from aeq.files.inputs import CodeSource, ImageSource, open_codes, open_images
from aeq.files.memory import ArrayCodes, codes_from_array, images_from_array
from aeq.queue.jobs import CODE_ITEMSIZE
from aeq.queue.protocol import MAX_CHUNK_SIZE, default_chunk_size
from aeq.repository import ModelRepository, ModelVersion

PathLike: TypeAlias = str | os.PathLike[str]
# What the verbs take: an array (or anything ``np.asarray`` makes one of), a path, or paths.
Inputs: TypeAlias = npt.ArrayLike | PathLike | Sequence[PathLike]


def image_submission(
    settings: Settings,
    op: Operation,
    images: Inputs,
    model: str | None,
    version: int | None,
    chunk_size: int | None,
    resize: bool,
) -> Submission:
    """Check the images and resolve the model version for ``op`` (denoise, reconstruct, encode).

    Raises:
        InputError: an input is unusable (the message names it and what is wrong).
        UsageError: a bad chunk size.
        ModelNotFoundError: unknown model or version, or nothing published.
    """
    check_chunk_size(chunk_size)
    resolved = resolve(settings, model or op.default_model or "", version, op)
    source = open_images_input(images, resize)
    return Submission(op, resolved, source, chunk_items(chunk_size, op, resolved))


def decode_submission(
    settings: Settings,
    codes: Inputs,
    model: str | None,
    version: int | None,
    chunk_size: int | None,
) -> Submission:
    """Check the codes and pick the decoder: ``model``, else the one a codes file names.

    Raises:
        InputError: the codes are unusable.
        UsageError: no model given for codes that do not name one, a code length the model
            does not decode, or a bad chunk size.
        ModelNotFoundError: unknown model or version.
    """
    check_chunk_size(chunk_size)
    source, made_by, made_version = open_codes_input(codes)
    chosen = model or made_by
    if not chosen:
        raise UsageError(
            "these codes do not say which model made them; pass model=... "
            f"(aeq.encode's default is {Operation.ENCODE.default_model!r})"
        )
    if version is None and chosen == made_by:
        version = made_version
    resolved = resolve(settings, chosen, version, Operation.DECODE)
    if resolved.code_dim != source.code_dim:
        raise UsageError(
            f"the codes are {source.code_dim}-d, {resolved.label} decodes {resolved.code_dim}-d "
            "codes"
        )
    size = chunk_items(chunk_size, Operation.DECODE, resolved)
    return Submission(Operation.DECODE, resolved, source, size)


def resolve(
    settings: Settings, model: str, version: int | None, op: Operation | None = None
) -> ModelVersion:
    """The published version of ``model`` to run (default: the latest), for ``op`` if given.

    Raises:
        UsageError: not a model name, or a version without the graph ``op`` runs (an ONNX
            model published without an encoder and decoder: no encode, no decode).
        ModelNotFoundError: not (at that version) in the repository.
    """
    check_model_name(model)
    resolved = ModelRepository(settings.model_repository).get(model, version)
    if op is not None:
        resolved.check_serves(op)
    return resolved


def chunk_items(chunk_size: int | None, op: Operation, version: ModelVersion) -> int:
    """``chunk_size``, or (None) the count that makes a chunk of ``op``'s input items (images,
    or ``version``'s codes to decode) about ``DEFAULT_CHUNK_BYTES``."""
    if chunk_size is not None:
        return chunk_size
    if op is Operation.DECODE:
        return default_chunk_size(version.code_dim * CODE_ITEMSIZE)
    return default_chunk_size(PIXELS_PER_IMAGE)


def check_chunk_size(chunk_size: int | None) -> None:
    """Refuse chunk sizes the CLI's ``--chunk-size`` refuses (None: sized in bytes)."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise UsageError(f"chunk_size must be a whole number, not {chunk_size!r}")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise UsageError(f"chunk_size must be in 1..{MAX_CHUNK_SIZE}, not {chunk_size}")


def open_images_input(images: Inputs, resize: bool = False) -> ImageSource:
    """The images of an array, a path or a list of paths, checked completely.

    Paths are read as the CLI reads its INPUT arguments; files in folders that are neither
    images nor arrays are skipped with a warning.

    Raises:
        InputError: an input is unusable.
    """
    paths = as_paths(images)
    if paths is None:
        return images_from_array(as_array(images), resize)
    source = open_images(paths, resize=resize)
    if source.skipped:
        warnings.warn(
            f"skipped {len(source.skipped)} file(s) that are not images or arrays "
            f"(first: {source.skipped[0]})",
            stacklevel=2,
        )
    return source


def open_codes_input(codes: Inputs) -> tuple[CodeSource | ArrayCodes, str | None, int | None]:
    """Codes from an array or a codes file, checked; with the model and version a file names.

    Raises:
        InputError: the codes are unusable, or more than one file is given.
    """
    paths = as_paths(codes)
    if paths is None:
        return codes_from_array(as_array(codes)), None, None
    if len(paths) != 1:
        raise InputError(f"give one codes file (as aeq.encode's files are), not {len(paths)}")
    source = open_codes(paths[0])
    return source, source.model, source.version


def as_paths(inputs: Inputs) -> list[Path] | None:
    """``inputs`` as a list of paths, or ``None`` when they are not paths (an array)."""
    if isinstance(inputs, str | os.PathLike):
        return [Path(inputs)]
    if (
        isinstance(inputs, list | tuple)
        and inputs
        and all(isinstance(item, str | os.PathLike) for item in inputs)
    ):
        return [Path(item) for item in inputs]
    return None


def as_array(inputs: Inputs) -> np.ndarray:
    """``inputs`` as a NumPy array, without copying one.

    Raises:
        InputError: ``np.asarray`` cannot make a plain array of them (ragged lists, ...).
    """
    if isinstance(inputs, np.ndarray):
        return inputs
    if isinstance(inputs, list | tuple) and not inputs:
        raise InputError("no input given: pass an array, image files, folders or array files")
    try:
        return np.asarray(inputs)
    except (ValueError, TypeError) as error:
        raise InputError(
            f"cannot read the input as an array ({error}); pass a NumPy array, a path or a list "
            "of paths"
        ) from None
