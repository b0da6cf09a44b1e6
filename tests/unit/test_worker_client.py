"""The client side of a job against a real redis-server, with chunks run by ``process_chunk``
directly (the same function the Celery task calls) instead of a worker process."""

from __future__ import annotations

import base64
import json
import threading
import time

import msgpack
import numpy as np
import pytest
from worker_support import pop_next_message, random_images, tiny_repository

from aeq.client.client import (
    ADMISSION_SHARE,
    FollowState,
    JobClient,
    Submission,
    submit_collecting,
)
from aeq.client.local import run_local
from aeq.core.catalog import Operation
from aeq.core.errors import BrokerError, JobError, StoreFullError
from aeq.core.settings import Settings
from aeq.queue.jobs import JobStore
from aeq.queue.lost_messages import UNACKED_KEY, lost_chunks, queue_lists
from aeq.queue.protocol import QUEUE, TASK_NAME
from aeq.queue.store import connect
from worker.inference import CPU_PROVIDER, Engine
from worker.processing import WorkerContext, process_chunk


class ArraySource:
    """An in-memory stand-in for ``aeq.files.inputs.ImageSource``."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.total = len(array)

    def chunks(self, size):
        for start in range(0, self.total, size):
            part = self.array[start : start + size]
            yield [f"item{start + i}" for i in range(len(part))], part


class ArrayWriter:
    """Records every write, so tests can check order, placement and duplicates."""

    def __init__(self, total: int, row_shape: tuple[int, ...], dtype) -> None:
        self.array = np.zeros((total, *row_shape), dtype)
        self.names: list[str | None] = [None] * total
        self.writes: list[int] = []

    def write(self, start, names, array):
        self.writes.append(start)
        self.array[start : start + len(array)] = array
        self.names[start : start + len(array)] = names


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return tiny_repository(tmp_path_factory.mktemp("models") / "repository")


@pytest.fixture
def settings(redis_server, redis_client, repository):
    return Settings(
        broker_url=redis_server.url,
        model_repository=repository.root,
        providers=(CPU_PROVIDER,),
    )


@pytest.fixture
def context(settings, redis_client, repository):
    engine = Engine(settings)
    return WorkerContext(settings, JobStore(redis_client, 600), repository, engine, "inline")


def queued_messages(redis_client) -> list[dict]:
    """The chunk messages waiting in the 'aeq' queue, decoded as a worker would."""
    return [chunk_message(raw) for raw in redis_client.lrange("aeq", 0, -1)[::-1]]


def chunk_message(raw: bytes) -> dict:
    """One queued message's keyword arguments, checked to be a small msgpack claim check."""
    envelope = json.loads(raw)
    assert envelope["content-type"] == "application/x-msgpack"
    body = base64.b64decode(envelope["body"])
    assert len(body) < 300  # the claim check, not the pixels
    assert envelope["headers"]["task"] == TASK_NAME
    return msgpack.unpackb(body)[1]


def submit(settings, repository, images, op=Operation.DENOISE, model="denoising", size=4):
    client = JobClient(settings)
    submission = Submission(op, repository.get(model), ArraySource(images), size)
    return client, client.submit(submission)


def test_submit_stores_chunks_and_sends_small_msgpack_messages(settings, repository, redis_client):
    images = random_images(10)
    client, job = submit(settings, repository, images)
    messages = queued_messages(redis_client)
    assert [m["chunk"] for m in messages] == [0, 1, 2]
    assert [m["count"] for m in messages] == [4, 4, 2]
    assert client.store.client.get(client.store.input_key(job, 2)) == images[8:].tobytes()
    assert client.store.names(job, 2) == ["item8", "item9"]
    assert client.record(job).queued == 3


def test_a_jobs_chunks_past_its_first_window_wait_on_the_low_priority_list(
    settings, repository, redis_client
):
    """Workers pop the queue's lists in priority order, so any job's first window goes ahead of
    every job's later chunks (a small job behind a big --no-wait one takes the next free slot)."""
    big_client, big = submit(settings, repository, random_images(10), size=1)
    window = big_client.window()
    _, small = submit(settings, repository, random_images(2), size=1)
    first, backlog = (
        [chunk_message(raw) for raw in redis_client.lrange(name, 0, -1)[::-1]]
        for name in (QUEUE, queue_lists(QUEUE)[-1])
    )
    taking_order = [(m["job"], m["chunk"]) for m in first + backlog]
    assert window == 4 and len(backlog) == 10 - window
    assert taking_order == [(big, c) for c in range(window)] + [(small, 0), (small, 1)] + [
        (big, c) for c in range(window, 10)
    ]


