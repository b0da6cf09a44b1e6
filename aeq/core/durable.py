"""Publishing files and folders safely: flushed to disk, renamed into place, never seen half done.

``fsync_file`` and ``fsync_folder`` make a rename that publishes something survive a crash.
``replace_folder`` renames a finished folder over whatever stands at its target, and
``staged_folder`` gives a block a hidden folder beside the target to fill, put in place only if
the block succeeds: ``aeq train`` writes each model folder this way, ``aeq evaluate`` its report,
and the job outputs (``aeq.files.staging``) replace an existing output with ``replace_folder``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STAGING_MARK = ".staging-"
ASIDE_MARK = ".replaced-"
_RANDOM_BYTES = 4


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_folder(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk, where the platform allows it."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows cannot open folders; its renames are durable on their own
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems refuse fsync on folders; the data itself was synced
    finally:
        os.close(descriptor)


def hidden_sibling(target: Path, mark: str, suffix: str = "") -> Path:
    """A fresh hidden name beside ``target``: ``.<name><mark><random><suffix>``."""
    token = secrets.token_hex(_RANDOM_BYTES)
    return target.with_name(f".{target.name}{mark}{token}{suffix}")


def replace_folder(new: Path, target: Path) -> None:
    """Rename the folder ``new`` to ``target``, replacing whatever is there (folder, file, link).

    A folder cannot be renamed over a non-empty one, so an existing ``target`` is renamed aside
    first (``.<name>.replaced-<random>``), ``new`` renamed in, and the old one deleted: ``target``
    is never half old, half new, and if ``new`` cannot be renamed in, the old one is put back. A
    crash between the two renames leaves the old one under its hidden name, safe to delete.
    """
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    aside = hidden_sibling(target, ASIDE_MARK)
    os.rename(target, aside)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(aside, target)
        raise
    remove_quietly(aside)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Yield a new hidden folder beside ``target`` to fill; it replaces ``target`` when the
    block ends, or is deleted if the block raises (``target`` then stays as it was).

    The folder (``.<name>.staging-<random>``) is in ``target``'s folder, created with its
    parents if missing, so the final rename stays on one file system.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = hidden_sibling(target, STAGING_MARK)
    staging.mkdir()
    try:
        yield staging
        replace_folder(staging, target)
    finally:
        remove_quietly(staging)  # gone already once it was renamed into place


def remove_quietly(path: Path) -> None:
    """Delete a file, link or folder, best effort: this runs while another error may be on its
    way to the user, which must not be replaced by a traceback about cleanup."""
    if not os.path.lexists(path):
        return  # never created (on a read-only file system unlink says EROFS, not ENOENT)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        return
    try:
        path.unlink()
    except OSError:
        pass  # a hidden leftover is safe to delete later
