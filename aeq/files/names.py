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

A job's names are never all made up front: an array's are ``NumberedNames``, each made when it is
asked for whatever count the array's header declares, and ``ItemNames`` gives the unique names of
several inputs laid end to end a chunk at a time, holding only listed names and renamed ones.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from typing import overload

# Room for a disambiguating suffix, ".png" and a temp prefix well inside the usual 255-byte limit.
MAX_NAME_BYTES = 120
FALLBACK_NAME = "item"
DUPLICATE_MARK = "~"
_HASH_CHARS = 8
# Names made per step when iterating or settling repeats: bounded memory, few Python calls.
_SLICE_ITEMS = 4096

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
    return list(ItemNames([names]))


def item_names(stem: str, count: int) -> list[str]:
    """Names for the ``count`` items of one array file: ``<stem>_00000``, ``<stem>_00001`` ...

    The whole list at once; ``NumberedNames`` makes the same names one at a time.
    """
    return list(NumberedNames(stem, count))


class NumberedNames(Sequence[str]):
    """The names ``<stem>_00000``, ``<stem>_00001`` ... of an array's items, made when asked for.

    The stem is sanitised once and cut to leave room for the index (five digits, more when the
    count needs them), so every name is safe as it is and costs nothing until it is used.
    """

    def __init__(self, stem: str, count: int) -> None:
        self.size = count
        self.width = max(5, len(str(max(count - 1, 0))))
        self.base = _fit(sanitize(stem), MAX_NAME_BYTES - self.width - 1)
        self.base_key = self.base.casefold()

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._name(item) for item in range(*index.indices(self.size))]
        if not -self.size <= index < self.size:
            raise IndexError(f"item {index} of {self.size}")
        return self._name(index % self.size)

    def index_of(self, key: str) -> int | None:
        """The index of the item whose case-folded name is ``key``, or ``None``."""
        prefix, _, digits = key.rpartition("_")
        if prefix != self.base_key or len(digits) != self.width:
            return None
        if not (digits.isascii() and digits.isdigit()) or int(digits) >= self.size:
            return None
        return int(digits)

    def _name(self, index: int) -> str:
        return f"{self.base}_{index:0{self.width}d}"


class ItemNames(Sequence[str]):
    """``unique_names`` of several runs of names laid end to end, made a slice at a time.

    Runs are lists (sanitised and indexed here) or ``NumberedNames`` (answered arithmetically),
    so a run of a billion declared items costs nothing until its names are asked for. Whether
    an item repeats an earlier name is settled in item order, up to the last item asked for,
    and only renamed items are remembered. When no name can repeat (the usual case: checked
    once, here) the names are the runs' own.
    """

    def __init__(self, runs: Sequence[Sequence[str]]) -> None:
        self._starts: list[int] = []
        self._runs: list[Sequence[str]] = []
        self._first_listed: dict[str, int] = {}  # case-folded listed name -> its first item
        self._numbered: dict[tuple[str, int], list[tuple[int, NumberedNames]]] = {}
        repeats = False
        start = 0
        for run in runs:
            if isinstance(run, NumberedNames):
                group = self._numbered.setdefault((run.base_key, run.width), [])
                repeats |= run.size > 0 and any(other.size for _, other in group)
                group.append((start, run))
            else:
                run = [sanitize(name) for name in run]
                for position, name in enumerate(run, start):
                    repeats |= self._first_listed.setdefault(name.casefold(), position) != position
            self._starts.append(start)
            self._runs.append(run)
            start += len(run)
        self._length = start
        self._may_repeat = repeats or any(
            self._numbered_position(key) is not None for key in self._first_listed
        )
        self._renamed: dict[int, str] = {}
        self._renamed_keys: set[str] = set()
        self._settled = 0  # items before this one have been checked for repeats

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if step != 1:
                return [self[item] for item in range(start, stop, step)]
            return self._slice(start, max(start, stop))
        if not -self._length <= index < self._length:
            raise IndexError(f"item {index} of {self._length}")
        index %= self._length
        return self._slice(index, index + 1)[0]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, self._length, _SLICE_ITEMS):
            yield from self._slice(start, min(start + _SLICE_ITEMS, self._length))

    def _slice(self, start: int, stop: int) -> list[str]:
        names = self._sanitised(start, stop)
        if self._may_repeat:
            self._settle(stop)
            for position in range(start, stop):
                names[position - start] = self._renamed.get(position, names[position - start])
        return names

    def _sanitised(self, start: int, stop: int) -> list[str]:
        """The runs' sanitised names of items ``start`` to ``stop - 1``."""
        names: list[str] = []
        run_index = bisect.bisect_right(self._starts, start) - 1
        while len(names) < stop - start:
            run_start, run = self._starts[run_index], self._runs[run_index]
            names.extend(run[start + len(names) - run_start : stop - run_start])
            run_index += 1
        return names

    def _settle(self, stop: int) -> None:
        """Check the items before ``stop`` for repeats, in order, renaming each that repeats."""
        for start in range(self._settled, stop, _SLICE_ITEMS):
            end = min(start + _SLICE_ITEMS, stop)
            for position, name in enumerate(self._sanitised(start, end), start):
                key = name.casefold()
                if self._first_item(key) < position or key in self._renamed_keys:
                    renamed = _next_free(name, self._taken)
                    self._renamed[position] = renamed
                    self._renamed_keys.add(renamed.casefold())
        self._settled = max(self._settled, stop)

    def _taken(self, key: str) -> bool:
        """Whether any item's sanitised name, or any name given so far, folds to ``key``."""
        return self._first_item(key) < self._length or key in self._renamed_keys

    def _first_item(self, key: str) -> int:
        """The first item whose sanitised name folds to ``key``; ``len(self)`` when none does."""
        listed = self._first_listed.get(key, self._length)
        numbered = self._numbered_position(key)
        return listed if numbered is None else min(listed, numbered)

    def _numbered_position(self, key: str) -> int | None:
        """The first item of a numbered run whose name folds to ``key``, if any."""
        prefix, _, digits = key.rpartition("_")
        for start, run in self._numbered.get((prefix, len(digits)), []):
            index = run.index_of(key)
            if index is not None:
                return start + index
        return None


class NameSlice(Sequence[str]):
    """Items ``start .. stop - 1`` of a sequence of names, made only when read.

    A chunk carries one instead of a list: a streamed job's chunks are queued without their
    names (its client writes them itself), and an ``.npy`` output keeps none, so for the usual
    large job no name is ever made.
    """

    def __init__(self, names: Sequence[str], start: int, stop: int) -> None:
        self._names, self._start, self._stop = names, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return list(self._names[self._start : self._stop])[index]
        if not -len(self) <= index < len(self):
            raise IndexError(f"item {index} of {len(self)}")
        return self._names[self._start + index % len(self)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names[self._start : self._stop])


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


def _next_free(name: str, taken: Callable[[str], bool]) -> str:
    """The first ``name~N`` (N >= 2) whose case-folded form is not taken."""
    counter = 2
    while True:
        suffix = f"{DUPLICATE_MARK}{counter}"
        candidate = _fit(name, MAX_NAME_BYTES - len(suffix)) + suffix
        if not taken(candidate.casefold()):
            return candidate
        counter += 1
