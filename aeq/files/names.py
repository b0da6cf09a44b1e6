"""Item names: where they come from, and how they become safe, unique output file names.

Every item of a job carries a name: the input file's relative path (``digits/7/a.png`` ->
``digits_7_a``) or ``<stem>_<index:05d>`` for the items of an array. Names end up as file names
inside an output folder, so they are sanitised here, once, with rules that hold on Linux, macOS
and Windows file systems:

- only a file name, never a path: ``/`` and ``\\`` flatten to ``_``; ``.``/``..`` components and
  leading separators (absolute paths) are dropped, so no name can escape the output folder;
- no control characters (NUL included) and none of ``<>:"|?*``; Unicode letters are kept, in NFC;
- no leading dots (hidden files, ``..``) or spaces, no trailing dots or spaces;
- Windows device names (``CON``, ``nul``, ``COM1`` ...) get a ``_`` prefix;
- at most ``MAX_NAME_BYTES`` of UTF-8; longer names are cut and end in a hash of the full name;
- never empty (``item``).

``sanitize`` is idempotent. ``unique_names`` then makes a list of sanitised names unique without
regard to case (case-insensitive file systems would merge ``A`` and ``a``): the first occurrence
keeps its name, later ones get ``~2``, ``~3`` ... (the lowest suffix no other name in the list
uses). The result depends only on the list, never on the order items happen to be written.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

# Room for a disambiguating suffix, ".png" and a temp prefix well inside the usual 255-byte limit.
MAX_NAME_BYTES = 120
FALLBACK_NAME = "item"
DUPLICATE_MARK = "~"
_HASH_CHARS = 8

_SAFE = re.compile(r"[A-Za-z0-9_\-~][A-Za-z0-9_.\-~]*")
_SEPARATORS = re.compile(r"[/\\]+")
_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789"]
)


def sanitize(raw: str) -> str:
    """Turn any string into a safe file name (without extension) following the module's rules.

    Args:
        raw: a name as it came from a file path, an array file or a job's metadata.

    Returns:
        A non-empty name that contains no path separator, cannot be ``.``/``..``, does not start
        with a dot and fits ``MAX_NAME_BYTES``; ``sanitize(sanitize(x)) == sanitize(x)``.
    """
    if _is_plainly_safe(raw):
        return raw
    text = unicodedata.normalize("NFC", raw)
    parts = [part for part in _SEPARATORS.split(text) if part.strip(". ")]
    text = "_".join(_FORBIDDEN.sub("_", part) for part in parts)
    text = text.lstrip(". ").rstrip(". ")
    if not text:
        return FALLBACK_NAME
    if text.split(".")[0].upper() in _WINDOWS_DEVICES:
        text = "_" + text
    return _fit(text)


def unique_names(names: Sequence[str]) -> list[str]:
    """Sanitise ``names`` and make them unique, case-insensitively, deterministically.

    Args:
        names: one name per item, in item order.

    Returns:
        The sanitised names; the first of a group of equal names keeps it, the later ones get
        ``~N`` with the smallest N >= 2 that no other name in the result uses.
    """
    clean = [sanitize(name) for name in names]
    taken = {name.casefold() for name in clean}
    if len(taken) == len(clean):
        return clean
    seen: set[str] = set()
    result = []
    for name in clean:
        key = name.casefold()
        if key in seen:
            name = _next_free(name, taken)
            key = name.casefold()
            taken.add(key)
        seen.add(key)
        result.append(name)
    return result


def item_names(stem: str, count: int) -> list[str]:
    """Names for the ``count`` items of one array file: ``<stem>_00000``, ``<stem>_00001`` ...

    The stem is sanitised once (with room left for the index), so this stays cheap for arrays
    of a hundred thousand items.
    """
    index_width = max(5, len(str(max(count - 1, 0))))
    base = _fit(sanitize(stem), MAX_NAME_BYTES - index_width - 1)
    return [f"{base}_{index:0{index_width}d}" for index in range(count)]


def _is_plainly_safe(raw: str) -> bool:
    """ASCII names of safe characters that need no work (the common case, kept fast)."""
    return (
        len(raw) <= MAX_NAME_BYTES
        and _SAFE.fullmatch(raw) is not None
        and not raw.endswith(".")
        and raw.split(".")[0].upper() not in _WINDOWS_DEVICES
    )


def _fit(text: str, limit: int = MAX_NAME_BYTES) -> str:
    """Cut ``text`` to ``limit`` UTF-8 bytes, ending in a hash of the whole (cuts stay distinct)."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    digest = hashlib.sha256(encoded).hexdigest()[:_HASH_CHARS]
    head = encoded[: limit - _HASH_CHARS - 1].decode("utf-8", errors="ignore").rstrip(". ")
    return f"{head}-{digest}"


def _next_free(name: str, taken: set[str]) -> str:
    """The first ``name~N`` (N >= 2) whose case-folded form is not taken."""
    counter = 2
    while True:
        suffix = f"{DUPLICATE_MARK}{counter}"
        candidate = _fit(name, MAX_NAME_BYTES - len(suffix)) + suffix
        if candidate.casefold() not in taken:
            return candidate
        counter += 1
