"""The job store on a real (private) redis-server: keys, TTLs, states, idempotent completion."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from aeq.core.catalog import Operation
from aeq.core.errors import JobNotFoundError, StoreFullError
from aeq.queue.jobs import (
    INDEX_KEY,
    ITEM_OVERHEAD_BYTES,
    SUBMITTER_LEASE_S,
    ChunkOutcome,
    ChunkStatus,
    JobSpec,
    JobState,
    JobStore,
)

TTL_S = 600


@pytest.fixture
def store(redis_client):
    return JobStore(redis_client, TTL_S)


def spec(total: int = 10, chunk_size: int = 4) -> JobSpec:
    return JobSpec(Operation.DENOISE, "denoising", 1, total, chunk_size, 1568)


def done(chunk: int, items: int = 4) -> ChunkStatus:
    return ChunkStatus(chunk, ChunkOutcome.DONE, items, provider="CPUExecutionProvider", worker="w")


def stored_input(store: JobStore, job: str, chunk: int) -> bytes | None:
    return store.client.get(store.input_key(job, chunk))


def queue_all(store: JobStore, job: str, job_spec: JobSpec) -> None:
    for chunk in range(job_spec.chunks):
        count = job_spec.chunk_count(chunk)
        store.put_chunk(job, chunk, b"x" * count, [f"item{chunk}-{i}" for i in range(count)])
    store.end_submission(job, job_spec.chunks)


def test_chunks_cover_the_items_exactly():
    job_spec = spec(total=10, chunk_size=4)
    assert job_spec.chunks == 3
    assert [job_spec.chunk_count(c) for c in range(3)] == [4, 4, 2]
    assert [job_spec.chunk_start(c) for c in range(3)] == [0, 4, 8]


def test_a_new_job_is_queued_and_listed(store):
    job = store.create(spec())
    record = store.get(job)
    assert record.state is JobState.QUEUED
    assert record.spec == spec()
    assert [r.id for r in store.recent(10)] == [job]


def test_state_follows_the_chunks(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    taken = store.take(job, 0)
    assert (taken.spec, taken.cancelled, taken.finished, taken.data) == (
        job_spec,
        False,
        False,
        b"xxxx",
    )
    assert store.get(job).state is JobState.RUNNING
    for chunk in range(job_spec.chunks):
        assert store.complete(job, done(chunk, job_spec.chunk_count(chunk)), b"out")
    record = store.get(job)
    assert record.state is JobState.DONE
    assert (record.done, record.items_done) == (3, 10)
    assert record.finished_at is not None
    assert record.providers() == ["CPUExecutionProvider"]


def test_a_job_not_fully_queued_never_reads_as_finished(store):
    job_spec = spec()
    job = store.create(job_spec)
    store.put_chunk(job, 0, b"x", ["a"])
    store.complete(job, done(0))
    assert store.get(job).state is JobState.RUNNING


def test_one_failed_chunk_fails_the_job_but_the_rest_complete(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    store.complete(job, done(0), b"out")
    store.complete(job, ChunkStatus(1, ChunkOutcome.FAILED, 4, reason="bad shape"))
    store.complete(job, done(2, 2), b"out")
    record = store.get(job)
    assert record.state is JobState.FAILED
    assert [(s.chunk, s.reason) for s in record.failures()] == [(1, "bad shape")]
    assert store.output(job, 0) == b"out"
    assert store.output(job, 1) is None


def test_completing_a_chunk_twice_changes_nothing(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    assert store.complete(job, done(0), b"first")
    assert not store.complete(job, done(0), b"second")
    record = store.get(job)
    assert (record.done, record.items_done) == (1, 4)
    assert store.output(job, 0) == b"first"
    assert store.client.lrange(store.events_key(job), 0, -1) == [b"0"]


def test_completion_moves_input_to_output_in_one_step(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    assert stored_input(store, job, 1) == b"xxxx"
    store.complete(job, done(1), b"result")
    assert stored_input(store, job, 1) is None
    assert store.output(job, 1) == b"result"
    assert store.status(job, 1).outcome is ChunkOutcome.DONE
    assert store.wait_event(job, 0.1) == b"1"


def test_a_chunk_of_a_vanished_job_is_not_stored(store):
    job = store.create(spec())
    store.client.delete(store.job_key(job))
    assert not store.complete(job, done(0), b"out")
    assert store.output(job, 0) is None


def test_every_key_expires(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    store.complete(job, done(0), b"out")
    keys = set(store.client.keys("aeq:*")) - {INDEX_KEY.encode()}
    assert len(keys) >= 6
    for key in keys:
        assert 0 < store.client.ttl(key) <= TTL_S, key


def test_the_index_is_pruned_by_each_jobs_own_expiry(redis_client):
    """A client with a short TTL (AEQ_RESULT_TTL_S=5) used to prune every older job from the
    shared index and make the index itself expire in 5 s."""
    long_lived = JobStore(redis_client, TTL_S)
    kept = long_lived.create(spec())
    short_lived = JobStore(redis_client, 5)
    newer = short_lived.create(spec())
    assert redis_client.ttl(INDEX_KEY) == -1
    assert {record.id for record in long_lived.recent(10)} == {kept, newer}
    redis_client.zadd(INDEX_KEY, {newer: time.time() - 1})  # as if its 5 s had passed
    long_lived.create(spec())
    assert kept in {record.id for record in long_lived.recent(10)}
    assert redis_client.zscore(INDEX_KEY, newer) is None


def test_a_job_whose_submitter_stopped_reads_incomplete(store):
    job_spec = spec(total=10, chunk_size=4)
    job = store.create(job_spec)
    store.put_chunk(job, 0, b"x" * 4, ["a", "b", "c", "d"])
    assert store.get(job).state is JobState.QUEUED
    assert 0 < store.client.ttl(store.submitter_key(job)) <= SUBMITTER_LEASE_S
    store.client.delete(store.submitter_key(job))  # the lease lapsed: nobody refreshed it
    assert store.get(job).state is JobState.INCOMPLETE
    queue_all(store, job, job_spec)
    assert store.get(job).state is JobState.QUEUED


def test_a_chunk_index_outside_the_job_is_never_recorded(store):
    job_spec = spec(total=10, chunk_size=4)
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    for chunk in (0, 1, 2):
        assert store.complete(job, done(chunk, job_spec.chunk_count(chunk)), b"out")
    stray = ChunkStatus(999, ChunkOutcome.FAILED, 4, reason="stray")
    assert not store.complete(job, stray)
    record = store.get(job)
    assert record.state is JobState.DONE and 999 not in record.statuses


@pytest.fixture
def full_redis(store):
    """Redis at its maxmemory with noeviction (as docker-compose.yml runs it)."""
    used = int(store.client.info("memory")["used_memory"])
    store.client.config_set("maxmemory-policy", "noeviction")
    store.client.config_set("maxmemory", used + 64 * 1024)
    yield store
    store.client.config_set("maxmemory", 0)


class _RefusedSets:
    """A pipeline whose SETs Redis refused while it was full, and which then had room again
    by the time the completion script ran (another client freed memory in between)."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def set(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


