"""The job store: everything about a job lives in Redis under keys that share the job's id.

    aeq:jobs                      zset   job id -> the job's expiry time (recent jobs, for
                                         ``aeq jobs``; entries past it are pruned)
    aeq:job:{ID}                  hash   op, model, version, total, chunk_size, chunks, queued,
                                         created_at, started_at, finished_at, collected_at,
                                         cancelled, done, failed, skipped, items_done, output...
    aeq:job:{ID}:in:N             string chunk N's input array, raw bytes (deleted once processed)
    aeq:job:{ID}:out:N            string chunk N's output array, raw bytes
    aeq:job:{ID}:names            hash   N -> msgpack list of chunk N's item names
    aeq:job:{ID}:chunks           hash   N -> msgpack status of a finished chunk (state, reason,
                                         provider, worker, seconds, items)
    aeq:job:{ID}:events           list   chunk indices as they finish ("cancel" on cancel); the
                                         client BLPOPs it instead of polling
    aeq:job:{ID}:submitter        string the submitter's lease while it queues chunks: it expires
                                         SUBMITTER_LEASE_S after the last chunk put, so a job
                                         whose submitter died before queuing them all reads
                                         ``incomplete`` instead of ``running`` forever

The ``{ID}`` braces are a Redis Cluster hash tag: all of a job's keys live in one slot, so the
completion script below may touch them together. Every key expires after the result TTL.

A chunk is finished by one Lua script (atomic, like MULTI/EXEC, but it can also check first): if
the chunk already has a status it does nothing, else it stores the output, the status and the
counters, deletes the input and appends the completion notice. A redelivered message therefore
never duplicates items, and a reader never sees an output without its status or vice versa.

A full Redis (``maxmemory`` with ``noeviction``) refuses writes that may grow memory, and a
script cannot be rolled back, so the script is ordered for it: it checks everything first (the
staged output exists, the chunk index fits the job, no status yet), then deletes the chunk's input
before any other write. Redis refuses a growing write inside a script only while the script has
written nothing (``scriptVerifyOOM``), so the script either does nothing at all (the output's SET
was refused: the caller learns it and may try again) or everything.

Job state is derived from the counters when read, so no writer has to decide it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgpack
import redis

from aeq.core.catalog import PIXELS_PER_IMAGE, SCORE_METRICS, Operation
from aeq.core.errors import JobError, JobNotFoundError, StoreFullError

INDEX_KEY = "aeq:jobs"
CANCEL_EVENT = b"cancel"
_JOB_ID_BYTES = 6
CODE_ITEMSIZE = 4  # codes travel as float32
SCORE_ITEMSIZE = 4  # so do scores
# A submitter refreshes its lease with every chunk it queues; a job whose lease lapsed before all
# its chunks were queued can never finish and reads ``incomplete``.
SUBMITTER_LEASE_S = 30
# What one item costs in Redis beyond its input and output bytes: its name in the names hash and
# its share of the per-chunk keys (measured: about 40 bytes for names like ``digits-00042``).
ITEM_OVERHEAD_BYTES = 64
# The completion script's answer when the chunk's staged output is not there.
OUTPUT_MISSING = -3

_TAKE_CHUNK = """
-- KEYS: job hash, chunk statuses     ARGV: chunk index, now
-- Returns nil if the job is gone, else {job hash fields, finished?}; marks the job started when
-- a chunk of its own is about to run (a stray index marks nothing; pcall: a full Redis may
-- refuse that mark, which must not stop the chunk). The input is read by a plain GET after it
-- in the same round trip: through the script it would be copied twice more inside Redis.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local finished = redis.call('HEXISTS', KEYS[2], ARGV[1])
local index = tonumber(ARGV[1])
local fits = index >= 0 and index < tonumber(redis.call('HGET', KEYS[1], 'chunks'))
if fits and finished == 0 and redis.call('HGET', KEYS[1], 'cancelled') ~= '1' then
  redis.pcall('HSETNX', KEYS[1], 'started_at', ARGV[2])
