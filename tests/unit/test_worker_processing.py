"""What a worker does with one chunk message: good chunks, duplicates, poison, cancellation.

Real Redis, real model repository, real ONNX Runtime; no Celery (the task only calls this).
"""

from __future__ import annotations

from dataclasses import replace

import msgpack
import numpy as np
import pytest
from worker_support import expected, publish_tiny, random_images, tiny_repository

from aeq.core.catalog import MODELS, Graph, Operation
from aeq.core.settings import Settings
from aeq.queue.jobs import ChunkOutcome, JobSpec, JobState, JobStore
from aeq.queue.protocol import TASK_NAME, ChunkMessage, encode_array
from aeq.repository import ModelRepository
from worker.inference import CPU_PROVIDER, Engine
from worker.processing import WorkerContext, process_chunk


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return tiny_repository(tmp_path_factory.mktemp("models") / "repository")


@pytest.fixture(scope="module")
def engine():
    return Engine(Settings(providers=(CPU_PROVIDER,)))


@pytest.fixture
def context(redis_client, repository, engine):
    settings = Settings(model_repository=repository.root, providers=(CPU_PROVIDER,))
    return WorkerContext(settings, JobStore(redis_client, 600), repository, engine, "test-worker")


def queue_job(context, images, op=Operation.DENOISE, model="denoising", chunk_size=4):
    """Create a job and store its chunks as a client would; return the id and the messages."""
    store = context.store
    code_dim = context.repository.get(model).code_dim
    spec = JobSpec(op, model, 1, len(images), chunk_size, code_dim)
    job = store.create(spec)
    messages = []
    for chunk in range(spec.chunks):
        part = images[spec.chunk_start(chunk) : spec.chunk_start(chunk) + chunk_size]
        store.put_chunk(job, chunk, encode_array(part), [f"{chunk}-{i}" for i in range(len(part))])
        messages.append(ChunkMessage.for_array(job, chunk, op, model, 1, part).to_wire())
    store.end_submission(job, spec.chunks)
    return job, messages


def test_a_good_chunk_is_run_and_stored(context):
    images = random_images(10)
    job, messages = queue_job(context, images)
    summary = process_chunk(context, messages[1])
    assert summary["state"] == "done" and summary["provider"] == CPU_PROVIDER
    out = np.frombuffer(context.store.output(job, 1), np.uint8).reshape(4, 28, 28)
    version = context.repository.get("denoising")
    np.testing.assert_array_equal(
        out, context.engine.run(version, Operation.DENOISE, images[4:8]).array
    )
    status = context.store.status(job, 1)
    assert (status.outcome, status.worker, status.provider) == (
        ChunkOutcome.DONE,
        "test-worker",
        CPU_PROVIDER,
    )


def test_a_whole_job_finishes_done(context):
    job, messages = queue_job(context, random_images(10), Operation.ENCODE, "multilayer")
    for message in messages:
        process_chunk(context, message)
    record = context.store.get(job)
    assert record.state is JobState.DONE and record.items_done == 10
    assert len(context.store.output(job, 2)) == 2 * 64 * 4


def test_a_model_published_under_a_name_of_its_own_is_served_by_that_name(context, tmp_path):
    """'aeq train conv --name conv-fashion': the worker serves whatever name the repository has."""
    own = ModelRepository(tmp_path / "repository")
    publish_tiny(own, "conv", published_as="conv-fashion")
    named = replace(context, repository=own)
    images = random_images(6)
    job, messages = queue_job(named, images, Operation.RECONSTRUCT, "conv-fashion")
    for message in messages:
        assert process_chunk(named, message)["state"] == "done"
    record = context.store.get(job)
    assert record.state is JobState.DONE and record.items_done == 6
    output = np.frombuffer(context.store.output(job, 0), np.uint8).reshape(4, 28, 28)
    reference = expected(MODELS["conv"], Graph.AUTOENCODER, images[:4].astype(np.float32) / 255)
    pixels = np.clip(np.rint(reference.reshape(4, 28, 28) * 255), 0, 255)
    assert np.abs(output.astype(int) - pixels.astype(int)).max() <= 1


