"""The client side of a job: queue its chunks, follow them, write their outputs, clean up.

Submitting stores each chunk's array under the job's keys and sends one small Celery message per
chunk (``aeq.queue.protocol``). Following reads completion notices (BLPOP, no polling sleeps),
writes each finished chunk's output through the writer as it arrives, so memory holds about one
chunk at a time however large the job, and ends when every chunk has finished. Any process that
reaches Redis can follow a job, any number of times until its data is deleted: the chunk
statuses, not the notices, are the record (notices only wake the follower).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import redis
from kombu.exceptions import OperationalError

from aeq.core.catalog import Operation
from aeq.core.errors import JobError, StoreFullError
from aeq.core.settings import Settings
from aeq.files.names import NameSlice
from aeq.queue.jobs import (
    CANCEL_EVENT,
    ChunkOutcome,
    ChunkStatus,
    JobRecord,
    JobSpec,
    JobState,
    JobStore,
)
from aeq.queue.lost_messages import QUIET_S, lost_chunks
from aeq.queue.protocol import (
    QUEUE,
    TASK_NAME,
    ChunkMessage,
    encode_array,
    expected_layout,
    output_layout,
)
from aeq.queue.store import connect, redact
from aeq.queue.workers import Liveness
from aeq.repository import ModelVersion

# How long one BLPOP waits before the follower re-reads the chunk statuses (which also catches
# notices another follower of the same job consumed).
WAIT_SLICE_S = 1.0
# Notices taken per round trip once one has arrived.
EVENTS_PER_READ = 256
# Finished chunks fetched per round trip (outputs and names).
FETCH_BATCH_CHUNKS = 4
# A streaming client makes written chunks durable and lets Redis go of them this many at a time,
# or every NOTE_INTERVAL_S when they come slower (fsyncs are its dearest per-chunk cost).
NOTE_BATCH_CHUNKS = 2
NOTE_INTERVAL_S = 1.0
# A job may take Redis only up to this share of its maxmemory, so running jobs keep room for
# their outputs: a job that would pass it is refused before anything is queued.
ADMISSION_SHARE = 0.9
# A waiting client keeps at most this many chunks per live worker process queued and unfinished
# (settings.window_chunks overrides): one running and one ready to start in every process, so
# the workers never wait for the client, and a job queued later by someone else waits behind
# about one chunk per process, not behind the whole of this job. At least MIN_WINDOW_CHUNKS, so
# a job starts moving while the first worker's heartbeat is still on its way.
WINDOW_CHUNKS_PER_SLOT = 2
MIN_WINDOW_CHUNKS = 4
# A job's first window of chunks goes ahead of every job's later chunks, so a job submitted behind
# a big one (waiting or --no-wait) waits for a busy slot to free, not behind the big one's
# queued chunks. kombu's Redis transport keeps a list per priority step and its workers pop the
# lists in order: priority 0 is the queue's own list, popped first; 9 the last.
FIRST_TURN_PRIORITY = 0
BACKLOG_PRIORITY = 9
# Pauses between tries while a follower rides out a lost Redis (for settings.reconnect_window_s).
RECONNECT_PAUSES_S = (0.5, 1.0, 2.0, 4.0)

Progress = Callable[[int], None]
Notice = Callable[[str], None]
# Redis unreachable, as redis-py and (for the broker side of send_task) kombu say it.
LOST_REDIS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OperationalError)


class RedisGoneError(JobError):
    """Redis stayed unreachable past ``settings.reconnect_window_s``."""


class ChunkSource(Protocol):
    """What ``aeq.files.inputs`` hands out: a known number of named items, read lazily in
    chunks."""

    @property
    def total(self) -> int: ...

    @property
    def names(self) -> Sequence[str]: ...

    def chunks(self, size: int) -> Iterator[tuple[Sequence[str], np.ndarray]]: ...


class ChunkWriter(Protocol):
    """What ``aeq.files.outputs`` hands out: accepts chunks in any order at their item offset."""

    def write(self, start: int, names: Sequence[str], array: np.ndarray) -> None: ...


@dataclass(frozen=True)
class Submission:
    """A job to queue: an operation with one model version over a source of items."""

    op: Operation
    version: ModelVersion
    source: ChunkSource
    chunk_size: int
    output: str = ""  # remembered as the default ``aeq results -o``
    # The waiting client stores each finished chunk for good and deletes it from Redis
    # (its writer has a resume point: ``aeq.files.resume``).
    streamed: bool = False

    def spec(self) -> JobSpec:
        return JobSpec(
            op=self.op,
            model=self.version.model,
            version=self.version.version,
            total=self.source.total,
            chunk_size=self.chunk_size,
            code_dim=self.version.code_dim,
            output=self.output,
            streamed=self.streamed,
        )


@dataclass
class FollowState:
    """What a follower has seen of a job so far."""

    written: set[int] = field(default_factory=set)
    failed: dict[int, ChunkStatus] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    items: int = 0
    cancelled: bool = False
    spec: JobSpec | None = None
    # When a chunk of the job last finished (or the follow began), for the lost-message check.
    news_at: float = field(default_factory=time.monotonic)
    # The job's item names when this follower has them itself: a streamed job's submitter, which
    # queued its chunks without them (``None``: they are read from the store with the outputs).
    names: Sequence[str] | None = None
    # Chunks written but not yet made durable and noted at the writer's resume point (a
    # streamed job's outputs leave Redis a batch at a time: see ``JobClient._stream_out``).
    unnoted: list[tuple[int, int, Sequence[str]]] = field(default_factory=list)
    noted_at: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, submission: Submission) -> FollowState:
        """The state to follow ``submission``'s job with, by the client that submits it."""
        return cls(names=submission.source.names if submission.streamed else None)

    def finished(self) -> int:
        return len(self.written) + len(self.failed) + len(self.skipped)

    def job_spec(self) -> JobSpec:
        """The followed job's spec (read by the first ``follow`` call)."""
        if self.spec is None:
            raise JobError("the job was not read yet; call follow() first")
        return self.spec


