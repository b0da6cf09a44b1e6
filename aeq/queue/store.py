"""Connections to Redis that fail fast and say where they tried to go."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
from redis.connection import Encoder, PythonRespSerializer

from aeq.core.errors import BrokerError, UsageError

# An unreachable Redis must fail a command within a few seconds, not hang it.
CONNECT_TIMEOUT_S = 3.0
# Long enough for the longest blocking read aeq issues (BLPOP waits at most WAIT_SLICE_S).
SOCKET_TIMEOUT_S = 30.0
# hiredis (a dependency) parses replies: a 1.6 MB chunk in about 0.5 ms of CPU, where
# redis-py's own parser takes 5. Its command packer, though, copies every argument into one
# buffer (3.6 ms a chunk): redis-py's sends a large value as it is (a memoryview uncopied).
# Arguments are bytes, numbers or str (UTF-8), as redis-py's defaults encode them.
_BUFFER_CUTOFF = 6000  # redis-py's: larger arguments are sent as buffers of their own
COMMAND_PACKER = PythonRespSerializer(_BUFFER_CUTOFF, Encoder("utf-8", "strict", False).encode)
HINT = (
    "is redis-server running there? Start one with 'redis-server --port 6379' or "
    "'docker compose up -d redis', or unset AEQ_BROKER_URL to run in this process"
)


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def connect(url: str, check: bool = True) -> redis.Redis:
    """A Redis client for ``url``; with ``check``, prove it answers (one PING) first.

    Raises:
        UsageError: ``url`` is not a Redis URL.
        BrokerError: nothing answers at ``url`` within ``CONNECT_TIMEOUT_S``.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"{redact(url) or '(empty)'} is not a Redis URL (redis://host:port/db)")
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
        command_packer=COMMAND_PACKER,
    )
    if check:
        ping(client, url)
    return client


def ping(client: redis.Redis, url: str) -> None:
    """Raise ``BrokerError`` naming ``url`` unless Redis answers."""
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        # The server answered: "is redis-server running?" would send the user the wrong way.
        given = "the password in the URL" if urlsplit(url).password else "no password"
        raise BrokerError(
            f"Redis at {redact(url)} refused {given}: put its password in the URL "
            "(redis://:PASSWORD@host:port/db, e.g. AEQ_BROKER_URL) and check it"
        ) from None
    except redis.RedisError as error:
        raise BrokerError(f"cannot reach Redis at {redact(url)} ({error}); {HINT}") from None
