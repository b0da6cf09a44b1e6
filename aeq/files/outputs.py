"""What a job writes: images (a folder of PNGs, ``.npy`` or ``.npz``) and codes (``.npy`` + sidecar
or ``.npz``), written as chunks arrive, in any order, and published only when complete.

Chunk results come back from workers out of order; ``write(start, names, array)`` puts each where
it belongs at once (a positioned write into a staged ``.npy``, or one PNG file per item), so the
client never holds more than a chunk. ``commit`` checks that every item arrived exactly once,
syncs, and renames the staged output into place (``aeq.files.staging``); ``abort`` deletes
everything staged. Used as a context manager, a writer aborts when its block ends without a
commit, exception or not, so no path through the code leaves a partial output behind.

Output kinds, by the target's suffix:

- images ``.npy``: uint8 ``(N, 28, 28)``; ``.npz``: ``images`` (that array) and ``names`` (str);
  no suffix: a folder of 8-bit gray ``<name>.png`` files, names made safe by ``aeq.files.names``.
- codes ``.npy``: float32 ``(N, code_dim)`` plus ``<file>.npy.json`` (names, model, version);
  ``.npz``: ``codes``, ``names``, ``model`` (0-d str) and ``version`` (0-d int64).

A writer given a ``ResumePoint`` (``aeq.files.resume``) stages there instead, under a name that
does not change, and ``checkpoint`` makes chunks durable and notes them, so the job's outputs
can leave Redis; reopened with ``resuming``, it picks up the chunks noted before.

Every array in a ``.npz`` is plain numbers or fixed-width strings: ``np.load(...,
allow_pickle=False)`` reads it. The ``.npz`` is built at commit by streaming the staged ``.npy``
into the archive (deflated for images, which shrink about 4x; stored for codes, which do not).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import numpy as np

from aeq.core.catalog import IMAGE_SIDE
from aeq.core.durable import fsync_file, fsync_folder, remove_quietly
from aeq.core.errors import AeqError, JobError, UsageError
from aeq.files import staging
from aeq.files.array_files import NPZ_NAMES_KEY
from aeq.files.code_files import (
    NPZ_CODES_KEY,
    NPZ_MODEL_KEY,
    NPZ_VERSION_KEY,
    SIDECAR_FORMAT,
    SIDECAR_FORMAT_VERSION,
    sidecar_path,
)
from aeq.files.image_parts import NPZ_IMAGE_KEYS
from aeq.files.names import sanitize, unique_names
from aeq.files.png import encode_gray_batch
from aeq.files.resume import ResumePoint, StoredChunk

IMAGES_KEY = NPZ_IMAGE_KEYS[0]
PNG_SUFFIX = ".png"
# Where a PNG waits when its name is unsafe or taken, until commit settles every name.
_PENDING_PREFIX = ".pending-"
_COPY_BLOCK_BYTES = 4 * 1024 * 1024
# Concurrent fsyncs for PNG folders; the file system batches them into shared journal commits.
FSYNC_THREADS = 16
# (compression, level) per main array: images shrink ~4x at level 1, float codes barely do.
_NPZ_COMPRESSION: dict[str, tuple[int, int | None]] = {
    IMAGES_KEY: (zipfile.ZIP_DEFLATED, 1),
    NPZ_CODES_KEY: (zipfile.ZIP_STORED, None),
}


def open_image_output(
    path: Path,
    total: int,
    overwrite: bool,
    resume: ResumePoint | None = None,
    resuming: bool = False,
) -> ImageWriter:
    """Start writing ``total`` images to ``path``: a PNG folder (no suffix), ``.npy`` or ``.npz``
    (staged at ``resume`` when given; ``resuming``: going on from what it holds).

    Raises:
        UsageError: the suffix names no output kind aeq writes.
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return ImageWriter(path, total, overwrite, suffix[1:], resume, resuming)
    if suffix == "" or (path.is_dir() and not path.is_symlink()):
        return ImageWriter(path, total, overwrite, "png", resume, resuming)
    raise UsageError(
        f"cannot write images to {path}: give a folder (no suffix) for PNGs, or a .npy/.npz file"
    )


