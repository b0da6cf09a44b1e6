"""Messages a worker cannot use (issue 10, cases 1 and 5), among the real chunks of real jobs.

A real job is queued with ``aeq ... --no-wait`` while no worker runs; malformed messages are
published the way any kombu producer would, and the queue is shuffled so they sit between the
job's chunks. Then real ``aeq worker`` processes (the solo pool and prefork) serve it: the job
must complete with every item, the workers must still be alive, and every bad message must be a
dead letter that ``aeq dead-letters`` shows.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np
import pytest
import redis
from helpers import assert_same_pixels, reference_run, to_pixels, wait_for
from kombu import Connection, Exchange, Producer

from aeq.core.catalog import Graph, Operation
from aeq.core.settings import load_settings
from aeq.queue.protocol import TASK_NAME, ChunkMessage
from worker.app import QUEUE, make_app

pytestmark = pytest.mark.integration

POOLS = {"solo": ("--concurrency", "1"), "prefork": ("--concurrency", "2")}
# Each bad message is sent this many times: a flood, not a single accident.
FLOOD_ROUNDS = 2
SERVE_TIMEOUT_S = 180.0
MSGPACK, JSON = "application/x-msgpack", "application/json"


@dataclass(frozen=True)
class Poison:
    """A bad message sent, how to find its dead letter, and what its reason must say."""

    key: str  # the task id, found in the dead letter's headers or (protocol 1) its body
    reason: str


class _CreatesMarker:
    """Unpickling this creates a folder: proof that a pickle message was never loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _raw_bodies(marker: str) -> list[tuple[bytes, str, str, str]]:
    """(body, content type, task name, reason): what kombu publishes as given."""
    pickled = pickle.dumps(((), {"x": _CreatesMarker(marker)}, {}))
    return [
        (msgpack.packb(None), MSGPACK, TASK_NAME, "body is None, not Celery's"),
        (msgpack.packb(12345), MSGPACK, TASK_NAME, "body is 12345, not"),
        (msgpack.packb([1]), MSGPACK, TASK_NAME, "body is [1], not"),
        (msgpack.packb({"job": "x"}), MSGPACK, TASK_NAME, "body is {'job': 'x'}, not"),
        (b"12345", JSON, TASK_NAME, "body is 12345, not"),
        (b"\xc1\xc1\xc1", MSGPACK, TASK_NAME, "body does not decode as application/x-msgpack"),
        (pickled, "application/x-python-serialize", TASK_NAME, "untrusted content of type pickle"),
        (msgpack.packb(None), MSGPACK, "celery.accumulate", "is not served here"),
    ]


def publish_poison(url: str, marker: str) -> list[Poison]:
    """Publish one round of bad messages; return what each must leave behind."""
    sent = []
    with Connection(url) as connection:
        producer = Producer(connection, exchange=Exchange(QUEUE, type="direct"))
        for body, content_type, task, reason in _raw_bodies(marker):
            task_id = str(uuid.uuid4())
            headers = {"lang": "py", "task": task, "id": task_id}
            producer.publish(
                body, routing_key=QUEUE, content_type=content_type,
                content_encoding="binary", headers=headers,
            )  # fmt: skip
            sent.append(Poison(task_id, reason))
        # Protocol 1: no headers, the task named in the body.
        task_id = str(uuid.uuid4())
        body = json.dumps({"task": TASK_NAME, "id": task_id, "args": [], "kwargs": {}})
        producer.publish(
            body.encode(), routing_key=QUEUE, content_type=JSON, content_encoding="utf-8"
        )
        sent.append(Poison(task_id, "no task header"))
    celery = make_app(load_settings({"AEQ_BROKER_URL": url}))
    # Well-formed envelopes with arguments that are not a chunk message.
    garbage = celery.send_task(TASK_NAME, kwargs={"job": 5})
    positional = celery.send_task(TASK_NAME, args=[1, 2, 3])
    sent += [
        Poison(garbage.id, "message lacks chunk"),
        Poison(positional.id, "takes keyword arguments only"),
    ]
    return sent


def in_taking_order(client: redis.Redis) -> list[bytes]:
    """The queue's messages in the order workers will take them (kombu LPUSHes, BRPOPs)."""
    return client.lrange(QUEUE, 0, -1)[::-1]


def requeue(client: redis.Redis, order: list[bytes]) -> None:
    """Put ``order`` back so that workers take it in that order."""
    pipe = client.pipeline()
    pipe.delete(QUEUE)
    pipe.lpush(QUEUE, *order)
    pipe.execute()


def interleave(first: list[bytes], second: list[bytes]) -> list[bytes]:
    """first[0], second[0], first[1], second[1], ... and then the rest of the longer one."""
    mixed = [message for pair in zip(first, second, strict=False) for message in pair]
    shorter = min(len(first), len(second))
    return mixed + first[shorter:] + second[shorter:]


def collect(service, job: str, output: Path, workers) -> subprocess.CompletedProcess[str]:
    """``aeq results JOB -o OUTPUT``, failing at once if a worker dies meanwhile."""
    collecting = service.popen("results", job, "-o", str(output))
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while collecting.poll() is None:
        dead = [worker for worker in workers if worker.process.poll() is not None]
        if dead or time.monotonic() > deadline:
            collecting.kill()
            collecting.communicate()
            detail = dead[0].text()[-3000:] if dead else "timed out"
            raise AssertionError(f"the job was not served: {detail}")
        time.sleep(0.2)
    stdout, stderr = collecting.communicate()
    return subprocess.CompletedProcess(collecting.args, collecting.returncode, stdout, stderr)