class JobClient:
    """Talks to the result store and the broker on behalf of one CLI command."""

    def __init__(self, settings: Settings, notify: Notice | None = None) -> None:
        if not settings.broker_url:
            raise JobError("no broker configured (AEQ_BROKER_URL); jobs run in local mode")
        self.settings = settings
        # Where one-line notices go (a lost Redis, a reconnection); the CLI prints them.
        self.notify: Notice = notify or (lambda _: None)
        self.store = JobStore(connect(settings.results_url or ""), settings.result_ttl_s)
        self.broker = self.store.client
        if settings.broker_url != settings.results_url:
            self.broker = connect(settings.broker_url)
        # Says when no worker consumes the queue while this client waits (workers' heartbeats).
        self.liveness = Liveness(self.store.client, QUEUE, self.notify)
        self._celery: Any = None

    # -- submitting ---------------------------------------------------------------------------

    def submit(
        self,
        submission: Submission,
        on_queued: Progress | None = None,
        between_chunks: Callable[[str], None] | None = None,
        on_created: Callable[[str], None] | None = None,
        paced: bool = False,
    ) -> str:
        """Create the job and queue every chunk; return the job id.

        ``on_created(job)`` runs once the job exists, before its first chunk is queued (the CLI
        prints the id there, so a user can always find the job); ``between_chunks(job)`` runs
        after each chunk is queued (the waiting CLI writes finished outputs there; ``paced``:
        and waits for room, so only a window of inputs counts against Redis' memory). Interrupted
        before every chunk is queued, the job is cancelled: it could never complete.

        Raises:
            StoreFullError: the job would not fit in the memory Redis has left (nothing queued),
                or Redis filled up while queuing (the job is cancelled).
            JobError: Redis was lost while queuing (the job cannot complete).
        """
        spec = submission.spec()
        self._admit(spec, self.window(self.liveness.count_slots()) if paced else None)
        job = self.store.create(spec)
        queued_items = 0

        def after_each(chunk: int, count: int) -> None:
            nonlocal queued_items
            queued_items += count
            if on_queued:
                on_queued(queued_items)
            if between_chunks:
                self._resilient(job, functools.partial(between_chunks, job))

        try:
            if on_created:  # inside: an interrupt while it runs cancels the job too
                on_created(job)
            self._queue_chunks(job, spec, submission.source, 0, after_each)
        except redis.exceptions.OutOfMemoryError:
            self.store.cancel(job)
            raise StoreFullError(
                f"Redis is full (its maxmemory) after {queued_items:,} of {spec.total:,} items "
                f"were queued: job {job} was cancelled and its inputs dropped. A job's data stays "
                "in Redis until collected (about 1.6 KB per image): raise Redis' maxmemory, "
                "collect finished jobs, or submit fewer images at a time"
            ) from None
        except RedisGoneError:
            raise RedisGoneError(  # a JobError: the same to callers that need not tell them apart
                f"Redis at {redact(self.settings.results_url or '')} did not come back within "
                f"{self.settings.reconnect_window_s} s while job {job} was queuing "
                f"({queued_items:,} of {spec.total:,} items queued); the job cannot complete and "
                "reads 'incomplete' once Redis is back: run the command again"
            ) from None
        except BaseException:
            self.store.cancel(job)
            raise
        if queued_items != spec.total:
            self.store.cancel(job)
            raise JobError(f"the input yielded {queued_items} items, expected {spec.total}")
        self.store.end_submission(job, spec.chunks)
        return job

    def resubmit(
        self,
        job: str,
        submission: Submission,
        writer: ChunkWriter,
        state: FollowState,
        on_progress: Progress | None = None,
    ) -> None:
        """Queue, a window at a time, the chunks of ``job`` its submitter did not surely queue
        before it died (``submission`` is the same inputs again); nothing if it queued them all.
        The chunk it may have queued unrecorded goes again: a message sent twice is applied once.
        """
        record = self.store.get(job, with_statuses=False)
        spec = record.spec
        if record.queued >= spec.chunks:
            return
        if record.cancelled:
            raise JobError(f"job {job} was cancelled; nothing to resume")
        self.store.resume_submission(job)
        self.follow(job, writer, state, on_progress, block=False)

        def make_room(chunk: int, _count: int) -> None:
            room = functools.partial(self.wait_for_room, job, chunk + 1, writer, state, on_progress)
            self._resilient(job, room)

        self._queue_chunks(job, spec, submission.source, record.queued, make_room)
        self.store.end_submission(job, spec.chunks)

    def _queue_chunks(
        self,
        job: str,
        spec: JobSpec,
        source: ChunkSource,
        first: int,
        after_each: Callable[[int, int], None],
    ) -> None:
        """Queue ``source``'s chunks from chunk ``first`` on, calling ``after_each(chunk, items)``
        after each. Each put and message is retried after a lost Redis: safe, since the put is
        idempotent and a message sent twice is applied once (the completion script keeps the
        first)."""
        with self._celery_app().producer_or_acquire() as producer:
            for chunk, (names, array) in enumerate(source.chunks(spec.chunk_size)):
                if chunk < first:
                    continue
                queue = functools.partial(
                    self._queue_chunk, producer, job, spec, chunk, names, array
                )
                self._resilient(job, queue)
                after_each(chunk, len(array))

    def _admit(self, spec: JobSpec, window_chunks: int | None) -> None:
        """Refuse a job that would take Redis past ``ADMISSION_SHARE`` of its maxmemory."""
        used, limit = self.store.memory()
        if not limit:
            return
        need = spec.redis_bytes(window_chunks)
        room = int(limit * ADMISSION_SHARE) - used
        if need > room:
            raise StoreFullError(
                f"Redis has {max(room, 0) / 2**20:,.1f} MiB free for new jobs ({used / 2**20:,.1f}"
                f" of its maxmemory {limit / 2**20:,.1f} MiB used, {1 - ADMISSION_SHARE:.0%} kept "
                f"for running jobs); this job needs about {need / 2**20:,.1f} MiB "
                f"({spec.total:,} items until collected): submit fewer items at a time, collect "
                "finished jobs ('aeq results'), or raise Redis' maxmemory"
            )

    def _queue_chunk(
        self, producer: Any, job: str, spec: JobSpec, chunk: int, names: Sequence[str], array: Any
    ) -> None:
        if len(array) != spec.chunk_count(chunk) or len(names) != len(array):
            raise JobError(
                f"chunk {chunk} has {len(array)} items, expected {spec.chunk_count(chunk)}"
            )
        dtype, shape = expected_layout(spec.op, len(array), spec.code_dim)
        if str(array.dtype) != dtype or array.shape != shape:
            raise JobError(
                f"chunk {chunk} is {array.dtype} {array.shape}, expected {dtype} {shape}"
            )
        # A streamed job's client writes the names itself (FollowState.names): Redis needs none.
        self.store.put_chunk(job, chunk, encode_array(array), None if spec.streamed else names)
        self._send_chunk(producer, job, spec, chunk)

    def _send_chunk(self, producer: Any, job: str, spec: JobSpec, chunk: int) -> None:
        """Send chunk ``chunk``'s message (its input is in the store already)."""
        count = spec.chunk_count(chunk)
        dtype, shape = expected_layout(spec.op, count, spec.code_dim)
        message = ChunkMessage(job, chunk, spec.op, spec.model, spec.version, count, dtype, shape)
        priority = FIRST_TURN_PRIORITY if chunk < self.window() else BACKLOG_PRIORITY
        self._celery_app().send_task(
            TASK_NAME,
            kwargs=message.to_wire(),
            producer=producer,
            serializer="msgpack",
            priority=priority,
        )

    def _celery_app(self) -> Any:
        if self._celery is None:
            from worker.app import make_app

            self._celery = make_app(self.settings)
        return self._celery

    # -- following ----------------------------------------------------------------------------

    def follow(
        self,
        job: str,
        writer: ChunkWriter,
        state: FollowState | None = None,
        on_progress: Progress | None = None,
        block: bool = True,
    ) -> FollowState:
        """Write every finished chunk's output; with ``block``, until the whole job has finished.

        The first call with a given ``state`` reads every chunk status (the record); later work
        is driven by completion notices. Without ``block`` it writes what the notices say is
        ready and returns at once (used between chunks while submitting). A lost Redis is ridden
        out for ``settings.reconnect_window_s`` (the record is read again once it is back). Raises
        ``JobError`` if the job was cancelled, a chunk failed (after the rest finished) or the
        job can never finish (its submitter stopped early), so the caller aborts its output.
        """
        state = state or FollowState()
        if state.spec is None:
            self._resilient(job, lambda: self._read_record(job, writer, state))
        spec = state.job_spec()
        if not block:
            self.liveness.check(job)
            self._take_events(job, writer, state, self._pending_events(job))
        while block and state.finished() < spec.chunks and not state.cancelled:
            self._resilient(job, lambda: self._follow_step(job, writer, state))
            if on_progress:
                on_progress(state.items)
        if on_progress:
            on_progress(state.items)
        if block:
            _raise_if_unsuccessful(job, spec, state)
        return state

    def window(self, slots: int | None = None) -> int:
        """How many chunks a waiting client may have queued and unfinished at once, with
        ``slots`` worker processes (default: those seen at the last liveness check)."""
        if self.settings.window_chunks:
            return self.settings.window_chunks
        slots = self.liveness.slots if slots is None else slots
        return max(MIN_WINDOW_CHUNKS, WINDOW_CHUNKS_PER_SLOT * slots)

    def wait_for_room(
        self,
        job: str,
        queued: int,
        writer: ChunkWriter,
        state: FollowState,
        on_progress: Progress | None = None,
    ) -> None:
        """Write finished chunks as they come until fewer than ``window()`` of the ``queued``
        chunks are unfinished (the submitter's pace: Redis holds about a window, not a job)."""
        self.follow(job, writer, state, on_progress, block=False)
        chunks = state.job_spec().chunks
        while queued < chunks and queued - state.finished() >= self.window():
            if state.cancelled:
                return  # submit() ends the submission and raises
            self.store.renew_lease(job)  # waiting, not gone: the job is not incomplete
            self._follow_step(job, writer, state)
            if on_progress:
                on_progress(state.items)

    def _follow_step(self, job: str, writer: ChunkWriter, state: FollowState) -> None:
        self.liveness.check(job)
        events = self._next_events(job)
        if events is not None:
            self.liveness.progressed(job)
            self._take_events(job, writer, state, events)
            return
        # Nothing for a while: read the record again (the statuses are the truth).
        record = self._read_record(job, writer, state)
        if record.state is JobState.INCOMPLETE:
            raise JobError(incomplete_reason(record))
        if time.monotonic() - state.news_at >= QUIET_S:
            state.news_at = time.monotonic()
            self._requeue_lost(record)

    def _requeue_lost(self, record: JobRecord) -> None:
        """Queue again the chunks of a quiet job whose message the broker lost (see
        ``aeq.queue.lost_messages``)."""
        if record.cancelled:
            return
        outstanding = [c for c in range(record.queued) if c not in record.statuses]
        lost = lost_chunks(self.broker, QUEUE, record.id, outstanding)
        if not lost:
            return
        with self._celery_app().producer_or_acquire() as producer:
            for chunk in lost:
                self._send_chunk(producer, record.id, record.spec, chunk)
        shown = ", ".join(map(str, lost[:5])) + (", ..." if len(lost) > 5 else "")
        self.notify(
            f"the broker had lost the message of {len(lost)} chunk(s) of job {record.id} "
            f"(chunk {shown}; a Redis restart?): queued again"
        )

    def _read_record(self, job: str, writer: ChunkWriter, state: FollowState) -> JobRecord:
        record = self.store.get(job)
        state.spec = record.spec
        state.cancelled = state.cancelled or record.cancelled
        self._take_statuses(job, writer, state, record.statuses.items())
        return record

    def _resilient(self, job: str, step: Callable[[], object]) -> None:
        """Run ``step``; while Redis is unreachable, try again with pauses for at most
        ``settings.reconnect_window_s``, then raise ``RedisGoneError`` saying how to resume."""
        lost_at: float | None = None
        window_s = self.settings.reconnect_window_s
        pauses = iter(RECONNECT_PAUSES_S)
        while True:
            try:
                step()
            except LOST_REDIS as error:
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    self.notify(
                        f"lost Redis ({error}); job {job} lives on in Redis: reconnecting for up "
                        f"to {window_s} s"
                    )
                if now - lost_at >= window_s:
                    raise RedisGoneError(
                        f"Redis has not come back in {window_s} s; job {job} may "
                        f"still be running: collect it with 'aeq results {job}' once Redis is back"
                    ) from None
                time.sleep(next(pauses, RECONNECT_PAUSES_S[-1]))
                continue
            if lost_at is not None:
                self.notify(f"Redis is back after {time.monotonic() - lost_at:.0f} s")
            return

    def _take_events(
        self, job: str, writer: ChunkWriter, state: FollowState, events: list[bytes]
    ) -> None:
        state.cancelled = state.cancelled or CANCEL_EVENT in events
        chunks = sorted({int(e) for e in events if e.isdigit()} - state.written)
        self._take_statuses(job, writer, state, self.store.statuses_of(job, chunks).items())

    def _pending_events(self, job: str) -> list[bytes]:
        return list(self.store.client.lpop(self.store.events_key(job), EVENTS_PER_READ) or [])

    def _next_events(self, job: str) -> list[bytes] | None:
        first = self.store.wait_event(job, WAIT_SLICE_S)
        if first is None:
            return None
        return [first, *self._pending_events(job)]

    def _take_statuses(
        self,
        job: str,
        writer: ChunkWriter,
        state: FollowState,
        statuses: Iterable[tuple[int, ChunkStatus]],
    ) -> None:
        ready = []
        finished_before = state.finished()
        for chunk, status in sorted(statuses):
            if chunk in state.written or chunk in state.failed or chunk in state.skipped:
                continue
            if status.outcome is ChunkOutcome.DONE:
                ready.append(chunk)
            elif status.outcome is ChunkOutcome.FAILED:
                state.failed[chunk] = status
            else:
                state.skipped.add(chunk)
        spec = state.job_spec()
        for chunk, names, array in self._outputs(job, spec, ready, state.names):
            start = spec.chunk_start(chunk)
            writer.write(start, names, array)
            state.written.add(chunk)
            state.items += len(array)
            if spec.streamed:
                state.unnoted.append((chunk, start, names))
        if spec.streamed:
            self._stream_out(job, writer, state)
        if ready or finished_before != state.finished():
            state.news_at = time.monotonic()

    def _stream_out(self, job: str, writer: ChunkWriter, state: FollowState) -> None:
        """Let Redis go of the written chunks once the writer has made them durable and noted
        them at its resume point (a follower without one, e.g. 'aeq results', leaves them).

        A batch at a time (``NOTE_BATCH_CHUNKS``, or what ``NOTE_INTERVAL_S`` brought), in the
        writer's own thread where it has one: each note costs two fsyncs. Until then a chunk's
        output stays in Redis, so a client killed meanwhile loses nothing, and the last chunks
        need no note: collecting the job deletes them."""
        due = time.monotonic() - state.noted_at >= NOTE_INTERVAL_S
        if len(state.unnoted) < NOTE_BATCH_CHUNKS and not (due and state.unnoted):
            return
        stored, state.unnoted, state.noted_at = state.unnoted, [], time.monotonic()
        forget = functools.partial(self.store.forget_outputs, job, [c for c, _, _ in stored])
        behind = getattr(writer, "checkpoint_behind", None)
        if behind is not None:
            behind(stored, then=forget)  # the fsyncs overlap the next chunks' transfers
            return
        checkpoint = getattr(writer, "checkpoint", None)
        if checkpoint is not None and checkpoint(stored):
            forget()

    def _outputs(
        self, job: str, spec: JobSpec, chunks: list[int], names: Sequence[str] | None = None
    ) -> Iterator[tuple[int, Sequence[str], np.ndarray]]:
        """``(chunk, names, output)`` of finished chunks, checked, a few per round trip (fewer
        waits; memory still bounded by a few chunks). ``names``: the job's item names, when
        the follower has them (none are read from the store then)."""
        for start in range(0, len(chunks), FETCH_BATCH_CHUNKS):
            batch = chunks[start : start + FETCH_BATCH_CHUNKS]
            fetched = self.store.outputs(job, batch, with_names=names is None)
            for chunk, (raw, stored_names) in zip(batch, fetched, strict=True):
                first = spec.chunk_start(chunk)
                chunk_names = (
                    stored_names
                    if names is None
                    else NameSlice(names, first, first + spec.chunk_count(chunk))
                )
                yield chunk, chunk_names, _output_array(job, spec, chunk, raw)

    # -- partial results ------------------------------------------------------------------------

    def settled(self, job: str, on_progress: Progress | None = None) -> JobRecord:
        """Wait until every chunk surely queued has a status and nobody is queuing more; return
        the record then (a chunk whose message went out unrecorded may still finish later)."""
        while True:
            record = self._resilient_record(job)
            if on_progress:
                on_progress(record.items_done)
            queued_all_finished = all(c in record.statuses for c in range(record.queued))
            if not record.submitting and queued_all_finished:
                return record
            if record.cancelled and not record.submitting:
                return record
            self._resilient(job, lambda: self.store.wait_event(job, WAIT_SLICE_S))

    def write_done_chunks(self, record: JobRecord, writer: ChunkWriter) -> int:
        """Write the outputs of the record's done chunks one after another (item offsets close
        up over the chunks that did not finish); return how many items were written."""
        done = [c for c, s in sorted(record.statuses.items()) if s.outcome is ChunkOutcome.DONE]
        offset = 0
        for _, names, array in self._outputs(record.id, record.spec, done):
            writer.write(offset, names, array)
            offset += len(array)
        return offset

    def _resilient_record(self, job: str) -> JobRecord:
        records: list[JobRecord] = []
        self._resilient(job, lambda: records.append(self.store.get(job)))
        return records[-1]

    # -- the rest -----------------------------------------------------------------------------

    def record(self, job: str) -> JobRecord:
        """The job as stored (``JobNotFoundError`` if unknown or expired)."""
        return self.store.get(job)

    def cancel(self, job: str) -> int:
        """Cancel a job; returns how many queued chunks will be skipped."""
        record = self.store.get(job, with_statuses=False)
        if record.state not in (record.state.QUEUED, record.state.RUNNING):
            raise JobError(f"job {job} is {record.state.value}; nothing to cancel")
        return self.store.cancel(job)

    def finish(self, job: str, keep: bool) -> None:
        """Mark the job's results collected; unless ``keep``, delete its data from Redis."""
        self.store.mark_collected(job, keep)


