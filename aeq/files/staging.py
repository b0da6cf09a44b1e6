"""Outputs are staged beside their target and renamed into place, so nobody sees half of one.

A writer stages its data in ``.<target name>.partial-<random>`` in the target's folder (the same
file system, so the final rename is atomic), fsyncs it, then renames it over the target. An
existing target is refused up front unless overwriting was asked for, and even then it is only
replaced at the very end, so a failed job leaves the old output untouched. Folders cannot be
renamed over atomically; an existing folder is moved aside, the new one renamed in, and the old
one deleted (``aeq.core.durable.replace_folder``). A process killed outright (SIGKILL, power
loss) can leave a ``.partial-`` or ``.replaced-`` entry behind; it is hidden, never mistaken for
an output, and safe to delete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aeq.core.durable import fsync_folder, hidden_sibling, remove_quietly, replace_folder
from aeq.core.errors import AeqError, OutputExistsError

PARTIAL_MARK = ".partial-"


def partial_path(target: Path, suffix: str = "") -> Path:
    """A fresh hidden staging path beside ``target``: ``.<name>.partial-<random><suffix>``."""
    return hidden_sibling(target, PARTIAL_MARK, suffix)


def refuse_existing(target: Path, overwrite: bool) -> None:
    """Raise ``OutputExistsError`` if ``target`` exists (even as a dangling link) and may not go."""
    if not overwrite and os.path.lexists(target):
        raise OutputExistsError(f"{target} exists; pass --overwrite to replace it")


def make_parents(target: Path) -> list[Path]:
    """Create the missing folders above ``target``; return them, outermost first, for cleanup."""
    missing = []
    folder = target.parent
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    missing.reverse()
    for folder in missing:
        try:
            folder.mkdir()
        except OSError as error:
            raise AeqError(f"cannot create the output folder {folder}: {error.strerror}") from None
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove folders ``make_parents`` created, innermost first, where they are still empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            return  # something else lives there now: leave it and everything above it


def discard(staged: list[Path], created_parents: list[Path]) -> None:
    """Delete a writer's staged entries, then the folders it created that are left empty."""
    for path in staged:
        remove_quietly(path)
    remove_empty(created_parents)


@contextmanager
def publishing(target: Path | None, abort: Callable[[], None]) -> Iterator[None]:
    """A writer's publishing step: any failure inside calls ``abort`` (nothing half-written
    stays), and the disk's refusal (full, read-only, ...) becomes one ``AeqError`` line."""
    try:
        yield
    except OSError as error:
        abort()
        raise AeqError(f"cannot write {target}: {error.strerror or error}") from None
    except BaseException:
        abort()
        raise


def place(staged: Path, target: Path, overwrite: bool) -> None:
    """Rename a fully written, synced ``staged`` file or folder to ``target``.

    Raises:
        OutputExistsError: ``target`` appeared meanwhile and ``overwrite`` is false.
    """
    refuse_existing(target, overwrite)
    if not overwrite:
        _place_new(staged, target)
    elif os.path.lexists(target) and (_is_real_dir(staged) or _is_real_dir(target)):
        replace_folder(staged, target)
    else:
        os.replace(staged, target)
    fsync_folder(target.parent)


def _place_new(staged: Path, target: Path) -> None:
    """Move ``staged`` to ``target`` without ever replacing something that appeared there."""
    try:
        if _is_real_dir(staged):
            os.rename(staged, target)  # fails on anything there but an empty folder
            return
        try:
            os.link(staged, target)  # fails if target exists: no window to clobber it
        except FileExistsError:
            raise
        except OSError:
            os.replace(staged, target)  # file systems without hard links: checked just above
            return
        staged.unlink()
    except OSError:
        if os.path.lexists(target):
            raise OutputExistsError(f"{target} exists; pass --overwrite to replace it") from None
        raise


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()
