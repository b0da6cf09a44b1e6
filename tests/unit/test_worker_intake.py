"""The worker's intake: which messages Celery may unpack, and what happens to the others.

The messages are real kombu messages as a worker receives them; that each refused one is kept and
acknowledged by a running worker, solo and prefork, is proven by
tests/integration/test_poison_messages.py.
"""

from __future__ import annotations

import json
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis
from celery.utils.imports import symbol_by_name
from celery.worker.consumer import Consumer
from kombu.message import Message
from kombu.serialization import prepare_accept_content

from aeq.core.settings import Settings
from aeq.queue.dead_letters import DeadLetters
from aeq.queue.protocol import TASK_NAME
from worker.app import celery_config, make_app
from worker.intake import CheckedConsumer, refusal

BROKER = "redis://127.0.0.1:6399/0"
MSGPACK, JSON = "application/x-msgpack", "application/json"
APP = make_app(Settings(broker_url=BROKER))
ACCEPTED = prepare_accept_content(APP.conf.accept_content)
GOOD_KWARGS = {"job": "0123456789ab", "chunk": 0}


def received(body: bytes, content_type: str = MSGPACK, **headers: Any) -> Message:
    """A message as kombu hands it to the consumer."""
    return Message(body=body, content_type=content_type, content_encoding="binary", headers=headers)


def task_headers(**changes: Any) -> dict[str, Any]:
    """The headers aeq's client sends (Celery's protocol 2), with ``changes``."""
    sent = APP.amqp.as_task_v2(str(uuid.uuid4()), TASK_NAME, args=(), kwargs=GOOD_KWARGS)
    return {**sent.headers, **changes}


def client_message() -> Message:
    body = msgpack.packb([[], GOOD_KWARGS, {"callbacks": None, "errbacks": None, "chain": None}])
    return received(body, **task_headers())


def test_the_worker_runs_the_checked_consumer():
    name = celery_config(Settings(broker_url=BROKER))["worker_consumer"]
    assert symbol_by_name(name) is CheckedConsumer and issubclass(CheckedConsumer, Consumer)


def test_what_the_client_sends_is_accepted():
    assert refusal(client_message(), ACCEPTED) is None
    as_json = json.dumps([[], GOOD_KWARGS, {}]).encode()
    assert refusal(received(as_json, JSON, **task_headers()), ACCEPTED) is None


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        # Issue 10, case 1: each of these stopped every worker.
        (msgpack.packb(None), MSGPACK, "body is None, not Celery's (args, kwargs, embed)"),
        (msgpack.packb(12345), MSGPACK, "body is 12345, not"),
        (msgpack.packb([1]), MSGPACK, "body is [1], not"),
        (msgpack.packb({"job": "x"}), MSGPACK, "body is {'job': 'x'}, not"),
        (b"12345", JSON, "body is 12345, not"),
        (msgpack.packb({"a": 1, "b": 2, "c": 3}), MSGPACK, "body is {'a': 1"),
        (b"", MSGPACK, "body is b'', not"),
        (b"\xc1", MSGPACK, "body does not decode as application/x-msgpack: FormatError"),
        (b"[1, 2", JSON, "body does not decode as application/json"),
        (b"whatever", "application/data", "body is b'whatever', not"),  # kombu trusts this type
        (
            b"a: 1",
            "application/x-yaml",
            "type yaml (application/x-yaml); accepted: application/json, application/x-msgpack",
        ),
        (msgpack.packb([[1, 2], {}, {}]), MSGPACK, "takes keyword arguments only, got args [1, 2]"),
        (msgpack.packb([[], [1], {}]), MSGPACK, "kwargs must map names to values, got [1]"),
        (msgpack.packb([[], {1: 2}, {}]), MSGPACK, "int is not allowed for map key"),
        (msgpack.packb([[], {}, None]), MSGPACK, "embed must be a mapping, got None"),
        (
            msgpack.packb([[], {}, {"callbacks": [{"task": "x"}], "chain": None}]),
            MSGPACK,
            "takes no callbacks or chains, got callbacks",
        ),
    ],
)
def test_a_body_celery_cannot_unpack_is_refused(body, content_type, reason):
    message = received(body, content_type, **task_headers())
    assert reason in refusal(message, ACCEPTED)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "not a Celery protocol 2 task message (no task header)"),  # protocol 1
        ({"task": "celery.accumulate", "id": "x"}, "task 'celery.accumulate' is not served"),
        ({"task": ["aeq.run_chunk"], "id": "x"}, "task ['aeq.run_chunk'] is not served"),
        (task_headers(id=None), "header id must be a non-empty string, got None"),
        (task_headers(id=""), "header id must be a non-empty string"),
        (task_headers(timelimit=5), "header timelimit must be [hard, soft] seconds, got 5"),
        (task_headers(timelimit=["a", None]), "header timelimit must be"),
        (task_headers(eta=12), "header eta must be a string, got 12"),
        (task_headers(shadow={"x": 1}), "header shadow must be a string"),
    ],
)
def test_headers_celery_cannot_use_are_refused(headers, reason):
    message = received(msgpack.packb([[], GOOD_KWARGS, {}]), MSGPACK, **headers)
    assert reason in refusal(message, ACCEPTED)


class _CreatesMarker:
    """Unpickling this creates a folder: proof that a pickle body was never loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def test_a_pickle_is_refused_by_its_content_type_and_never_loaded(tmp_path: Path):
    marker = tmp_path / "unpickled"
    body = pickle.dumps(((), {"x": _CreatesMarker(str(marker))}, {}))
    message = received(body, "application/x-python-serialize", **task_headers())
    message.accept = None  # even a consumer that would accept anything
    reason = refusal(message, ACCEPTED)
    assert "untrusted content of type pickle (application/x-python-serialize)" in reason
    assert not marker.exists()


class _Acked(Message):
    acked = False

    def ack_log_error(self, logger: Any, errors: Any, multiple: bool = False) -> None:
        self.acked = True


def _consumer(dead_letters: DeadLetters) -> CheckedConsumer:
    """Only what ``refuse`` uses: a consumer not connected to anything."""
    consumer = CheckedConsumer.__new__(CheckedConsumer)
    consumer.hostname = "w@test"
    consumer.connection_errors = ()
    consumer._dead_letters = dead_letters
    return consumer


def test_a_refused_message_is_kept_and_acknowledged(redis_client):
    headers = task_headers()
    message = _Acked(body=b"\xc0" * 5000, content_type=MSGPACK, headers=headers)
    _consumer(DeadLetters(redis_client)).refuse(message, "body is None")
    (letter,) = DeadLetters(redis_client).recent(10)
    assert (letter.reason, letter.worker, letter.headers["id"]) == (
        "body is None",
        "w@test",
        headers["id"],
    )
    assert letter.body_bytes == 5000 and letter.content_type == MSGPACK
    assert message.acked


def test_a_refused_message_is_acknowledged_even_when_the_store_is_down(caplog):
    down = DeadLetters(redis.Redis(port=1, socket_connect_timeout=0.2))
    message = _Acked(body=msgpack.packb(None), content_type=MSGPACK, headers=task_headers())
    _consumer(down).refuse(message, "body is None")
    assert message.acked
    assert "could not store the dead letter" in caplog.text and "body is None" in caplog.text
