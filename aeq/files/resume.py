"""A resume point: what a job's waiting client has stored for good, so a new client can go on.

An attached job streams its outputs (``aeq denoise ... -o OUT``): each finished chunk is written
into the staged output, made durable, noted here, and only then deleted from Redis, so Redis holds
a window of the job however large it is. The staged output therefore lives in a hidden folder
beside the target with a name that does not change, ``.<OUT name>.aeq-resume/``:

    job.json        the job id and what it is (op, model, version, items, chunk size)
    output[.npy]    the staged output (a .npy, or a folder of PNGs)
    chunks.jsonl    one line per chunk stored for good: chunk, first item, item names (and for
                    PNGs the file each item went to), appended and fsynced after the data

A client that dies (SIGKILL, power loss) leaves the folder behind; the same command with
``--resume`` reads it, reopens the staged output, skips the chunks noted, queues what its
submitter had not queued, and collects the rest. The folder goes once the output is in place.
A line torn by a crash is ignored: its chunk is written again (its output is still in Redis,
since deleting comes after noting).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from aeq.core.durable import fsync_file, fsync_folder
from aeq.core.errors import AeqError, UsageError

RESUME_MARK = ".aeq-resume"
JOB_FILE = "job.json"
CHUNKS_FILE = "chunks.jsonl"
OUTPUT_STEM = "output"
RESUME_FORMAT = "aeq-resume"


@dataclass(frozen=True)
class ResumeJob:
    """The job a resume point belongs to."""

    job: str
    op: str
    model: str
    version: int
    total: int
    chunk_size: int


@dataclass(frozen=True)
class StoredChunk:
    """One chunk the client stored for good: its items' names (none for an output that keeps
    none, ``.npy``) and (PNG) file names."""

    chunk: int
    start: int
    names: list[str]
    files: list[str] | None = None
    items: int = 0  # how many items it holds (0 in notes written before it was kept: the names)

    @property
    def stop(self) -> int:
        """The item after its last."""
        return self.start + (self.items or len(self.names))


class ResumePoint:
    """The resume folder of one output target."""

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self.folder = self.target.parent / f".{self.target.name}{RESUME_MARK}"

    def exists(self) -> bool:
        """Whether an unfinished job noted itself here."""
        return (self.folder / JOB_FILE).is_file()

    def staged(self, suffix: str) -> Path:
        """Where the staged output lives (``suffix`` ``.npy``, or ``""`` for a PNG folder)."""
        return self.folder / f"{OUTPUT_STEM}{suffix}"

    def prepare(self) -> None:
        """Create the folder, empty (an old one is deleted), before the output is staged in it."""
        self.remove()
        try:
            self.folder.mkdir()
        except OSError as error:
            raise AeqError(f"cannot create {self.folder}: {error.strerror or error}") from None

    def record_job(self, job: ResumeJob) -> None:
        """Note the job, once it exists: from now on ``--resume`` can go on with it."""
        path = self.folder / JOB_FILE
        try:
            path.write_text(json.dumps({"format": RESUME_FORMAT, **asdict(job)}))
            fsync_file(path)
            fsync_folder(self.folder)
            fsync_folder(self.folder.parent)
        except OSError as error:
            raise AeqError(f"cannot write {path}: {error.strerror or error}") from None

    def job(self) -> ResumeJob:
        """The job noted here.

        Raises:
            UsageError: there is no resume point, or it is not one aeq wrote.
        """
        path = self.folder / JOB_FILE
        if not path.is_file():
            raise UsageError(
                f"nothing to resume for {self.target}: no unfinished job wrote there "
                f"({self.folder.name} is missing)"
            )
        try:
            data = json.loads(path.read_text())
            if data.pop("format") != RESUME_FORMAT:
                raise ValueError("not an aeq resume point")
            return ResumeJob(**data)
        except (ValueError, TypeError, KeyError, OSError) as error:
            raise UsageError(f"{path} is not a resume point aeq can read ({error})") from None

    def note(self, chunks: Iterable[StoredChunk]) -> None:
        """Append ``chunks`` (their data is durable already) and make the lines durable."""
        # vars, not asdict: asdict deep-copies every name (a second of CPU per 200,000 items).
        lines = "".join(json.dumps(vars(chunk)) + "\n" for chunk in chunks)
        if not lines:
            return
        try:
            with (self.folder / CHUNKS_FILE).open("a", encoding="utf-8") as log:
                log.write(lines)
                log.flush()
                os.fsync(log.fileno())
        except OSError as error:
            raise AeqError(f"cannot write {self.folder}: {error.strerror or error}") from None

    def stored(self) -> list[StoredChunk]:
        """The chunks noted so far. A torn last line (a crash mid-append) is cut off the file,
        so the next note starts on a line of its own."""
        path = self.folder / CHUNKS_FILE
        if not path.exists():
            return []
        data = path.read_bytes()
        chunks, kept = [], 0
        for line in data.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("torn")
                chunks.append(StoredChunk(**json.loads(line)))
            except (ValueError, TypeError):
                break
            kept += len(line)
        if kept < len(data):
            os.truncate(path, kept)
        return chunks

    def remove(self) -> None:
        """Delete the folder and everything in it (missing is fine)."""
        shutil.rmtree(self.folder, ignore_errors=True)