def test_follow_writes_chunks_as_they_finish_in_any_order(settings, repository, context):
    images = random_images(10)
    client, job = submit(settings, repository, images)
    messages = queued_messages(context.store.client)
    writer = ArrayWriter(10, (28, 28), np.uint8)
    state = FollowState()
    process_chunk(context, messages[2])
    client.follow(job, writer, state, block=False)
    assert writer.writes == [8]
    for message in (messages[0], messages[1], messages[0]):  # the last is a redelivery
        process_chunk(context, message)
    context.store.client.rpush(context.store.events_key(job), b"1", b"1")  # duplicate notices

    client.follow(job, writer, state)

    assert sorted(writer.writes) == [0, 4, 8]  # each chunk written exactly once
    expected = context.engine.run(repository.get("denoising"), Operation.DENOISE, images).array
    np.testing.assert_array_equal(writer.array, expected)
    assert writer.names == [f"item{i}" for i in range(10)]


def test_follow_of_a_finished_job_needs_no_notices(settings, repository, context):
    client, job = submit(settings, repository, random_images(6), Operation.ENCODE, "vanilla")
    for message in queued_messages(context.store.client):
        process_chunk(context, message)
    context.store.client.delete(context.store.events_key(job))  # another follower took them
    writer = ArrayWriter(6, (64,), np.float32)
    state = client.follow(job, writer)
    assert state.items == 6 and sorted(writer.writes) == [0, 4]


class WorkingSource(ArraySource):
    """Runs the chunks queued so far, as a quick worker would, before reading the next one."""

    def __init__(self, array: np.ndarray, context: WorkerContext) -> None:
        super().__init__(array)
        self.context = context

    def chunks(self, size):
        ran = 0
        for chunk in super().chunks(size):
            for message in queued_messages(self.context.store.client)[ran:]:
                process_chunk(self.context, message)
                ran += 1
            yield chunk


def test_submit_collecting_writes_the_chunks_that_finish_while_queuing(
    settings, repository, context
):
    images = random_images(10)
    version = repository.get("denoising")
    submission = Submission(Operation.DENOISE, version, WorkingSource(images, context), 4)
    writer, state, progress = ArrayWriter(10, (28, 28), np.uint8), FollowState(), []
    client = JobClient(settings)

    job = submit_collecting(client, submission, writer, state, progress.append)

    assert writer.writes == [0, 4] and progress == [0, 4, 8]  # chunk 2 had not run yet
    process_chunk(context, queued_messages(context.store.client)[2])
    client.follow(job, writer, state)
    assert writer.writes == [0, 4, 8]
    expected = context.engine.run(version, Operation.DENOISE, images).array
    np.testing.assert_array_equal(writer.array, expected)


def test_a_failed_chunk_fails_the_follow_after_the_rest(settings, repository, context):
    client, job = submit(settings, repository, random_images(10))
    messages = queued_messages(context.store.client)
    process_chunk(context, {**messages[1], "shape": [4, 784]})
    process_chunk(context, messages[0])
    process_chunk(context, messages[2])
    writer = ArrayWriter(10, (28, 28), np.uint8)
    with pytest.raises(JobError, match=r"1 of 3 chunks failed \(chunk 1: .*takes shape"):
        client.follow(job, writer)
    assert sorted(writer.writes) == [0, 8]


def test_cancel_ends_the_follow(settings, repository, context):
    client, job = submit(settings, repository, random_images(10))
    assert client.cancel(job) == 3
    with pytest.raises(JobError, match="was cancelled"):
        client.follow(job, ArrayWriter(10, (28, 28), np.uint8))


def test_an_unreachable_store_is_reported_with_its_url(repository):
    settings = Settings(broker_url="redis://127.0.0.1:1/0", model_repository=repository.root)
    with pytest.raises(BrokerError, match=r"cannot reach Redis at redis://127.0.0.1:1/0"):
        JobClient(settings)


def test_passwords_stay_out_of_messages(repository):
    settings = Settings(
        broker_url="redis://:s3cret@127.0.0.1:1/0", model_repository=repository.root
    )
    with pytest.raises(BrokerError) as raised:
        JobClient(settings)
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)