def test_a_redelivered_chunk_is_not_run_again(context):
    job, messages = queue_job(context, random_images(8))
    process_chunk(context, messages[0])
    first = context.store.output(job, 0)
    assert process_chunk(context, messages[0])["state"] == "duplicate"
    record = context.store.get(job)
    assert (record.done, record.items_done) == (1, 4)
    assert context.store.output(job, 0) == first


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"shape": [4, 784]}, "takes shape (4, 28, 28)"),
        ({"model": "conv"}, "job"),  # a model the job does not use
        ({"version": 9}, "job"),
        ({"op": "encode"}, "job"),
    ],
)
def test_inconsistent_messages_fail_their_chunk(context, change, reason):
    job, messages = queue_job(context, random_images(8))
    summary = process_chunk(context, {**messages[0], **change})
    assert summary["state"] in ("failed", "refused")
    status = context.store.status(job, 0)
    assert status.outcome is ChunkOutcome.FAILED and reason in status.reason
    # The other chunk is unaffected and the job finishes (failed, with its reasons).
    process_chunk(context, messages[1])
    assert context.store.get(job).state is JobState.FAILED


def test_wrong_byte_count_fails_the_chunk(context):
    job, messages = queue_job(context, random_images(4))
    context.store.client.set(context.store.input_key(job, 0), b"\0" * 100)
    process_chunk(context, messages[0])
    assert "holds 100 bytes" in context.store.status(job, 0).reason


def test_a_message_for_another_model_than_its_jobs_fails_the_chunk(context):
    job, messages = queue_job(context, random_images(4))
    summary = process_chunk(context, {**messages[0], "model": "resnet"})
    assert "message says" in summary["reason"] and "with resnet@1" in summary["reason"]
    assert "with resnet@1" in context.store.status(job, 0).reason


def test_a_bad_model_name_fails_the_chunk(context):
    job, messages = queue_job(context, random_images(4))
    summary = process_chunk(context, {**messages[0], "model": "../resnet"})
    assert "model '../resnet' is not a model name" in summary["reason"]
    assert "is not a model name" in context.store.status(job, 0).reason


def test_a_model_missing_from_the_repository_fails_the_chunk(context, tmp_path):
    job, messages = queue_job(context, random_images(4))
    context.repository = type(context.repository)(tmp_path / "empty")
    process_chunk(context, messages[0])
    assert "no models published" in context.store.status(job, 0).reason


def test_a_chunk_of_a_cancelled_job_is_skipped(context):
    job, messages = queue_job(context, random_images(8))
    context.store.cancel(job)
    assert process_chunk(context, messages[1])["state"] == "skipped"
    assert context.store.status(job, 1).outcome is ChunkOutcome.SKIPPED
    assert context.store.output(job, 1) is None


def test_a_message_for_an_unknown_job_is_dropped(context):
    _, messages = queue_job(context, random_images(4))
    assert process_chunk(context, {**messages[0], "job": "00000000aaaa"})["state"] == "gone"


def test_garbage_is_refused_without_touching_anything(context):
    summary = process_chunk(context, {"hello": "world"}, task_id="t-1")
    assert summary["state"] == "refused" and "lacks" in summary["reason"]
    assert context.store.client.keys("aeq:job:*") == []
    (letter,) = context.dead_letters.recent(10)
    assert "lacks" in letter.reason and letter.worker == "test-worker"
    assert letter.headers == {"task": TASK_NAME, "id": "t-1"}
    assert msgpack.unpackb(letter.body) == {"hello": "world"}


