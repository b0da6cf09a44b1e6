"""The Python API against a real redis-server and real ``aeq worker`` processes.

What comes back through workers must be what local mode computes in this process, with the same
provider and thread count (one CPU thread, as the workers here run).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from helpers import noisy

import aeq
from aeq.core.catalog import MODELS, Operation
from aeq.queue.jobs import JobState

pytestmark = pytest.mark.integration

ITEMS = 600
CHUNK = 100


@pytest.fixture(autouse=True)
def user_environment(monkeypatch, service):
    """This process as a notebook would run it: the service's repository, no broker set, and
    the workers' provider and thread count, so local results can be compared bit for bit."""
    for name in list(os.environ):
        if name.startswith("AEQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AEQ_MODEL_REPOSITORY", str(service.repository))
    monkeypatch.setenv("AEQ_PROVIDERS", "cpu")
    monkeypatch.setenv("AEQ_THREADS", "1")


@pytest.fixture
def inputs(mnist) -> np.ndarray:
    return noisy(mnist.test_images[:ITEMS])


def test_denoise_through_workers_equals_local_mode(service, inputs):
    service.start_worker("one")
    service.start_worker("two")

    queued = aeq.denoise(inputs, broker_url=service.url, chunk_size=CHUNK)
    from_floats = aeq.denoise(inputs / 255.0, broker_url=service.url, chunk_size=CHUNK)

    local = aeq.denoise(inputs)
    assert queued.dtype == np.uint8 and queued.shape == (ITEMS, 28, 28)
    np.testing.assert_array_equal(queued, local)
    np.testing.assert_array_equal(from_floats, local)
    # Collected: both jobs' data is gone from Redis, their records remain.
    store = aeq.Client(service.url)._jobs.store
    records = store.recent(10)
    assert len(records) == 2 and all(store.is_deleted(record.id) for record in records)
    assert all(record.collected_at is not None for record in records)


def test_client_submit_status_and_results(service, inputs):
    service.start_worker("one")
    client = aeq.Client(service.url)

    job = client.submit("encode", inputs, chunk_size=CHUNK)
    codes = job.results(keep=True)

    status = job.status()
    assert status.state is JobState.DONE and status.finished and status.op is Operation.ENCODE
    assert (status.model, status.version) == ("multilayer", 1)
    assert (status.items.total, status.items.done, status.chunks.done) == (ITEMS, ITEMS, 6)
    assert status.workers == ["one@test"] and status.providers == ["CPUExecutionProvider"]
    assert status.collected_at is not None and not status.failures
    printed = service.aeq("status", job.id, "--json")
    assert printed.returncode == 0, printed.stderr
    assert json.loads(json.dumps(status.to_dict())) == json.loads(printed.stdout)
    assert codes.dtype == np.float32 and codes.shape == (ITEMS, MODELS["multilayer"].code_dim)
    np.testing.assert_array_equal(codes, aeq.encode(inputs))
    # Kept: another client reattaches by id and collects the same codes, then they are deleted.
    again = aeq.Client(service.url).job(job.id)
    np.testing.assert_array_equal(again.results(), codes)
    with pytest.raises(aeq.JobError, match="collected and deleted"):
        aeq.Client(service.url).job(job.id).results()


def test_decode_an_array_through_workers(service, inputs):
    service.start_worker("one")
    codes = aeq.encode(inputs)
    decoded = aeq.decode(codes, model="multilayer", broker_url=service.url, chunk_size=CHUNK)
    np.testing.assert_array_equal(decoded, aeq.decode(codes, model="multilayer"))


def test_cancel_a_job_no_worker_has_taken(service, inputs):
    job = aeq.Client(service.url).submit("reconstruct", inputs, chunk_size=CHUNK)

    assert job.status().state is JobState.QUEUED
    assert job.cancel() == ITEMS // CHUNK

    assert job.status().state is JobState.CANCELLED
    with pytest.raises(aeq.JobError, match="was cancelled"):
        job.results()
    service.start_worker("late")  # its messages are skipped, not run
    deadline = time.monotonic() + 30
    while job.status().chunks.skipped < ITEMS // CHUNK and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (job.status().chunks.skipped, job.status().chunks.done) == (ITEMS // CHUNK, 0)


def test_a_job_the_cli_queued_is_collected_from_python(service, inputs, tmp_path):
    np.save(tmp_path / "noisy.npy", inputs)
    service.start_worker("one")
    submitted = service.aeq("denoise", str(tmp_path / "noisy.npy"), "--no-wait")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    result = aeq.Client(service.url).job(job_id).results()

    np.testing.assert_array_equal(result, aeq.denoise(inputs))


def test_bad_input_queues_nothing(service, redis_server, inputs):
    floats = inputs / 255.0
    floats[123, 4, 5] = 1.01
    with pytest.raises(aeq.InputError, match=r"first bad in item 123\).*\[0, 1\]"):
        aeq.denoise(floats, broker_url=service.url)
    with pytest.raises(aeq.InputError, match="NaN"):
        aeq.Client(service.url).submit("denoise", np.full((3, 28, 28), np.nan))
    redis = redis_server.client()
    assert redis.llen("aeq") == 0 and redis.zcard("aeq:jobs") == 0
