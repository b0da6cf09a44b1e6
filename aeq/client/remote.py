"""Queued jobs from Python: ``Client`` submits, ``Job`` follows, ``JobStatus`` reports.

A thin layer over ``aeq.client.client.JobClient``, the CLI's own submit and follow: a job queued
here is a job like any other (``aeq status``, ``aeq results`` and ``aeq cancel`` see it, and
``Client.job(id)`` reattaches to a job the CLI queued). Results come back as NumPy arrays
(``aeq.files.memory.ArrayWriter``) instead of files.

Importing this module is cheap: redis and Celery are imported when a ``Client`` is made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aeq.core.catalog import Operation
from aeq.core.errors import JobError, UsageError
from aeq.core.settings import Settings, load_settings

if TYPE_CHECKING:
    from aeq.client.client import JobClient, Submission
    from aeq.client.submissions import Inputs, PathLike
    from aeq.files.memory import ArrayWriter
    from aeq.queue.jobs import JobRecord, JobState
    from aeq.queue.workers import WorkerInfo

# Notices while a job is followed (Redis lost, Redis back) go to this logger, so a notebook shows
# them as warnings where the CLI prints them.
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemCounts:
    """How many items a job holds and how many have been processed."""

    total: int
    done: int


@dataclass(frozen=True)
class ChunkCounts:
    """A job's chunks by outcome, and how many items each holds."""

    total: int
    queued: int
    done: int
    failed: int
    skipped: int
    chunk_size: int


@dataclass(frozen=True)
class ChunkFailure:
    """A chunk that failed, and why."""

    chunk: int
    reason: str


@dataclass(frozen=True)
class JobStatus:
    """A job's status: the fields ``aeq status --json`` prints, typed.

    Attributes:
        job: the job id.
        state: ``queued``, ``running``, ``done``, ``failed``, ``cancelled`` ... (a ``str`` enum).
        op: the operation.
        model: the model name.
        version: the model version the job runs.
        items: items in the job and items processed.
        chunks: chunks by outcome.
        providers: the ONNX Runtime execution providers that ran its chunks.
        workers: the workers that ran its chunks.
        created_at: when it was submitted (ISO 8601, local time).
        started_at: when its first chunk started (``None`` before).
        finished_at: when its last chunk finished (``None`` before).
        collected_at: when its results were collected (``None`` before).
        seconds: from start to finish, or to now while it runs (``None`` before it starts).
        inference_seconds: the workers' time on its chunks, summed.
        failures: the failed chunks, in chunk order.
        live_workers: the workers consuming the queue now (their heartbeats), by name.
    """

    job: str
    state: JobState
    op: Operation
    model: str
    version: int
    items: ItemCounts
    chunks: ChunkCounts
    providers: list[str]
    workers: list[str]
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    collected_at: str | None
    seconds: float | None
    inference_seconds: float
    failures: list[ChunkFailure]
    live_workers: list[WorkerInfo] = field(default_factory=list)

    @classmethod
    def from_record(cls, record: JobRecord, live: Sequence[WorkerInfo] = ()) -> JobStatus:
        """The status of a stored job, from the very dict ``aeq status --json`` prints."""
        from aeq.client.views import status_dict

        return cls.from_dict(status_dict(record, live))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobStatus:
        """Type the plain status dict (``aeq status --json``)."""
        from aeq.queue.jobs import JobState
        from aeq.queue.workers import WorkerInfo

        return cls(
            job=data["job"],
            state=JobState(data["state"]),
            op=Operation(data["op"]),
            model=data["model"],
            version=data["version"],
            items=ItemCounts(**data["items"]),
            chunks=ChunkCounts(**data["chunks"]),
            providers=list(data["providers"]),
            workers=list(data["workers"]),
            created_at=data["created_at"],
            started_at=data["started_at"],
            finished_at=data["finished_at"],
            collected_at=data["collected_at"],
            seconds=data["seconds"],
            inference_seconds=data["inference_seconds"],
            failures=[ChunkFailure(**failure) for failure in data["failures"]],
            live_workers=[WorkerInfo(**worker) for worker in data.get("live_workers", [])],
        )

    def to_dict(self) -> dict[str, Any]:
        """The plain dict again, as ``aeq status --json`` prints it."""
        data = asdict(self)
        data["state"], data["op"] = self.state.value, self.op.value
        return data

    @property
    def finished(self) -> bool:
        """True once the job will change no more (done, failed, cancelled, incomplete)."""
        return self.state.value not in ("queued", "running")


