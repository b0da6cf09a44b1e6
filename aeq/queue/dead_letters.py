"""Dead letters: messages a worker could not parse, kept in Redis for someone to inspect.

    aeq:dead-letters    list   msgpack entries, newest first, at most ``MAX_DEAD_LETTERS``

A worker that meets a message it cannot use (a body that does not decode, is not Celery's
``(args, kwargs, embed)``, is not a chunk message, or names a chunk its job does not have)
acknowledges it, so it can neither stop the worker nor come back, and keeps a small record here:
when, which worker, why, the message's headers and the first ``BODY_PREFIX_BYTES`` of its raw
body (never decoded further: a pickle stays bytes). ``aeq dead-letters`` lists and clears them.

The list is capped (LPUSH, then LTRIM) rather than expired: a flood of bad messages costs at most
``MAX_DEAD_LETTERS`` small entries, and the latest are kept however old they get.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import msgpack
import redis

DEAD_LETTERS_KEY = "aeq:dead-letters"
# About 1.5 KB an entry: the list stays under 2 MB however many bad messages arrive.
MAX_DEAD_LETTERS = 1000
BODY_PREFIX_BYTES = 1024
# Headers are whatever the sender put there; a few short values identify a message.
MAX_HEADERS = 32
HEADER_TEXT_CHARS = 200
# msgpack's integers are 64-bit; a bigger one (JSON allows it) is kept as text.
_INT_RANGE = range(-(2**63), 2**64)


@dataclass(frozen=True)
class DeadLetter:
    """The record of one message a worker refused.

    Attributes:
        reason: why the worker could not use it, in one line.
        worker: the worker's name (Celery hostname).
        headers: the message's headers, values shortened to ``HEADER_TEXT_CHARS``.
        body: the first ``BODY_PREFIX_BYTES`` of the raw body, as received.
        body_bytes: the whole body's size.
        content_type: the content type the message declared.
        time: when it was refused (Unix time).
    """

    reason: str
    worker: str
    headers: dict[str, Any]
    body: bytes
    body_bytes: int
    content_type: str = ""
    time: float = field(default_factory=time.time)

    @classmethod
    def of(
        cls,
        reason: str,
        worker: str,
        headers: Any,
        body: bytes | str | None,
        content_type: str | None = None,
    ) -> DeadLetter:
        """A record of a refused message, its headers and body cut to size."""
        raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body or b""
        return cls(
            reason=reason,
            worker=worker,
            headers=_short_headers(headers),
            body=bytes(raw[:BODY_PREFIX_BYTES]),
            body_bytes=len(raw),
            content_type=str(content_type or ""),
        )

    def to_bytes(self) -> bytes:
        return msgpack.packb(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> DeadLetter:
        """Read an entry back; one that is not a dead letter becomes one saying so."""
        try:
            data = msgpack.unpackb(raw)
            return cls(
                reason=str(data["reason"]),
                worker=str(data["worker"]),
                headers=dict(data["headers"]),
                body=bytes(data["body"]),
                body_bytes=int(data["body_bytes"]),
                content_type=str(data["content_type"]),
                time=float(data["time"]),
            )
        except (ValueError, TypeError, KeyError) as error:
            return replace(cls.of(f"unreadable dead-letter entry ({error})", "", {}, raw), time=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: local ISO time, the body prefix as text with undecodable bytes escaped."""
        data = asdict(self)
        data["time"] = datetime.fromtimestamp(self.time).isoformat(timespec="seconds")
        data["body"] = self.body.decode("utf-8", "backslashreplace")
        return data


class DeadLetters:
    """The capped list of dead letters in Redis."""

    def __init__(self, client: redis.Redis, limit: int = MAX_DEAD_LETTERS) -> None:
        self.client: Any = client
        self.limit = limit

    def keep(self, letter: DeadLetter) -> None:
        """Add ``letter`` at the head and drop the oldest beyond the cap (one round trip)."""
        pipe = self.client.pipeline()
        pipe.lpush(DEAD_LETTERS_KEY, letter.to_bytes())
        pipe.ltrim(DEAD_LETTERS_KEY, 0, self.limit - 1)
        pipe.execute()

    def recent(self, limit: int) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, newest first."""
        entries = self.client.lrange(DEAD_LETTERS_KEY, 0, limit - 1)
        return [DeadLetter.from_bytes(raw) for raw in entries]

    def count(self) -> int:
        return int(self.client.llen(DEAD_LETTERS_KEY))

    def clear(self) -> int:
        """Delete every dead letter; return how many there were."""
        pipe = self.client.pipeline()
        pipe.llen(DEAD_LETTERS_KEY)
        pipe.delete(DEAD_LETTERS_KEY)
        return int(pipe.execute()[0])


def _short_headers(headers: Any) -> dict[str, Any]:
    if not isinstance(headers, Mapping):
        return {} if headers is None else {"(headers)": _short(headers)}
    return {_text(key): _short(value) for key, value in list(headers.items())[:MAX_HEADERS]}


def _short(value: Any) -> Any:
    """Numbers, booleans and None as they are; anything else as (short) text."""
    if (
        value is None
        or isinstance(value, bool | float)
        or (isinstance(value, int) and value in _INT_RANGE)
    ):
        return value
    return _text(value)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= HEADER_TEXT_CHARS else text[: HEADER_TEXT_CHARS - 3] + "..."