def test_local_mode_runs_the_same_chunks_in_process(repository):
    images = random_images(11)
    submission = Submission(Operation.DENOISE, repository.get("conv"), ArraySource(images), 4)
    writer = ArrayWriter(11, (28, 28), np.uint8)
    engine = Engine(Settings(providers=(CPU_PROVIDER,)))
    assert run_local(submission, writer, engine) == 11
    assert writer.writes == [0, 4, 8]
    np.testing.assert_array_equal(
        writer.array, engine.run(repository.get("conv"), Operation.DENOISE, images).array
    )


@pytest.fixture
def password_redis(redis_server, redis_client):
    """The session's Redis asking for a password (set on a connection that stays in)."""
    redis_client.config_set("requirepass", "s3cret")
    yield redis_server.url
    redis_client.config_set("requirepass", "")


@pytest.mark.parametrize(
    ("password", "said"), [("", "refused no password"), ("wrong", "refused the password")]
)
def test_a_refused_password_is_not_called_unreachable(password_redis, password, said):
    """An auth failure used to say "is redis-server running?"."""
    url = password_redis.replace("redis://", f"redis://:{password}@" if password else "redis://")
    with pytest.raises(BrokerError) as raised:
        connect(url)
    message = str(raised.value)
    assert said in message and "running" not in message and "wrong" not in message


def test_a_job_that_would_not_fit_is_refused_before_anything_is_queued(
    settings, repository, redis_client
):
    redis_client.config_set("maxmemory-policy", "noeviction")
    used = int(redis_client.info("memory")["used_memory"])
    redis_client.config_set("maxmemory", used + 2 * 2**20)
    try:
        submission = Submission(
            Operation.DENOISE, repository.get("denoising"), ArraySource(random_images(2000)), 512
        )
        created = []
        with pytest.raises(StoreFullError) as raised:
            JobClient(settings).submit(submission, on_created=created.append)
    finally:
        redis_client.config_set("maxmemory", 0)
    message = str(raised.value)
    assert "needs about 3.1 MiB" in message and "MiB free" in message and "maxmemory" in message
    assert created == [] and redis_client.keys("aeq:job:*") == []
    assert redis_client.llen("aeq") == 0


def test_the_job_id_is_announced_before_the_first_chunk(settings, repository, redis_client):
    submission = Submission(
        Operation.DENOISE, repository.get("denoising"), ArraySource(random_images(10)), 4
    )
    seen = []
    client = JobClient(settings)
    job = client.submit(
        submission,
        on_created=lambda job: seen.append((job, redis_client.llen("aeq"))),
    )
    assert seen == [(job, 0)]
    assert client.record(job).state.value == "queued"  # the lease was dropped at the end
    assert redis_client.exists(client.store.submitter_key(job)) == 0


class InlineWorker:
    """A thread that runs whatever chunk messages are queued, as a worker would, and notes the
    most input chunks Redis held at once."""

    def __init__(self, context: WorkerContext, delay_s: float = 0.0) -> None:
        self.context = context
        self.delay_s = delay_s
        self.most_inputs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> InlineWorker:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        client = self.context.store.client
        self._stop.wait(self.delay_s)
        while not self._stop.is_set():
            self.most_inputs = max(self.most_inputs, len(client.keys("aeq:job:*:in:*")))
            if raw := pop_next_message(client):
                process_chunk(self.context, chunk_message(raw))
            time.sleep(0.01)


def hold_unacknowledged(redis_client, raw: bytes, tag: str) -> None:
    """Move one message where kombu keeps what a worker took and has not acknowledged."""
    redis_client.lrem("aeq", 1, raw)
    redis_client.hset(UNACKED_KEY, tag, json.dumps([json.loads(raw), "aeq", "aeq"]))


def test_lost_chunks_are_those_in_no_list_and_not_unacknowledged(
    settings, repository, redis_client
):
    _, job = submit(settings, repository, random_images(16))  # chunks 0-3, oldest at the end
    raw = redis_client.lrange("aeq", 0, -1)[::-1]
    hold_unacknowledged(redis_client, raw[1], "tag-1")
    redis_client.lrem("aeq", 1, raw[2])  # popped, never recorded: lost
    redis_client.rpush("aeq", b"not json", json.dumps({"body": 1}))  # ignored, not fatal

    assert lost_chunks(redis_client, "aeq", job, [0, 1, 2, 3]) == [2]
    assert lost_chunks(redis_client, "aeq", "0" * 12, [0]) == [0]  # another job's are not its
    assert lost_chunks(redis_client, "aeq", job, []) == []
    redis_client.delete(UNACKED_KEY)