class Client:
    """Submits jobs to aeq's workers through Redis, and reattaches to jobs by id.

    Args:
        url: Redis URL of the broker, e.g. ``redis://localhost:6379/0`` (default:
            ``AEQ_BROKER_URL``). Job data goes to ``AEQ_RESULT_BACKEND`` if that is set, else to
            the same Redis.
        repository: the model repository versions are resolved in (default:
            ``AEQ_MODEL_REPOSITORY`` or ``./model_repository``); the workers must serve the
            same published versions.

    Raises:
        UsageError: no broker URL given or set.
        BrokerError: Redis cannot be reached.
    """

    def __init__(self, url: str | None = None, repository: PathLike | None = None) -> None:
        from aeq.client.client import JobClient

        self.settings = load_settings().with_overrides(
            broker_url=url, model_repository=None if repository is None else Path(repository)
        )
        if not self.settings.broker_url:
            raise UsageError(
                "no broker: pass aeq.Client(url='redis://HOST:6379/0') or set AEQ_BROKER_URL "
                "(aeq.denoise and the other verbs run in this process without one)"
            )
        self._jobs: JobClient = JobClient(self.settings, notify=logger.warning)

    def __repr__(self) -> str:
        return f"Client({self.settings.broker_url!r})"

    def submit(
        self,
        op: Operation | str,
        inputs: Inputs,
        model: str | None = None,
        version: int | None = None,
        *,
        chunk_size: int | None = None,
        resize: bool = False,
    ) -> Job:
        """Check the inputs, queue them as one job and return it without waiting.

        Args:
            op: ``"denoise"``, ``"reconstruct"``, ``"encode"``, ``"decode"`` or ``"score"``.
            inputs: images (an array, a path or a list of paths), or codes for ``"decode"`` (an
                array, or a codes file ``aeq encode`` wrote).
            model: the model (default: the operation's; for codes files, the one that made them).
            version: the model version (default: the latest; for codes files, theirs).
            chunk_size: items per chunk (one task each), 1 to 4096 (default: about 2 MiB of
                input).
            resize: resize images that are not 28 x 28 instead of refusing them.

        Raises:
            InputError: an input is unusable; nothing is queued.
            UsageError: an unknown operation, a bad chunk size, or codes without a model.
            ModelNotFoundError: unknown model or version.
        """
        from aeq.client.submissions import decode_submission, image_submission

        operation = parse_operation(op)
        if operation is Operation.DECODE:
            if resize:
                raise UsageError("resize applies to images, not to codes")
            submission = decode_submission(self.settings, inputs, model, version, chunk_size)
        else:
            submission = image_submission(
                self.settings, operation, inputs, model, version, chunk_size, resize
            )
        return Job(self._jobs, self._jobs.submit(submission))

    def job(self, job_id: str) -> Job:
        """The job with this id (queued here, by the CLI, or elsewhere).

        Raises:
            JobNotFoundError: no such job in the result store (or it expired).
        """
        self._jobs.record(job_id)
        return Job(self._jobs, job_id)


class Job:
    """A queued job: its status, its results (waiting for them), its cancellation.

    Attributes:
        id: the job id, as ``aeq status`` and ``aeq results`` take it.
    """

    def __init__(self, jobs: JobClient, job_id: str) -> None:
        self.id = job_id
        self._jobs = jobs
        self._result: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobStatus:
        """The job's status now (the fields of ``aeq status --json``)."""
        from aeq.queue.protocol import QUEUE
        from aeq.queue.workers import live_workers

        live = live_workers(self._jobs.store.client, QUEUE)
        return JobStatus.from_record(self._jobs.record(self.id), live)

    def results(self, keep: bool = False) -> np.ndarray:
        """Wait for the job to finish and return its output, in input order.

        uint8 ``(N, 28, 28)`` images, float32 ``(N, code_dim)`` codes for ``encode``, float32
        ``(N, 3)`` scores (mse, psnr, ssim; unranked: ``aeq.score`` ranks them) for ``score``. Once
        collected, the job's data is deleted from Redis unless ``keep``; this ``Job`` keeps the
        array, so calling ``results()`` again returns it.

        Raises:
            JobError: the job was cancelled, some chunks failed (``status().failures`` says why),
                or its results were collected and deleted before.
        """
        if self._result is not None:
            return self._result
        from aeq.files.memory import ArrayWriter

        spec = self._jobs.record(self.id).spec
        if self._jobs.store.is_deleted(self.id):
            raise JobError(
                f"the results of job {self.id} were collected and deleted "
                "(pass keep=True to results() to keep them in Redis)"
            )
        writer = ArrayWriter.for_job(spec.op, spec.total, spec.code_dim)
        self._jobs.follow(self.id, writer)
        self._jobs.finish(self.id, keep)
        self._result = writer.result()
        return self._result

    def cancel(self) -> int:
        """Cancel the job; returns how many queued chunks will be skipped.

        Raises:
            JobError: the job has already finished.
        """
        return self._jobs.cancel(self.id)


def run_queued(
    settings: Settings, submission: Submission, writer: ArrayWriter | None = None
) -> np.ndarray:
    """Queue a submission, collect its output as chunks finish, delete its data from Redis.

    The output is collected into ``writer`` when one is given (its ``names`` then hold the item
    names), else into a new ``ArrayWriter``.

    Finished chunks are collected between the chunks being queued, as ``aeq denoise`` does, so
    Redis does not hold a large job's outputs and inputs all at once. Interrupted
    (``KeyboardInterrupt``), the job is cancelled: nobody holds its id to collect it later.
    """
    from aeq.client.client import FollowState, JobClient, submit_collecting
    from aeq.files.memory import ArrayWriter

    client = JobClient(settings, notify=logger.warning)
    spec = submission.spec()
    if writer is None:
        writer = ArrayWriter.for_job(spec.op, spec.total, spec.code_dim)
    state = FollowState.of(submission)
    job = submit_collecting(client, submission, writer, state)
    try:
        client.follow(job, writer, state)
    except KeyboardInterrupt:
        _cancel_quietly(client, job)
        raise
    client.finish(job, keep=False)
    return writer.result()


def parse_operation(op: Operation | str) -> Operation:
    """``op`` as an ``Operation``.

    Raises:
        UsageError: not one of the five operations.
    """
    try:
        return Operation(op)
    except ValueError:
        choices = ", ".join(repr(item.value) for item in Operation)
        raise UsageError(f"unknown operation {op!r}; choose one of {choices}") from None


def _cancel_quietly(client: JobClient, job: str) -> None:
    try:
        client.cancel(job)
    except JobError:  # it finished meanwhile
        pass
