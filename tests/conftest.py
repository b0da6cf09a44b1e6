"""Fixtures shared by unit and integration tests: a private, real ``redis-server``.

The server is ``aeq.private_service.RedisServer`` (the one ``aeq bench`` measures): a free port,
its data in a temporary folder (append-only file on, RDB snapshots off), shut down after use; the
system Redis on 6379 is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from aeq.private_service import RedisServer
from training.tensorflow_logs import set_tensorflow_environment

# Tests that import Keras directly load TensorFlow as aeq's commands do: same kernels, same numbers.
set_tensorflow_environment()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the whole session (tests flush what they need)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's redis-server, on an empty database."""
    client = redis_server.client()
    client.flushdb()
    yield client
    client.close()