def test_a_refused_output_leaves_the_chunk_untouched(store, monkeypatch):
    """The output's SET refused by a full Redis used to leave the chunk recorded done with no
    output (the script went on and its RENAME failed half-way): now nothing is written."""
    job_spec = spec(total=10, chunk_size=4)
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    real_pipeline = store.client.pipeline
    monkeypatch.setattr(store.client, "pipeline", lambda **kw: _RefusedSets(real_pipeline(**kw)))
    with pytest.raises(StoreFullError, match="nothing was recorded"):
        store.complete(job, done(0), b"out")
    monkeypatch.undo()
    record = store.get(job)
    assert record.statuses == {} and record.done == 0 and record.items_done == 0
    assert stored_input(store, job, 0) == b"x" * 4  # still there for the retry
    assert store.complete(job, done(0), b"out")
    assert store.output(job, 0) == b"out"


def test_a_full_redis_refuses_an_output_before_anything_is_recorded(store, full_redis):
    job_spec = spec(total=10, chunk_size=4)
    store.client.config_set("maxmemory", 0)
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    store.client.config_set("maxmemory", int(store.client.info("memory")["used_memory"]))
    with pytest.raises(StoreFullError, match="maxmemory"):
        store.complete(job, done(0), b"o" * 200_000)
    store.client.config_set("maxmemory", 0)
    assert store.get(job).statuses == {}
    assert stored_input(store, job, 0) == b"x" * 4


def test_a_chunk_can_fail_with_its_reason_in_a_full_redis(store, full_redis):
    job_spec = spec(total=10, chunk_size=4)
    store.client.config_set("maxmemory", 0)
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    store.client.config_set("maxmemory", int(store.client.info("memory")["used_memory"]))
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        store.client.set("probe", b"p" * 100_000)  # Redis really is refusing writes
    reason = "Redis is full"
    assert store.complete(job, ChunkStatus(0, ChunkOutcome.FAILED, 4, reason=reason))
    assert store.get(job).statuses[0].reason == reason
    assert stored_input(store, job, 0) is None