def submit_collecting(
    client: JobClient,
    submission: Submission,
    writer: ChunkWriter,
    state: FollowState,
    on_progress: Progress | None = None,
    on_created: Callable[[str], None] | None = None,
) -> str:
    """Queue ``submission`` a window at a time, writing the outputs that finish meanwhile;
    return the job id.

    What every submitter that waits for its results does (``aeq denoise -o``, the Python API's
    queued verbs, ``aeq bench``): the next chunk is queued only once fewer than
    ``client.window()`` are unfinished, so Redis holds a window of the job's inputs however large
    it is, and jobs queued meanwhile by others take their turns between this job's chunks. The
    caller then follows the job to its end with ``client.follow(job, writer, state)``, and
    decides what an interrupt means at each step. ``on_created`` is ``JobClient.submit``'s.
    """
    queued = 0

    def count_queued(items: int) -> None:
        nonlocal queued
        queued = -(-items // submission.chunk_size)  # chunks (the last may be short)

    def collect_ready(job: str) -> None:  # retried as a whole after a lost Redis
        client.wait_for_room(job, queued, writer, state, on_progress)

    return client.submit(
        submission,
        on_queued=count_queued,
        between_chunks=collect_ready,
        on_created=on_created,
        paced=True,
    )


def _output_array(job: str, spec: JobSpec, chunk: int, raw: bytes | None) -> np.ndarray:
    """A finished chunk's output bytes as the array they encode, after checking their size."""
    dtype_name, shape = output_layout(spec.op, spec.chunk_count(chunk), spec.code_dim)
    dtype = np.dtype(dtype_name)
    expected = int(np.prod(shape)) * dtype.itemsize
    if raw is None or len(raw) != expected:
        got = "nothing" if raw is None else f"{len(raw)} bytes"
        raise JobError(
            f"job {job} chunk {chunk}: output holds {got}, expected {expected} bytes "
            "(expired or deleted?)"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def incomplete_reason(record: JobRecord) -> str:
    """Why an incomplete job can never finish, and what can still be had from it."""
    if record.spec.streamed:
        return streamed_reason(record)
    return (
        f"job {record.id} is incomplete: its submitter stopped after queuing {record.queued} of "
        f"{record.spec.chunks} chunks, so it can never finish; 'aeq results {record.id} "
        "--partial' writes the items of the chunks that did (run the command again for the rest)"
    )


def streamed_reason(record: JobRecord) -> str:
    """Why 'aeq results' cannot collect a streamed job, and what can."""
    where = f" into {record.spec.output}" if record.spec.output else ""
    return (
        f"job {record.id} streams its outputs{where} through the client that submitted it: "
        "Redis keeps only what that client has not stored yet. If it stopped, run the same "
        "command again with --resume"
    )


def _raise_if_unsuccessful(job: str, spec: JobSpec, state: FollowState) -> None:
    if state.cancelled:
        raise JobError(f"job {job} was cancelled; no output written")
    if state.failed:
        chunk, status = min(state.failed.items())
        raise JobError(
            f"job {job}: {len(state.failed)} of {spec.chunks} chunks failed "
            f"(chunk {chunk}: {status.reason}); no output written, 'aeq status {job}' lists them"
        )