def dead_letters_json(service) -> list[dict]:
    shown = service.aeq("dead-letters", "--json", "--limit", "1000")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def letter_of(entry: dict, sent: Poison) -> bool:
    """Whether dead letter ``entry`` is that of ``sent`` (by task id; protocol 1: in the body)."""
    return entry["headers"].get("id") == sent.key or f'"{sent.key}"' in entry["body"]


@pytest.mark.parametrize("pool", POOLS)
def test_malformed_messages_between_real_chunks_are_dead_letters(
    service, mnist, tmp_path, redis_server, pool
):
    """Issue 10, case 1: each of these bodies made the consumer exit ("Unrecoverable error")
    with the message restored to the head of the queue, so every worker died on it in turn."""
    images = mnist.test_images[:200]
    np.save(tmp_path / "digits.npy", images)
    # A window of all 10 chunks: every message on the queue's first list, where the bad ones go.
    submitted = service.aeq(
        "reconstruct", str(tmp_path / "digits.npy"), "--no-wait", "--chunk-size", "20",
        env={"AEQ_WINDOW_CHUNKS": "10"},
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    marker = str(tmp_path / "unpickled")
    poison = [p for _ in range(FLOOD_ROUNDS) for p in publish_poison(service.url, marker)]
    client = redis_server.client()
    chunks = json.loads(service.aeq("status", job, "--json").stdout)["chunks"]["queued"]
    in_order = in_taking_order(client)  # the job's chunks first, then the bad messages
    requeue(client, interleave(in_order[chunks:], in_order[:chunks]))

    workers = [service.start_worker(pool, *POOLS[pool])]
    result = collect(service, job, tmp_path / "out.npy", workers)

    assert result.returncode == 0, result.stderr
    out = np.load(tmp_path / "out.npy", allow_pickle=False)
    expected = to_pixels(reference_run(service.repository, "conv", Graph.AUTOENCODER, images))
    assert out.shape == (200, 28, 28)
    assert_same_pixels(out, expected)
    status = json.loads(service.aeq("status", job, "--json").stdout)
    assert (status["state"], status["items"]["done"], status["chunks"]["failed"]) == (
        "done", 200, 0,
    )  # fmt: skip
    letters = wait_for(
        lambda: (found := dead_letters_json(service)) and len(found) >= len(poison) and found,
        what="every bad message's dead letter",
    )
    assert len(letters) == len(poison)
    for sent in poison:
        (letter,) = [
            e for e in letters if sent.key in (e["headers"].get("id"), *e["body"].split('"'))
        ]
        assert sent.reason in letter["reason"], (sent, letter)
        assert letter["worker"] == f"{pool}@test"
    for worker in workers:
        assert worker.process.poll() is None, worker.text()[-3000:]
        assert "Unrecoverable" not in worker.text()
    assert not os.path.exists(marker)
    wait_for(lambda: client.llen(QUEUE) == 0 and client.hlen("unacked") == 0, what="all acked")

    shown = service.aeq("dead-letters", "--limit", "3")
    assert shown.returncode == 0 and f"{len(poison)} dead letter(s) kept" in shown.stderr
    assert shown.stdout.count(f"{pool}@test") == 3
    cleared = service.aeq("dead-letters", "--clear")
    assert cleared.returncode == 0 and f"deleted {len(poison)} dead letter(s)" in cleared.stderr
    assert dead_letters_json(service) == []


def test_a_stray_chunk_message_never_touches_the_job_it_names(
    service, mnist, tmp_path, redis_server
):
    """Issue 10, case 5: a well-formed message for chunk 999 of a real 3-chunk job was recorded
    as a failed chunk of that job, so with 30/30 items done it read ``failed`` and
    ``aeq results`` refused. Such a message, and one whose item count is not its chunk's, are
    dead letters now; the job is untouched."""
    images = mnist.test_images[:30]
    np.save(tmp_path / "digits.npy", images)
    submitted = service.aeq(
        "denoise", str(tmp_path / "digits.npy"), "--no-wait", "--chunk-size", "10"
    )
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip()
    celery = make_app(load_settings({"AEQ_BROKER_URL": service.url}))
    strays = {
        (999, 10): "chunk 999 with 10 items does not fit job",
        (1, 4): "chunk 1 with 4 items does not fit job",
    }
    for chunk, count in strays:
        message = ChunkMessage.for_array(
            job, chunk, Operation.DENOISE, "denoising", 1, images[:count]
        )
        celery.send_task(TASK_NAME, kwargs=message.to_wire())
    client = redis_server.client()
    # The strays first: before the fix a count that does not fit failed the chunk it named.
    in_order = in_taking_order(client)
    requeue(client, in_order[3:] + in_order[:3])

    service.start_worker("one")
    result = collect(service, job, tmp_path / "out.npy", service.workers)

    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "out.npy", allow_pickle=False).shape == (30, 28, 28)
    status = json.loads(service.aeq("status", job, "--json").stdout)
    assert status["state"] == "done", status
    assert (status["items"]["done"], status["chunks"]["done"], status["chunks"]["failed"]) == (
        30, 3, 0,
    )  # fmt: skip
    reasons = [letter["reason"] for letter in dead_letters_json(service)]
    assert len(reasons) == 2
    for reason in strays.values():
        assert any(f"{reason} {job}" in text for text in reasons), reasons