def test_a_job_knows_how_much_redis_it_needs():
    job_spec = spec(total=1000, chunk_size=100)
    assert job_spec.redis_bytes() == 1000 * (784 + 784 + ITEM_OVERHEAD_BYTES)
    encode = JobSpec(Operation.ENCODE, "multilayer", 1, 1000, 100, 32)
    assert encode.item_bytes() == (784, 128)
    # A waiting client paces the job: only a window of its inputs is in Redis at once.
    assert job_spec.redis_bytes(window_chunks=4) == 400 * 784 + 1000 * (784 + ITEM_OVERHEAD_BYTES)
    assert job_spec.redis_bytes(window_chunks=40) == job_spec.redis_bytes()
    score = JobSpec(Operation.SCORE, "conv", 1, 1000, 100, 128)
    assert score.item_bytes() == (784, 12)  # three float32 scores an item


def test_cancel_drops_queued_inputs_and_wakes_followers(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    store.complete(job, done(0), b"out")
    assert store.cancel(job) == 2
    record = store.get(job)
    assert record.state is JobState.CANCELLED
    assert stored_input(store, job, 1) is None and stored_input(store, job, 2) is None
    assert store.client.lrange(store.events_key(job), 0, -1) == [b"0", b"cancel"]


def test_cancel_works_on_a_redis_over_its_maxmemory(store):
    """With noeviction, Redis over its maxmemory refuses the cancel flag; the inputs are dropped
    first, which frees the memory to flag the job."""
    job_spec = spec(total=3, chunk_size=1)
    job = store.create(job_spec)
    for chunk in range(3):
        store.put_chunk(job, chunk, b"x" * 2**20, [f"item{chunk}"])
    used = int(store.client.info("memory")["used_memory"])
    store.client.config_set("maxmemory-policy", "noeviction")
    store.client.config_set("maxmemory", used - 2**20)
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            store.client.hset(store.job_key(job), "probe", 1)  # the server really is full
        assert store.cancel(job) == 3
    finally:
        store.client.config_set("maxmemory", 0)
    assert store.get(job).state is JobState.CANCELLED
    assert all(stored_input(store, job, chunk) is None for chunk in range(3))


def test_collecting_deletes_the_data_but_keeps_the_record(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    for chunk in range(job_spec.chunks):
        store.complete(job, done(chunk, job_spec.chunk_count(chunk)), b"out")
    store.mark_collected(job, keep=False)
    assert store.output(job, 0) is None and store.names(job, 0) == []
    assert store.is_deleted(job)
    record = store.get(job)
    assert record.state is JobState.DONE and record.collected_at is not None


def test_collecting_with_keep_keeps_the_outputs(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    store.complete(job, done(0), b"out")
    store.mark_collected(job, keep=True)
    assert store.output(job, 0) == b"out" and not store.is_deleted(job)
    assert store.names(job, 0) == [f"item0-{i}" for i in range(4)]


def test_recent_jobs_are_newest_first(store):
    jobs = [store.create(spec()) for _ in range(3)]
    assert [r.id for r in store.recent(10)] == jobs[::-1]
    assert [r.id for r in store.recent(2)] == jobs[:0:-1]


def test_unknown_job_says_so(store):
    with pytest.raises(JobNotFoundError, match="no job 'feedfacecafe'"):
        store.get("feedfacecafe")


def test_take_reports_finished_and_cancelled_chunks_without_their_input(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    store.complete(job, done(0), b"out")
    finished = store.take(job, 0)
    assert finished.finished and finished.data is None
    store.cancel(job)
    cancelled = store.take(job, 1)
    assert cancelled.cancelled and not cancelled.finished and cancelled.data is None


def test_take_of_a_vanished_job_creates_nothing(store):
    assert store.take("00000000dead", 0) is None
    assert store.client.keys("aeq:*") == []


def test_a_duplicate_completion_leaves_no_staged_output_behind(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    store.complete(job, done(0), b"first")
    store.complete(job, done(0), b"second")
    assert store.client.keys("*staged*") == []
    assert store.output(job, 0) == b"first"


def test_completion_survives_a_server_that_forgot_its_scripts(store):
    job_spec = spec()
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    store.client.script_flush()
    assert store.complete(job, done(0), b"out")
    assert store.output(job, 0) == b"out"


def test_taking_a_stray_chunk_index_does_not_start_the_job(store):
    job_spec = spec(total=10, chunk_size=4)
    job = store.create(job_spec)
    queue_all(store, job, job_spec)
    taken = store.take(job, 999)
    assert taken is not None and taken.data is None
    assert store.get(job).started_at is None and store.get(job).state is JobState.QUEUED