end
return {redis.call('HGETALL', KEYS[1]), finished}
"""

_COMPLETE_CHUNK = """
-- KEYS: job hash, chunk statuses, input, output, events, staged output (or '')
-- ARGV: chunk index, status blob, ttl, outcome, items, now
-- The output was SET under the staged key beforehand (no 400 KB script argument to copy); it
-- is renamed into place, or dropped if the chunk had already finished. Returns -1: finished
-- before, -2: the job is gone, -3: the staged output is missing (its SET was refused), -4: the
-- chunk index is not one of the job's; else how many chunks have finished. Every check comes
-- before the first write, and the first write (DEL) never needs memory: see the module doc.
local function drop_staged() if KEYS[6] ~= '' then redis.call('DEL', KEYS[6]) end end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then drop_staged() return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then drop_staged() return -2 end
if KEYS[6] ~= '' and redis.call('EXISTS', KEYS[6]) == 0 then return -3 end
local chunks = tonumber(redis.call('HGET', KEYS[1], 'chunks'))
local index = tonumber(ARGV[1])
if index < 0 or index >= chunks then drop_staged() return -4 end
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[4] == 'done' then
  redis.call('RENAME', KEYS[6], KEYS[4])
  redis.call('HINCRBY', KEYS[1], 'items_done', ARGV[5])
end
redis.call('HINCRBY', KEYS[1], ARGV[4], 1)
local counts = redis.call('HMGET', KEYS[1], 'done', 'failed', 'skipped', 'chunks')
local finished = (tonumber(counts[1]) or 0) + (tonumber(counts[2]) or 0)
  + (tonumber(counts[3]) or 0)
if finished == tonumber(counts[4]) then redis.call('HSETNX', KEYS[1], 'finished_at', ARGV[6]) end
redis.call('RPUSH', KEYS[5], ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[3])
return finished
"""


@dataclass(frozen=True)
class TakenChunk:
    """What a worker reads before running a chunk (one round trip)."""

    spec: JobSpec
    cancelled: bool
    finished: bool
    data: bytes | None  # None when finished, cancelled, or the input is gone


class JobState(StrEnum):
    """Where a job stands."""

    QUEUED = "queued"  # created; no chunk has started yet
    RUNNING = "running"  # at least one chunk started, not all finished
    DONE = "done"  # every chunk finished without error
    FAILED = "failed"  # every chunk finished, some failed (the rest have outputs)
    CANCELLED = "cancelled"  # cancelled by the user; remaining chunks are skipped
    INCOMPLETE = "incomplete"  # the submitter stopped before queuing every chunk


class ChunkOutcome(StrEnum):
    """How a chunk finished."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # the job was cancelled before the chunk ran


@dataclass(frozen=True)
class ChunkStatus:
    """The record of one finished chunk."""

    chunk: int
    outcome: ChunkOutcome
    items: int
    reason: str = ""
    provider: str = ""
    worker: str = ""
    seconds: float = 0.0

    def to_bytes(self) -> bytes:
        return msgpack.packb(
            {
                "outcome": self.outcome.value,
                "items": self.items,
                "reason": self.reason,
                "provider": self.provider,
                "worker": self.worker,
                "seconds": self.seconds,
            }
        )

    @classmethod
    def from_bytes(cls, chunk: int, raw: bytes) -> ChunkStatus:
        data = msgpack.unpackb(raw)
        return cls(
            chunk=chunk,
            outcome=ChunkOutcome(data["outcome"]),
            items=int(data["items"]),
            reason=str(data["reason"]),
            provider=str(data["provider"]),
            worker=str(data["worker"]),
            seconds=float(data["seconds"]),
        )


