"""Codes files as ``aeq encode`` writes them and ``aeq decode`` reads them, metadata included.

Two layouts, both readable with ``np.load(..., allow_pickle=False)``:

- ``codes.npy`` (float32 N x code_dim) with a sidecar ``codes.npy.json``: ``{"format":
  "aeq-codes", "format_version": 1, "model", "version", "code_dim", "count", "names"}``. The
  sidecar is named after the whole file name so it sorts beside it and cannot clash with a
  ``codes.json`` of the user's. Without a sidecar, names default and model/version are unknown.
- ``codes.npz`` with ``codes``, ``names`` (str), ``model`` (0-d str), ``version`` (0-d int64).
  A ``.npz`` holding a single array of another name is read as codes without metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from aeq.core.errors import InputError
from aeq.files.array_files import (
    NPZ_NAMES_KEY,
    ArrayFile,
    npz_members,
    npz_names,
    open_npy,
    open_npz_member,
)

NPZ_CODES_KEY = "codes"
NPZ_MODEL_KEY = "model"
NPZ_VERSION_KEY = "version"
SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = "aeq-codes"
SIDECAR_FORMAT_VERSION = 1
_SIDECAR_TYPES: dict[str, type] = {
    "names": list,
    "model": str,
    "version": int,
    "code_dim": int,
    "count": int,
}


def sidecar_path(codes: Path) -> Path:
    """Where the metadata of a ``.npy`` codes file lives: ``codes.npy`` -> ``codes.npy.json``."""
    return codes.with_name(codes.name + SIDECAR_SUFFIX)


def open_codes_file(path: Path) -> tuple[ArrayFile, dict[str, Any]]:
    """The codes array of a ``.npy``/``.npz`` file and its metadata (possibly empty), checked.

    Raises:
        InputError: not a non-empty 2-D float array, NaN/inf values, or metadata that is
            malformed or does not fit the array.
    """
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array, meta = open_npy(path), _read_sidecar(sidecar_path(path))
    elif suffix == ".npz":
        array, meta = _open_npz(path)
    else:
        raise InputError(f"{path}: codes must be a .npy or .npz file (as aeq encode writes)")
    _check_codes(array)
    _check_meta(path, array, meta)
    return array, meta


def _open_npz(path: Path) -> tuple[ArrayFile, dict[str, Any]]:
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
    meta: dict[str, Any] = {}
    if NPZ_NAMES_KEY in keys:
        meta["names"] = npz_names(path, array.count)
    for meta_key, kinds, convert in ((NPZ_MODEL_KEY, "U", str), (NPZ_VERSION_KEY, "iu", int)):
        if meta_key in keys:
            meta[meta_key] = _npz_scalar(path, meta_key, kinds, convert)
    return array, meta


def _npz_scalar(path: Path, key: str, kinds: str, convert: type) -> object:
    member = open_npz_member(path, key)
    if member.shape != () or member.dtype.kind not in kinds:
        raise InputError(f"{member.label} must be a single {convert.__name__}, not {member.dtype}")
    return convert(member.value())


def _read_sidecar(path: Path) -> dict[str, Any]:
    """The metadata aeq writes beside ``.npy`` codes; an empty dict when there is none."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the codes metadata {path}: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise InputError(f'{path} is not aeq codes metadata (no "format": "{SIDECAR_FORMAT}")')
    for key, kind in _SIDECAR_TYPES.items():
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


def _check_meta(path: Path, array: ArrayFile, meta: dict[str, Any]) -> None:
    """Metadata must describe this array: as many names and items, the same code length."""
    for key, actual in (("names", array.count), ("count", array.count)):
        value = meta.get(key)
        claimed = len(value) if isinstance(value, list) else value
        if claimed is not None and claimed != actual:
            raise InputError(
                f"{path}: its metadata names {claimed} items but the array holds {actual}"
            )
    code_dim = meta.get("code_dim")
    if code_dim is not None and code_dim != array.shape[1]:
        raise InputError(
            f"{path}: its metadata says codes of {code_dim} numbers, the array has {array.shape[1]}"
        )