def test_a_quiet_follower_queues_again_the_chunk_whose_message_was_lost(
    settings, repository, context, monkeypatch
):
    monkeypatch.setattr("aeq.client.client.QUIET_S", 0.0)
    images = random_images(12)
    notices: list[str] = []
    client = JobClient(settings, notices.append)
    submission = Submission(Operation.DENOISE, repository.get("denoising"), ArraySource(images), 4)
    job = client.submit(submission)
    raw = context.store.client.lrange("aeq", 0, -1)[::-1]
    context.store.client.lrem("aeq", 1, raw[1])
    for message in queued_messages(context.store.client):  # chunks 0 and 2
        process_chunk(context, message)
    context.store.client.delete("aeq")
    writer = ArrayWriter(12, (28, 28), np.uint8)
    with InlineWorker(context):
        client.follow(job, writer)
    assert sorted(writer.writes) == [0, 4, 8]
    assert [n for n in notices if "lost the message" in n] == [
        f"the broker had lost the message of 1 chunk(s) of job {job} (chunk 1; a Redis "
        "restart?): queued again"
    ]


def test_a_waiting_submitter_keeps_only_a_window_of_chunks_in_redis(settings, repository, context):
    images = random_images(40)
    settings = Settings(**{**settings.__dict__, "window_chunks": 3})
    client = JobClient(settings)
    version = repository.get("denoising")
    submission = Submission(Operation.DENOISE, version, ArraySource(images), 4)
    writer, state = ArrayWriter(40, (28, 28), np.uint8), FollowState()
    with InlineWorker(context) as worker:
        job = submit_collecting(client, submission, writer, state)
        client.follow(job, writer, state)
    assert sorted(writer.writes) == list(range(0, 40, 4))
    assert 1 <= worker.most_inputs <= 3  # 10 chunks, never more than the window waiting
    expected = context.engine.run(version, Operation.DENOISE, images).array
    np.testing.assert_array_equal(writer.array, expected)


def test_the_window_follows_the_live_worker_processes(settings):
    client = JobClient(settings)
    assert client.window() == 4  # no worker seen yet: the minimum
    client.liveness.slots = 6
    assert client.window() == 12
    client.settings = Settings(**{**settings.__dict__, "window_chunks": 5})
    assert client.window() == 5


def test_a_submitter_waiting_for_room_keeps_its_lease(settings, repository, context, monkeypatch):
    """Its lease is what tells a waiting submitter from a dead one ('incomplete')."""
    monkeypatch.setattr("aeq.queue.jobs.SUBMITTER_LEASE_S", 2)
    settings = Settings(**{**settings.__dict__, "window_chunks": 1})
    client = JobClient(settings)
    submission = Submission(
        Operation.DENOISE, repository.get("denoising"), ArraySource(random_images(8)), 4
    )
    writer, state = ArrayWriter(8, (28, 28), np.uint8), FollowState()
    with InlineWorker(context, delay_s=4.0):  # no worker for longer than the lease
        job = submit_collecting(client, submission, writer, state)
        client.follow(job, writer, state)
    assert sorted(writer.writes) == [0, 4]


def test_a_paced_job_is_admitted_for_a_window_of_its_inputs(settings, repository, redis_client):
    """A waiting client keeps a window of inputs in Redis, not the job's: it is admitted on that."""
    spec = Submission(
        Operation.DENOISE, repository.get("denoising"), ArraySource(random_images(4000)), 100
    ).spec()
    client = JobClient(settings)
    redis_client.config_set("maxmemory-policy", "noeviction")
    used = int(redis_client.info("memory")["used_memory"])
    need_all, need_paced = spec.redis_bytes(), spec.redis_bytes(window_chunks=4)
    redis_client.config_set(
        "maxmemory", int((used + (need_all + need_paced) / 2) / ADMISSION_SHARE)
    )
    try:
        client._admit(spec, window_chunks=4)  # fits
        with pytest.raises(StoreFullError):
            client._admit(spec, window_chunks=None)  # --no-wait: every input at once
    finally:
        redis_client.config_set("maxmemory", 0)
