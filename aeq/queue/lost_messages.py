"""Chunk messages the broker lost, found by a follower and queued again.

A Redis list is not a reliable queue. A worker takes a message with BRPOP, and kombu records it
as unacknowledged (the ``unacked`` hash, from which the visibility timeout redelivers it) with a
second command. A Redis killed between the two, or before its reply to the BRPOP reached the
worker, has already made the pop durable: the message is gone from every list, and its chunk
would keep the job waiting forever. (Seen in about 1 run of 5 of the Redis-restart test in
tests/integration/test_store_faults.py, and once in CI.)

So a follower that has heard nothing of its job for ``QUIET_S`` looks for the messages of the
chunks still outstanding, in the queue's lists and in kombu's unacknowledged hash; a chunk whose
message is in neither is queued again. A copy made while the original was in flight after all
(a worker between its BRPOP and its record, microseconds) costs one chunk's work and nothing
else: the completion script keeps a chunk's first outcome, and a worker skips a finished chunk.

The lists and the hash are read in one MULTI/EXEC, a snapshot: kombu moves an unacknowledged
message back to its list (the visibility timeout's restore) in a transaction of its own, and a
message read in neither place because it moved between two separate reads would be sent twice.
That costs one reply of the queue's messages (about 500 bytes each), only while the job is
quiet, at most once per ``QUIET_S``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import Any

import msgpack
import redis

# A job that has had no news for this long has its outstanding chunks looked for in the broker.
# Longer than a chunk normally takes; shorter than anyone waits before giving up.
QUIET_S = 10.0
# kombu's Redis transport keeps unacknowledged messages here (its ``unacked_key`` default).
UNACKED_KEY = "unacked"
# kombu puts a message sent with priority P > 0 on the list QUEUE + SEPARATOR + P (steps 3, 6, 9).
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)


def queue_lists(queue: str) -> list[str]:
    """The Redis lists kombu may hold ``queue``'s messages in."""
    return [queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]


def chunks_in_broker(broker: redis.Redis, queue: str, job: str) -> set[int]:
    """The chunks of ``job`` whose message is waiting in ``queue`` or held unacknowledged."""
    found: set[int] = set()
    for envelope in _envelopes(broker, queue):
        ids = _job_and_chunk(envelope)
        if ids is not None and ids[0] == job:
            found.add(ids[1])
    return found


def lost_chunks(broker: redis.Redis, queue: str, job: str, outstanding: Iterable[int]) -> list[int]:
    """Those of ``outstanding`` (queued, not finished) whose message is nowhere in the broker."""
    waiting = sorted(outstanding)
    if not waiting:
        return []
    present = chunks_in_broker(broker, queue, job)
    return [chunk for chunk in waiting if chunk not in present]


def _envelopes(broker: redis.Redis, queue: str) -> Iterator[Any]:
    pipe = broker.pipeline(transaction=True)  # one snapshot of the lists and the hash
    lists = queue_lists(queue)
    for name in lists:
        pipe.lrange(name, 0, -1)
    pipe.hvals(UNACKED_KEY)
    *waiting, unacked = pipe.execute()
    for messages in waiting:
        yield from map(_json, messages)
    for raw in unacked:  # [envelope, exchange, routing key]
        entry = _json(raw)
        if isinstance(entry, list) and entry:
            yield entry[0]


def _json(raw: bytes | str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def _job_and_chunk(envelope: Any) -> tuple[str, int] | None:
    """The job and chunk a kombu envelope carries, or None for anything else (another task, a
    body that does not decode: the worker's intake deals with those)."""
    if not isinstance(envelope, dict):
        return None
    try:
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if envelope.get("content-type") == "application/x-msgpack":
            decoded = msgpack.unpackb(body, raw=False, strict_map_key=False)
        else:
            decoded = json.loads(body)
        kwargs = decoded[1]
        job, chunk = kwargs["job"], kwargs["chunk"]
    except (KeyError, IndexError, TypeError, ValueError):  # msgpack's and base64's errors too
        return None
    if isinstance(job, str) and isinstance(chunk, int) and not isinstance(chunk, bool):
        return job, chunk
    return None