def test_a_refused_message_naming_a_real_chunk_fails_it_and_is_kept(context):
    job, messages = queue_job(context, random_images(8))
    process_chunk(context, {**messages[1], "dtype": "float64"})
    assert "takes uint8 items" in context.store.status(job, 1).reason
    assert "takes uint8 items" in context.dead_letters.recent(1)[0].reason


@pytest.mark.parametrize(
    ("chunk", "count"),
    [
        (999, 4),  # past the job's last chunk
        (2, 4),  # the last chunk holds 2 items
        (0, 3),  # chunk 0 holds 4
    ],
)
def test_a_message_that_does_not_fit_its_job_never_touches_it(context, chunk, count):
    """A stray message (issue 10, case 5) is a dead letter; the job runs and ends as before."""
    job, messages = queue_job(context, random_images(10))  # chunks of 4, 4 and 2 items
    stray = ChunkMessage.for_array(
        job, chunk, Operation.DENOISE, "denoising", 1, random_images(count)
    ).to_wire()

    summary = process_chunk(context, stray)

    assert summary["state"] == "dead letter"
    record = context.store.get(job)
    assert (record.done, record.failed, record.skipped, record.items_done) == (0, 0, 0, 0)
    assert record.statuses == {}
    (letter,) = context.dead_letters.recent(10)
    assert f"chunk {chunk} with {count} items does not fit job {job}" in letter.reason
    for message in messages:
        process_chunk(context, message)
    record = context.store.get(job)
    assert (record.state, record.items_done, record.failed) == (JobState.DONE, 10, 0)


def test_a_stray_message_for_a_finished_job_leaves_it_done(context):
    job, messages = queue_job(context, random_images(8))
    for message in messages:
        process_chunk(context, message)
    stray = {**messages[0], "chunk": 999}
    assert process_chunk(context, stray)["state"] == "dead letter"
    record = context.store.get(job)
    assert (record.state, record.done, record.failed) == (JobState.DONE, 2, 0)
    assert sorted(context.store.statuses(job)) == [0, 1]


def test_a_stray_message_for_a_cancelled_job_is_not_counted_as_skipped(context):
    job, messages = queue_job(context, random_images(8))
    context.store.cancel(job)
    assert process_chunk(context, {**messages[0], "chunk": 7})["state"] == "dead letter"
    assert context.store.get(job).skipped == 0


@pytest.fixture
def full_redis(context, monkeypatch):
    """Redis at its maxmemory (noeviction, as docker-compose.yml runs it), short pauses."""
    from worker import processing

    monkeypatch.setattr(processing, "FULL_STORE_PAUSES_S", (0.01, 0.01))
    client = context.store.client
    client.config_set("maxmemory-policy", "noeviction")

    def fill() -> None:
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]))

    yield fill
    client.config_set("maxmemory", 0)


def test_a_chunk_whose_output_redis_refuses_fails_with_the_reason(context, full_redis):
    """A full Redis used to leave the chunk recorded done without its output, the job at 97/98
    forever; now the chunk fails with the reason once the pauses are spent."""
    job, messages = queue_job(context, random_images(8))
    full_redis()
    summary = process_chunk(context, messages[0])
    assert summary["state"] == "failed" and "Redis is full" in summary["reason"]
    status = context.store.status(job, 0)
    assert status.outcome is ChunkOutcome.FAILED and "maxmemory" in status.reason
    assert context.store.output(job, 0) is None


def test_a_chunk_is_stored_once_redis_has_room_again(context, full_redis, monkeypatch):
    from worker import processing

    job, messages = queue_job(context, random_images(8))
    full_redis()
    pauses = []

    def pause_and_free(seconds: float) -> None:
        pauses.append(seconds)
        context.store.client.config_set("maxmemory", 0)  # a client collected its results

    monkeypatch.setattr(processing.time, "sleep", pause_and_free)
    assert process_chunk(context, messages[0])["state"] == "done"
    assert pauses == [0.01]
    assert len(context.store.output(job, 0)) == 4 * 784