@dataclass(frozen=True)
class JobSpec:
    """What a job is, fixed when it is created."""

    op: Operation
    model: str
    version: int
    total: int
    chunk_size: int
    code_dim: int
    output: str = ""  # the -o given with --no-wait, the default for ``aeq results``
    # Its waiting client moves each finished chunk's output into its own staged file and then
    # deletes it from Redis (``aeq.files.resume``): Redis holds a window of the job, and only
    # that client (or a ``--resume`` of it) can collect the rest.
    streamed: bool = False

    @property
    def chunks(self) -> int:
        """How many chunks the job's items fill."""
        return -(-self.total // self.chunk_size)

    def item_bytes(self) -> tuple[int, int]:
        """The bytes one item takes in Redis as input and as output."""
        image, code = PIXELS_PER_IMAGE, self.code_dim * CODE_ITEMSIZE
        if self.op is Operation.ENCODE:
            return image, code
        if self.op is Operation.DECODE:
            return code, image
        if self.op is Operation.SCORE:
            return image, len(SCORE_METRICS) * SCORE_ITEMSIZE
        return image, image

    def redis_bytes(self, window_chunks: int | None = None) -> int:
        """About the most memory the job's data takes in Redis: every input and every output
        (they stay until collected), with the names and per-item overhead; only
        ``window_chunks`` chunks' inputs when a waiting client paces the job, and only as many
        outputs too when it streams them out."""
        item_in, item_out = self.item_bytes()
        paced = (
            self.total
            if window_chunks is None
            else min(self.total, window_chunks * self.chunk_size)
        )
        outputs = paced if self.streamed else self.total
        return paced * item_in + outputs * (item_out + ITEM_OVERHEAD_BYTES)

    def chunk_start(self, chunk: int) -> int:
        """Offset of chunk ``chunk``'s first item in the job."""
        return chunk * self.chunk_size

    def chunk_count(self, chunk: int) -> int:
        """How many items chunk ``chunk`` holds."""
        return min(self.chunk_size, self.total - self.chunk_start(chunk))


@dataclass(frozen=True)
class JobRecord:
    """A job as read back from the store."""

    id: str
    spec: JobSpec
    queued: int
    done: int
    failed: int
    skipped: int
    items_done: int
    cancelled: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    collected_at: float | None
    submitting: bool = False  # the submitter's lease is live
    statuses: dict[int, ChunkStatus] = field(default_factory=dict)

    @property
    def finished_chunks(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def state(self) -> JobState:
        """The state the counters add up to."""
        if self.cancelled:
            return JobState.CANCELLED
        if self.queued == self.spec.chunks and self.finished_chunks >= self.spec.chunks:
            return JobState.FAILED if self.failed else JobState.DONE
        if self.queued < self.spec.chunks and not self.submitting:
            return JobState.INCOMPLETE
        if self.started_at is not None or self.finished_chunks:
            return JobState.RUNNING
        return JobState.QUEUED

    @property
    def label(self) -> str:
        return f"{self.spec.model}@{self.spec.version}"

    def providers(self) -> list[str]:
        """The execution providers that ran this job's chunks."""
        return sorted({s.provider for s in self.statuses.values() if s.provider})

    def failures(self) -> list[ChunkStatus]:
        """Failed chunks, in chunk order."""
        return [s for _, s in sorted(self.statuses.items()) if s.outcome is ChunkOutcome.FAILED]


class JobStore:
    """Reads and writes jobs in Redis. One per process; redis-py pools its connections."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        # Typed loosely: redis-py's reply types are unions of bytes and str that this store (bytes
        # replies, never decode_responses) would only narrow again at every call.
        self.client: Any = client
        self.ttl_s = ttl_s
        self._complete = self.client.register_script(_COMPLETE_CHUNK)
        self._take = self.client.register_script(_TAKE_CHUNK)

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def job_key(job: str) -> str:
        return f"aeq:job:{{{job}}}"

    def _key(self, job: str, suffix: str) -> str:
        return f"{self.job_key(job)}:{suffix}"

    def input_key(self, job: str, chunk: int) -> str:
        return self._key(job, f"in:{chunk}")

    def output_key(self, job: str, chunk: int) -> str:
        return self._key(job, f"out:{chunk}")

    def events_key(self, job: str) -> str:
        return self._key(job, "events")

    def submitter_key(self, job: str) -> str:
        return self._key(job, "submitter")

    def memory(self) -> tuple[int, int]:
        """Redis' ``used_memory`` and ``maxmemory`` in bytes (maxmemory 0: no limit)."""
        info = self.client.info("memory")
        return int(info["used_memory"]), int(info.get("maxmemory", 0))

    # -- the client's side --------------------------------------------------------------------

    def create(self, spec: JobSpec) -> str:
        """Record a new job (no chunks queued yet) and return its id."""
        now = time.time()
        fields: dict[str, Any] = {
            "op": spec.op.value,
            "model": spec.model,
            "version": spec.version,
            "total": spec.total,
            "chunk_size": spec.chunk_size,
            "chunks": spec.chunks,
            "code_dim": spec.code_dim,
            "output": spec.output,
            "streamed": int(spec.streamed),
            "queued": 0,
            "done": 0,
            "failed": 0,
            "skipped": 0,
            "items_done": 0,
            "cancelled": 0,
            "created_at": now,
        }
        for _ in range(5):
            job = secrets.token_hex(_JOB_ID_BYTES)
            if self.client.hsetnx(self.job_key(job), "created_at", now):
                break
        else:  # pragma: no cover - 48 random bits colliding five times running
            raise JobError("could not find a free job id")
        # The index is shared by every client, each with its own TTL: entries are scored by
        # their own expiry, so a client with a short TTL prunes only what has really expired.
        pipe = self.client.pipeline()
        pipe.hset(self.job_key(job), mapping=fields)
        pipe.expire(self.job_key(job), self.ttl_s)
        pipe.set(self.submitter_key(job), 1, ex=SUBMITTER_LEASE_S)
        pipe.zadd(INDEX_KEY, {job: now + self.ttl_s})
        pipe.zremrangebyscore(INDEX_KEY, 0, now)
        pipe.execute()
        return job

    def put_chunk(
        self, job: str, chunk: int, data: bytes | memoryview, names: Sequence[str] | None
    ) -> None:
        """Store a chunk's input bytes and item names (``None``: its client keeps them), before
        its message is sent.

        Chunks are put in order and each put follows the previous chunk's message, so ``queued``
        (set to ``chunk`` here, to the chunk count by ``end_submission``) counts chunks whose
        message surely went out; chunk ``queued`` itself may have gone out too (a submitter
        killed between its message and the next put), with no extra round trip to say so. A job
        whose submission stopped short never reads as finished.
        """
        names_key = self._key(job, "names")
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.input_key(job, chunk), data, ex=self.ttl_s)
        if names is not None:
            pipe.hset(names_key, str(chunk), msgpack.packb(list(names)))
            pipe.expire(names_key, self.ttl_s)
        pipe.hset(self.job_key(job), "queued", chunk)
        pipe.expire(self.submitter_key(job), SUBMITTER_LEASE_S)
        pipe.execute()

    def renew_lease(self, job: str) -> None:
        """Keep the submitter's lease while it waits for room to queue its next chunk."""
        self.client.expire(self.submitter_key(job), SUBMITTER_LEASE_S)

    def resume_submission(self, job: str) -> None:
        """Take the submitter's lease again: a client resuming a job whose submitter died
        before queuing every chunk (``incomplete``) queues the rest under it."""
        self.client.set(self.submitter_key(job), 1, ex=SUBMITTER_LEASE_S)

    def forget_outputs(self, job: str, chunks: list[int]) -> None:
        """Delete the outputs (and item names) of chunks a streaming client has stored for good;
        their statuses stay. Deletes only, so a full Redis allows it."""
        if not chunks:
            return
        pipe = self.client.pipeline(transaction=False)
        for chunk in chunks:
            pipe.unlink(self.output_key(job, chunk))
        pipe.hdel(self._key(job, "names"), *map(str, chunks))
        pipe.execute()

    def end_submission(self, job: str, chunks: int) -> None:
        """Record that all ``chunks`` messages went out and drop the submitter's lease."""
        pipe = self.client.pipeline()
        pipe.hset(self.job_key(job), "queued", chunks)
        pipe.delete(self.submitter_key(job))
        pipe.execute()

    def names(self, job: str, chunk: int) -> list[str]:
        """The item names of one chunk."""
        raw = self.client.hget(self._key(job, "names"), str(chunk))
        return [] if raw is None else list(msgpack.unpackb(raw))

    def outputs(
        self, job: str, chunks: list[int], with_names: bool = True
    ) -> list[tuple[bytes | None, list[str]]]:
        """Output bytes and (``with_names``, else none) item names of several chunks, in one
        round trip."""
        pipe = self.client.pipeline(transaction=False)
        for chunk in chunks:
            pipe.get(self.output_key(job, chunk))
            if with_names:
                pipe.hget(self._key(job, "names"), str(chunk))
        replies = pipe.execute()
        if not with_names:
            return [(reply, []) for reply in replies]
        return [
            (replies[i], [] if replies[i + 1] is None else list(msgpack.unpackb(replies[i + 1])))
            for i in range(0, len(replies), 2)
        ]

    def output(self, job: str, chunk: int) -> bytes | None:
        """The output bytes of a finished chunk (None once deleted or expired)."""
        return self.client.get(self.output_key(job, chunk))

    def wait_event(self, job: str, timeout_s: float) -> bytes | None:
        """Block until a chunk of ``job`` finishes (or cancel), at most ``timeout_s``."""
        reply = self.client.blpop([self.events_key(job)], timeout=timeout_s)
        return None if reply is None else reply[1]

    def cancel(self, job: str) -> int:
        """Flag the job cancelled, drop its queued inputs and wake any waiting client.

        Returns:
            How many chunk inputs were still waiting for a worker.
        """
        chunks = self.get(job).spec.chunks
        try:
            return self._cancel(job, chunks)
        except redis.exceptions.ResponseError:
            # A full Redis (maxmemory, noeviction) refuses the flag writes, which aborts the whole
            # transaction: free the inputs first (DEL is always allowed), then flag.
            pipe = self.client.pipeline(transaction=False)
            for chunk in range(chunks):
                pipe.delete(self.input_key(job, chunk))
            dropped = sum(int(reply) for reply in pipe.execute())
            return dropped + self._cancel(job, chunks)

    def _cancel(self, job: str, chunks: int) -> int:
        pipe = self.client.pipeline()
        pipe.hset(self.job_key(job), "cancelled", 1)
        pipe.hsetnx(self.job_key(job), "finished_at", time.time())
        for chunk in range(chunks):
            pipe.delete(self.input_key(job, chunk))
        pipe.rpush(self.events_key(job), CANCEL_EVENT)
        pipe.expire(self.events_key(job), self.ttl_s)
        pipe.delete(self.submitter_key(job))
        replies = pipe.execute()
        return sum(int(reply) for reply in replies[2 : 2 + chunks])

    def mark_collected(self, job: str, keep: bool) -> None:
        """Record that the results were written; unless ``keep``, delete the bulky data.

        The job hash and chunk statuses stay until they expire, so ``aeq jobs`` and
        ``aeq status`` still show the job.
        """
        self.client.hset(self.job_key(job), "collected_at", time.time())
        if keep:
            return
        spec = self.get(job, with_statuses=False).spec
        self.client.hset(self.job_key(job), "deleted", 1)
        keys = [self._key(job, "names"), self.events_key(job)]
        for chunk in range(spec.chunks):
            keys += [self.input_key(job, chunk), self.output_key(job, chunk)]
        for start in range(0, len(keys), 512):
            self.client.unlink(*keys[start : start + 512])

    def recent(self, limit: int) -> list[JobRecord]:
        """The newest jobs still in the store, newest first (the index is ordered by expiry,
        which is creation order for jobs that share a TTL)."""
        ids = self.client.zrevrange(INDEX_KEY, 0, limit - 1)
        records = []
        for raw in ids:
            job = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                records.append(self.get(job, with_statuses=False))
            except JobNotFoundError:
                self.client.zrem(INDEX_KEY, job)
        return sorted(records, key=lambda record: record.created_at, reverse=True)

    # -- reading ------------------------------------------------------------------------------

    def get(self, job: str, with_statuses: bool = True) -> JobRecord:
        """Read a job back.

        Raises:
            JobNotFoundError: no such job, or it expired.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.job_key(job))
        pipe.exists(self.submitter_key(job))
        raw, submitting = pipe.execute()
        if not raw or b"op" not in raw:
            raise JobNotFoundError(
                f"no job {job!r} in the result store (never created, or expired after "
                f"{self.ttl_s} s); 'aeq jobs' lists the jobs there"
            )
        statuses = self.statuses(job) if with_statuses else {}
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return _record(job, fields, bool(submitting), statuses)

    def is_deleted(self, job: str) -> bool:
        """True once ``aeq results`` has deleted the job's outputs."""
        return bool(self.client.hget(self.job_key(job), "deleted"))

    def statuses(self, job: str) -> dict[int, ChunkStatus]:
        """Every finished chunk's status, by chunk index."""
        raw = self.client.hgetall(self._key(job, "chunks"))
        return {int(k): ChunkStatus.from_bytes(int(k), v) for k, v in raw.items()}

    def statuses_of(self, job: str, chunks: list[int]) -> dict[int, ChunkStatus]:
        """The statuses of the given chunks that have finished."""
        if not chunks:
            return {}
        raw = self.client.hmget(self._key(job, "chunks"), [str(c) for c in chunks])
        return {c: ChunkStatus.from_bytes(c, r) for c, r in zip(chunks, raw, strict=True) if r}

    def status(self, job: str, chunk: int) -> ChunkStatus | None:
        """One chunk's status, or None while it has not finished."""
        raw = self.client.hget(self._key(job, "chunks"), str(chunk))
        return None if raw is None else ChunkStatus.from_bytes(chunk, raw)

    # -- the worker's side --------------------------------------------------------------------

    def take(self, job: str, chunk: int) -> TakenChunk | None:
        """Read a job's spec and flags and the chunk's input, and mark the job started.

        Returns None if the job is gone (expired, or never existed).
        """
        for _ in range(2):
            try:
                reply, data = self._run_take(job, chunk)
            except redis.exceptions.NoScriptError:  # the server lost its scripts (a restart)
                self.client.script_load(_TAKE_CHUNK)
                reply, data = self._run_take(job, chunk)
            if reply is None:
                return None
            raw, finished = reply
            fields = {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
            if "op" not in fields:
                return None
            spec, cancelled = _spec(fields), fields.get("cancelled") == "1"
            runnable = not finished and not cancelled and 0 <= chunk < spec.chunks
            if data is not None or not runnable:
                break
            # The input went between the two reads: a cancel, or a duplicate's completion, or
            # it expired; the next read tells which.
        return TakenChunk(spec, cancelled, bool(finished), data if runnable else None)

    def _run_take(self, job: str, chunk: int) -> list[Any]:
        """The take script's reply and the chunk's input, in one round trip (not MULTI: a full
        Redis refuses every command queued in one, and a worker must still take and finish)."""
        keys = [self.job_key(job), self._key(job, "chunks")]
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(self._take.sha, len(keys), *keys, chunk, time.time())
        pipe.get(self.input_key(job, chunk))
        return list(pipe.execute())

    def complete(
        self, job: str, status: ChunkStatus, output: bytes | memoryview | None = None
    ) -> bool:
        """Finish a chunk atomically; False if it had already been finished, the job is gone, or
        the chunk is not one of the job's.

        A done chunk's ``output`` is first stored under a staged key (pipelined, same round
        trip); the script then renames it into place with the status and counters, deletes the
        input and pushes the completion notice, all at once.

        Raises:
            StoreFullError: Redis refused the output (its maxmemory); nothing was recorded, the
                input is still there, and the same call may be made again later.
        """
        staged = ""
        if status.outcome is ChunkOutcome.DONE:
            staged = f"{self.output_key(job, status.chunk)}:staged:{secrets.token_hex(4)}"
        keys = [
            self.job_key(job),
            self._key(job, "chunks"),
            self.input_key(job, status.chunk),
            self.output_key(job, status.chunk),
            self.events_key(job),
            staged,
        ]
        args: list[bytes | str | int | float] = [
            status.chunk,
            status.to_bytes(),
            self.ttl_s,
            status.outcome.value,
            status.items,
            time.time(),
        ]
        try:
            refusal, finished = self._run_complete(staged, output, keys, args)
        except redis.exceptions.NoScriptError:  # the server lost its scripts (a restart)
            self.client.script_load(_COMPLETE_CHUNK)
            refusal, finished = self._run_complete(staged, output, keys, args)
        if finished == OUTPUT_MISSING:
            raise StoreFullError(
                f"Redis did not store the output of job {job} chunk {status.chunk} "
                f"({refusal or 'it vanished'}); nothing was recorded"
            )
        return finished >= 0

    def _run_complete(
        self, staged: str, output: bytes | memoryview | None, keys: list[str], args: list[Any]
    ) -> tuple[Exception | None, int]:
        """Run the completion script; return the staged SET's refusal (if any) and its reply."""
        # EVALSHA straight into the pipeline: redis-py's Script objects add a SCRIPT EXISTS
        # round trip to every pipeline that uses them.
        pipe = self.client.pipeline(transaction=False)
        if staged:
            pipe.set(staged, output or b"", ex=self.ttl_s)
        pipe.evalsha(self._complete.sha, len(keys), *keys, *args)
        *stored, finished = pipe.execute(raise_on_error=False)
        if isinstance(finished, Exception):
            raise finished
        refusal = next((reply for reply in stored if isinstance(reply, Exception)), None)
        return refusal, int(finished)

    def spec_of(self, job: str) -> JobSpec | None:
        """A job's spec, or None if the job is gone."""
        raw = self.client.hgetall(self.job_key(job))
        if not raw or b"op" not in raw:
            return None
        return _spec({k.decode(): v.decode() for k, v in raw.items()})


def _spec(fields: Mapping[str, str]) -> JobSpec:
    return JobSpec(
        op=Operation(fields["op"]),
        model=fields["model"],
        version=int(fields["version"]),
        total=int(fields["total"]),
        chunk_size=int(fields["chunk_size"]),
        code_dim=int(fields["code_dim"]),
        output=fields.get("output", ""),
        streamed=fields.get("streamed") == "1",
    )


def _optional_time(fields: Mapping[str, str], name: str) -> float | None:
    value = fields.get(name)
    return float(value) if value else None


def _record(
    job: str, fields: Mapping[str, str], submitting: bool, statuses: dict[int, ChunkStatus]
) -> JobRecord:
    return JobRecord(
        id=job,
        spec=_spec(fields),
        queued=int(fields.get("queued", 0)),
        done=int(fields.get("done", 0)),
        failed=int(fields.get("failed", 0)),
        skipped=int(fields.get("skipped", 0)),
        items_done=int(fields.get("items_done", 0)),
        cancelled=fields.get("cancelled") == "1",
        created_at=float(fields["created_at"]),
        started_at=_optional_time(fields, "started_at"),
        finished_at=_optional_time(fields, "finished_at"),
        collected_at=_optional_time(fields, "collected_at"),
        submitting=submitting,
        statuses=statuses,
    )