def open_code_output(
    path: Path,
    total: int,
    code_dim: int,
    model: str,
    version: int,
    overwrite: bool,
    resume: ResumePoint | None = None,
    resuming: bool = False,
) -> CodeWriter:
    """Start writing ``total`` codes of ``code_dim`` floats to a ``.npy`` (+ sidecar) or ``.npz``.

    Raises:
        UsageError: the suffix is not ``.npy`` or ``.npz``.
        OutputExistsError: ``path`` (or its sidecar) exists and ``overwrite`` is false.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise UsageError(f"cannot write codes to {path}: give a .npy or .npz file")
    if code_dim < 1:
        raise ValueError(f"code_dim must be positive, not {code_dim}")
    return CodeWriter(
        path, total, overwrite, suffix[1:], code_dim, model, version, resume, resuming
    )


class _Writer:
    """Bookkeeping every writer shares: which items arrived, their names, staging, cleanup."""

    # Output kinds that never write the items' names: the writer does not keep them (a
    # million-item job's names would be its client's largest memory).
    NAMELESS_KINDS: frozenset[str] = frozenset()

    def __init__(
        self,
        path: Path,
        total: int,
        overwrite: bool,
        kind: str,
        resume: ResumePoint | None,
        resuming: bool,
    ) -> None:
        if total < 0:
            raise ValueError(f"total must not be negative, not {total}")
        self.path = path
        self.total = total
        self.kind = kind
        self.resume = resume
        self._overwrite = overwrite
        for target in self._targets():
            staging.refuse_existing(target, overwrite)
        self._written = np.zeros(total, dtype=bool)
        self._names: list[str] | None = None if kind in self.NAMELESS_KINDS else [""] * total
        self._staged: list[Path] = []
        self._sink: _StagedArray | _PngFolder | None = None
        self._keeper: ThreadPoolExecutor | None = None
        self._kept_later: Future[None] | None = None
        self._state = "open"
        self._created_parents = staging.make_parents(path)
        if resume is not None and not resuming:
            resume.prepare()  # an old point (of a job given up with --overwrite) goes

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state == "open":
            self.abort()

    @property
    def items_written(self) -> int:
        """How many items have arrived so far."""
        return int(np.count_nonzero(self._written))

    def stored_chunks(self) -> list[int]:
        """The chunks a resumed writer found noted at its resume point (none otherwise)."""
        return [] if self.resume is None else [c.chunk for c in self._resumed]

    def checkpoint(self, chunks: list[tuple[int, int, Sequence[str]]]) -> bool:
        """Make the written ``(chunk, start, names)`` durable and note them at the resume point,
        after which their outputs may leave Redis; ``False`` (nothing done) without one."""
        if self.resume is None or not chunks:
            return False
        self._settle()
        self._keep(chunks)
        return True

    def checkpoint_behind(
        self, chunks: list[tuple[int, int, Sequence[str]]], then: Callable[[], object]
    ) -> bool:
        """``checkpoint``, then ``then()``, in a thread of the writer's own while the caller goes
        on writing: the fsyncs are a streaming client's dearest per-chunk cost. One batch at a
        time, in order; its error is raised by the next call, ``commit`` or ``suspend``. A
        ``.npy`` sink only (positioned writes; a PNG folder's sync is not thread-safe): others
        checkpoint at once. ``False`` (nothing done) without a resume point."""
        if self.resume is None or not chunks:
            return False
        self._settle()
        if not isinstance(self._sink, _StagedArray):
            self._keep(chunks)
            then()
            return True
        if self._keeper is None:
            self._keeper = ThreadPoolExecutor(1, thread_name_prefix="aeq-checkpoint")
        self._kept_later = self._keeper.submit(self._keep_then, chunks, then)
        return True

    def _keep_then(
        self, chunks: list[tuple[int, int, Sequence[str]]], then: Callable[[], object]
    ) -> None:
        self._keep(chunks)
        then()

    def _keep(self, chunks: list[tuple[int, int, Sequence[str]]]) -> None:
        assert self._sink is not None and self.resume is not None
        try:
            self._sink.sync()
        except OSError as error:
            raise AeqError(f"cannot write {self.path}: {error.strerror or error}") from None
        self.resume.note(
            StoredChunk(
                chunk, start, self._kept(names), self._sink.files(start, len(names)), len(names)
            )
            for chunk, start, names in chunks
        )

    def _settle(self) -> None:
        """Wait for the checkpoint running behind, raising its error."""
        pending, self._kept_later = self._kept_later, None
        if pending is not None:
            pending.result()

    def suspend(self) -> None:
        """Stop writing but keep the staged output and resume point (an interrupted client whose
        job goes on: ``--resume`` continues it)."""
        self._stop_keeper()
        if self._state == "open" and self._sink is not None:
            self._sink.close()
        self._state = "suspended"

    def _stop_keeper(self) -> None:
        """Let a checkpoint running behind end (its error no longer matters: what it noted is
        noted, what it did not stays in Redis) before the sink closes under it."""
        if self._keeper is not None:
            self._keeper.shutdown(wait=True)
            self._keeper, self._kept_later = None, None

    def write(self, start: int, names: Sequence[str], array: np.ndarray) -> None:
        """Store the items ``start .. start + len(array) - 1``; chunks may come in any order.

        Raises:
            ValueError: the chunk does not fit the output (shape, dtype, range, name count),
                or one of its items was written before.
            AeqError: the disk refused the data (full, read-only, ...).
        """
        self._require_open()
        array = self._check_array(np.asarray(array))
        stop = start + len(array)
        if len(names) != len(array):
            raise ValueError(f"{len(names)} names for {len(array)} items")
        if start < 0 or stop > self.total:
            raise ValueError(f"items {start}..{stop - 1} are outside 0..{self.total - 1}")
        if self._written[start:stop].any():
            raise ValueError(f"items {start}..{stop - 1} overlap items written before")
        names = self._kept(names)
        assert self._sink is not None
        try:
            self._sink.write(start, names, array)
        except OSError as error:
            raise AeqError(f"cannot write {self.path}: {error.strerror or error}") from None
        if self._names is not None:
            self._names[start:stop] = names
        self._written[start:stop] = True

    def commit(self) -> Path:
        """Publish the output once every item has arrived; return its path.

        Raises:
            JobError: items are missing (the staged output is deleted).
            OutputExistsError: the target appeared meanwhile and overwriting was not asked for.
            AeqError: the disk refused the data.
        """
        self._require_open()
        self._settle()
        self._stop_keeper()
        missing = self.total - self.items_written
        if missing:
            first = int(np.argmin(self._written))
            self.abort()
            raise JobError(
                f"{self.path} not written: {missing} of {self.total} items never arrived "
                f"(first missing: item {first})"
            )
        with staging.publishing(self.path, self.abort):
            self._finish()
        self._state = "committed"
        if self.resume is not None:
            self.resume.remove()
        return self.path

    def abort(self) -> None:
        """Delete everything staged and any folders created for the output; idempotent."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._stop_keeper()
        if self._sink is not None:
            self._sink.close()
        if self.resume is not None:
            self.resume.remove()
        staging.discard(self._staged, self._created_parents)

    def _open_sink(self, make: Callable[[], _StagedArray | _PngFolder], resuming: bool) -> None:
        if resuming:  # what a resume point holds is never deleted for failing to reopen it
            try:
                self._sink = make()
            except OSError as error:
                self._state = "suspended"
                raise AeqError(f"cannot resume {self.path}: {error.strerror or error}") from None
        else:
            with staging.publishing(self.path, self.abort):
                self._sink = make()
        self._resumed = self.resume.stored() if self.resume is not None and resuming else []
        for chunk in self._resumed:
            self._written[chunk.start : chunk.stop] = True
            if self._names is not None:
                self._names[chunk.start : chunk.stop] = chunk.names
            self._sink.adopt(chunk.start, chunk.files)
        if resuming:
            self._sink.drop_unnoted()

    def _staging_path(self, suffix: str) -> Path:
        """Where the data is staged: at the resume point, else a fresh hidden sibling."""
        if self.resume is not None:
            return self._stage(self.resume.staged(suffix))
        return self._stage(staging.partial_path(self.path, suffix))

    def _kept(self, names: Sequence[str]) -> list[str]:
        """The names of a chunk as this output keeps them: none for a kind that keeps none
        (``.npy``), so lazily made names (``NameSlice``) are never made for it."""
        return [] if self._names is None else [str(name) for name in names]

    def _kept_names(self) -> list[str]:
        if self._names is None:
            raise ValueError(f"a {self.kind} output keeps no item names")
        return self._names

    def _require_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"the writer of {self.path} is already {self._state}")

    def _stage(self, path: Path) -> Path:
        self._staged.append(path)
        return path

    def _targets(self) -> list[Path]:
        return [self.path]

    def _publish_npz(self, staged: _StagedArray, key: str, extra: dict[str, np.ndarray]) -> None:
        """Build the ``.npz`` from the staged ``.npy`` and small arrays, then put it in place."""
        archive = self._stage(staging.partial_path(self.path))
        compression, level = _NPZ_COMPRESSION[key]
        with zipfile.ZipFile(archive, "w", compression, allowZip64=True, compresslevel=level) as z:
            with staged.path.open("rb") as source, z.open(f"{key}.npy", "w", force_zip64=True) as m:
                shutil.copyfileobj(source, m, _COPY_BLOCK_BYTES)
            for name, array in extra.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        fsync_file(archive)
        staging.place(archive, self.path, self._overwrite)
        remove_quietly(staged.path)

    def _check_array(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError


class ImageWriter(_Writer):
    """Writes uint8 ``(n, 28, 28)`` chunks to a PNG folder, ``.npy`` or ``.npz``."""

    NAMELESS_KINDS = frozenset({"npy"})

    def __init__(
        self,
        path: Path,
        total: int,
        overwrite: bool,
        kind: str,
        resume: ResumePoint | None = None,
        resuming: bool = False,
    ) -> None:
        super().__init__(path, total, overwrite, kind, resume, resuming)
        if kind == "png":
            folder = self._staging_path("")
            self._open_sink(lambda: _PngFolder(folder, resuming), resuming)
        else:
            staged = self._staging_path(".npy")
            grid = (IMAGE_SIDE, IMAGE_SIDE)
            dtype = np.dtype(np.uint8)
            self._open_sink(lambda: _StagedArray(staged, dtype, grid, total, resuming), resuming)

    def __enter__(self) -> ImageWriter:
        return self

    def _check_array(self, array: np.ndarray) -> np.ndarray:
        if array.dtype != np.uint8 or array.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise ValueError(
                f"images must be uint8 (n, {IMAGE_SIDE}, {IMAGE_SIDE}), "
                f"not {array.dtype} {array.shape}"
            )
        return array

    def _finish(self) -> None:
        sink = self._sink
        if isinstance(sink, _PngFolder):
            sink.finish(self._kept_names())
            staging.place(sink.folder, self.path, self._overwrite)
        elif isinstance(sink, _StagedArray):
            sink.finish()
            if self.kind == "npy":
                staging.place(sink.path, self.path, self._overwrite)
            else:
                self._publish_npz(
                    sink, IMAGES_KEY, {NPZ_NAMES_KEY: np.array(self._kept_names(), str)}
                )


class CodeWriter(_Writer):
    """Writes float32 ``(n, code_dim)`` chunks to ``.npy`` (+ ``.npy.json`` sidecar) or ``.npz``."""

    def __init__(
        self,
        path: Path,
        total: int,
        overwrite: bool,
        kind: str,
        code_dim: int,
        model: str,
        version: int,
        resume: ResumePoint | None = None,
        resuming: bool = False,
    ) -> None:
        self.code_dim = code_dim
        self.model = model
        self.version = version
        super().__init__(path, total, overwrite, kind, resume, resuming)
        staged = self._staging_path(".npy")
        dtype, row = np.dtype(np.float32), (code_dim,)
        self._open_sink(lambda: _StagedArray(staged, dtype, row, total, resuming), resuming)

    def __enter__(self) -> CodeWriter:
        return self

    def _targets(self) -> list[Path]:
        return [self.path, sidecar_path(self.path)] if self.kind == "npy" else [self.path]

    def _check_array(self, array: np.ndarray) -> np.ndarray:
        if array.dtype.kind != "f" or array.ndim != 2 or array.shape[1] != self.code_dim:
            raise ValueError(
                f"codes must be float (n, {self.code_dim}), not {array.dtype} {array.shape}"
            )
        return array.astype(np.float32, copy=False)

    def _finish(self) -> None:
        sink = self._sink
        assert isinstance(sink, _StagedArray)
        sink.finish()
        if self.kind == "npz":
            self._publish_npz(sink, NPZ_CODES_KEY, self._npz_metadata())
            return
        sidecar = self._stage(staging.partial_path(sidecar_path(self.path)))
        sidecar.write_text(json.dumps(self._metadata(), ensure_ascii=False), encoding="utf-8")
        fsync_file(sidecar)
        # Sidecar first: a crash between the two renames leaves metadata whose count does not
        # match any codes (open_codes refuses it), never codes paired with stale names.
        staging.place(sidecar, sidecar_path(self.path), self._overwrite)
        staging.place(sink.path, self.path, self._overwrite)

    def _metadata(self) -> dict:
        return {
            "format": SIDECAR_FORMAT,
            "format_version": SIDECAR_FORMAT_VERSION,
            "model": self.model,
            "version": self.version,
            "code_dim": self.code_dim,
            "count": self.total,
            "names": self._kept_names(),
        }

    def _npz_metadata(self) -> dict[str, np.ndarray]:
        return {
            NPZ_NAMES_KEY: np.array(self._kept_names(), dtype=str),
            NPZ_MODEL_KEY: np.array(self.model, dtype=str),
            NPZ_VERSION_KEY: np.array(self.version, dtype=np.int64),
        }


class _StagedArray:
    """A ``.npy`` file of known shape, filled by positioned writes in any order.

    The file and its header come from ``np.lib.format.open_memmap``; the map is closed again at
    once and chunks are written with ``os.pwrite``, because pages written through a map count
    towards the process's resident memory until it is closed (80 MB for 100,000 images).
    Positioned writes with no buffer of Python's also let ``sync`` run in another thread while
    chunks go on arriving (``_Writer.checkpoint_behind``).
    """

    def __init__(
        self,
        path: Path,
        dtype: np.dtype,
        row_shape: tuple[int, ...],
        total: int,
        reopen: bool = False,
    ) -> None:
        self.path = path
        shape = (total, *row_shape)
        if reopen:  # a resumed job's: it must be the array this job writes
            mapped = np.lib.format.open_memmap(path, mode="r+")
            if mapped.dtype != dtype or mapped.shape != shape:
                raise OSError(f"the staged {path.name} is {mapped.dtype} {mapped.shape}")
        else:
            mapped = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        self._offset = int(mapped.offset)
        self._row_bytes = int(np.prod(row_shape)) * dtype.itemsize
        del mapped
        self._fd: int | None = os.open(path, os.O_RDWR)

    def write(self, start: int, names: list[str], array: np.ndarray) -> None:
        """Put rows ``start ..`` in place; the names are kept by the writer, not here."""
        assert self._fd is not None
        data = memoryview(np.ascontiguousarray(array).data).cast("B")
        offset = self._offset + start * self._row_bytes
        while data:  # a regular file takes it all at once but for a full disk, which raises
            written = os.pwrite(self._fd, data, offset)
            data, offset = data[written:], offset + written

    def sync(self) -> None:
        """Make everything written so far durable."""
        assert self._fd is not None
        os.fsync(self._fd)

    def finish(self) -> None:
        """Flush and sync the data, then close the file."""
        self.sync()
        self.close()

    def files(self, start: int, count: int) -> None:
        """Rows have no files of their own (a PNG folder's items do)."""
        return None

    def adopt(self, start: int, files: list[str] | None) -> None:
        """Rows written before a resume need nothing: they are in the file."""

    def drop_unnoted(self) -> None:
        """Rows written but not noted are simply written again."""

    def close(self) -> None:
        """Close the file if it is open; idempotent."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _PngFolder:
    """A staged folder of ``<name>.png`` files, written as chunks arrive.

    Names are made safe as they arrive; a name that is unsafe or already taken waits under a
    hidden pending name, and ``finish`` settles every name from the whole list
    (``aeq.files.names.unique_names``), so the result never depends on the order of arrival.

    Each chunk's files are fsynced by a small thread pool while the job goes on: one fsync at a
    time waits for a journal commit each (~170 files/s measured here), many at once share
    commits (~8,000 files/s), and done in the background they cost the commit nothing.
    """

    def __init__(self, folder: Path, reopen: bool = False) -> None:
        self.folder = folder
        if not reopen:
            folder.mkdir()
        elif not folder.is_dir():
            raise FileNotFoundError(2, "the staged folder is missing", str(folder))
        self._file_of: dict[int, str] = {}
        self._claimed: set[str] = set()
        self._syncer = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="aeq-fsync")
        self._syncs: list[Future[None]] = []

    def write(self, start: int, names: list[str], array: np.ndarray) -> None:
        for offset, (name, data) in enumerate(zip(names, encode_gray_batch(array), strict=True)):
            index = start + offset
            file_name = self._claim(name, index)
            descriptor = os.open(
                self.folder / file_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666
            )
            try:
                os.write(descriptor, data)
            finally:
                os.close(descriptor)
            self._file_of[index] = file_name
        written = [self.folder / self._file_of[start + offset] for offset in range(len(names))]
        self._syncs.append(self._syncer.submit(_fsync_all, written))

    def sync(self) -> None:
        """Make every file written so far, and their names, durable."""
        for sync in self._syncs:
            sync.result()
        self._syncs.clear()
        fsync_folder(self.folder)

    def files(self, start: int, count: int) -> list[str]:
        """The file names items ``start ..`` went to."""
        return [self._file_of[index] for index in range(start, start + count)]

    def adopt(self, start: int, files: list[str] | None) -> None:
        """Take over items a client before a resume wrote to ``files``."""
        for index, file_name in enumerate(files or [], start):
            self._file_of[index] = file_name
            if not file_name.startswith(_PENDING_PREFIX):
                self._claimed.add(file_name.removesuffix(PNG_SUFFIX).casefold())

    def drop_unnoted(self) -> None:
        """Delete files a client wrote before a resume but did not note (they come again)."""
        noted = set(self._file_of.values())
        for entry in os.scandir(self.folder):
            if entry.name not in noted:
                os.unlink(entry.path)

    def finish(self, names: list[str]) -> None:
        """Wait for the files to be synced, give each its final name, sync the folder."""
        for sync in self._syncs:
            sync.result()
        self.close()
        final = [name + PNG_SUFFIX for name in unique_names(names)]
        moves = [index for index, name in enumerate(final) if self._file_of[index] != name]
        for index in moves:  # two steps, so no move lands on a file not yet moved away
            pending = f"{_PENDING_PREFIX}{index}{PNG_SUFFIX}"
            os.rename(self.folder / self._file_of[index], self.folder / pending)
            self._file_of[index] = pending
        for index in moves:
            os.rename(self.folder / self._file_of[index], self.folder / final[index])
        fsync_folder(self.folder)

    def close(self) -> None:
        """Stop the sync threads (waiting for the ones running); idempotent."""
        self._syncer.shutdown(wait=True, cancel_futures=True)

    def _claim(self, name: str, index: int) -> str:
        safe = sanitize(name)
        key = safe.casefold()
        if safe != name or key in self._claimed:
            return f"{_PENDING_PREFIX}{index}{PNG_SUFFIX}"
        self._claimed.add(key)
        return safe + PNG_SUFFIX


def _fsync_all(paths: list[Path]) -> None:
    for path in paths:
        fsync_file(path)
