"""Worker heartbeats (``aeq.queue.workers``) and the client's liveness notices against a real
redis-server; ``aeq worker``'s repository check. Real worker processes: tests/integration/
test_liveness.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from worker_support import tiny_repository

from aeq.core.errors import RepositoryError
from aeq.core.settings import Settings
from aeq.queue import protocol
from aeq.queue.workers import (
    WORKERS_KEY,
    Heartbeat,
    Liveness,
    WorkerInfo,
    beat,
    leave,
    live_workers,
    worker_key,
)
from worker import app as app_module
from worker.launcher import published_repository


def info(name: str, queue: str = protocol.QUEUE) -> WorkerInfo:
    return WorkerInfo(name, "host", 123, queue, 2, 1.0)


def test_the_client_and_the_worker_name_the_same_queue():
    assert protocol.QUEUE == app_module.QUEUE


def test_a_heartbeat_lists_the_worker_until_it_expires_then_it_is_pruned(redis_client):
    beat(redis_client, info("a@x"), ttl_s=0.3)
    beat(redis_client, info("b@x", queue="other"), ttl_s=30)

    assert live_workers(redis_client) == [info("a@x"), info("b@x", queue="other")]
    assert live_workers(redis_client, protocol.QUEUE) == [info("a@x")]
    time.sleep(0.4)
    assert [w.name for w in live_workers(redis_client)] == ["b@x"]
    assert redis_client.smembers(WORKERS_KEY) == {b"b@x"}

    leave(redis_client, "b@x")
    assert live_workers(redis_client) == []
    assert redis_client.keys("aeq:*") == []


def test_an_unreadable_heartbeat_counts_as_no_worker(redis_client):
    redis_client.sadd(WORKERS_KEY, "odd")
    redis_client.set(worker_key("odd"), b"\x80not json")
    assert live_workers(redis_client) == []


def test_the_heartbeat_thread_beats_with_a_ttl_and_leaves_when_stopped(redis_client):
    heartbeat = Heartbeat(redis_client, info("a@x"), interval_s=0.05, ttl_s=2.0)
    heartbeat.start()
    try:
        deadline = time.monotonic() + 5
        while not live_workers(redis_client) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert live_workers(redis_client) == [info("a@x")]
        assert 0 < redis_client.pttl(worker_key("a@x")) <= 2000
    finally:
        heartbeat.stop()
    assert live_workers(redis_client) == []


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_liveness_says_none_then_a_worker_came_then_they_vanished(redis_client):
    said: list[str] = []
    clock = Clock()
    liveness = Liveness(redis_client, protocol.QUEUE, said.append, interval_s=1.0, clock=clock)

    liveness.check("J")
    assert len(said) == 1 and "no worker is consuming queue 'aeq'" in said[0] and "J" in said[0]
    liveness.check("J")  # nothing changed: nothing said again
    beat(redis_client, info("a@x"), ttl_s=30)
    liveness.check("J")  # within the interval: not read
    assert len(said) == 1
    clock.now += 1.0
    liveness.check("J")
    assert said[1] == "worker a@x is consuming queue 'aeq': job J goes on"

    leave(redis_client, "a@x")
    clock.now += 1.0
    liveness.check("J")
    assert said[2].startswith("the worker(s) stopped (a@x gone): job J waits")
    clock.now += 1.0
    liveness.check("J")
    assert len(said) == 3


def test_a_finished_chunk_makes_liveness_look_again_at_once(redis_client):
    said: list[str] = []
    liveness = Liveness(redis_client, protocol.QUEUE, said.append, clock=Clock())
    liveness.check("J")
    beat(redis_client, info("a@x"), ttl_s=30)
    liveness.progressed("J")
    assert len(said) == 2 and said[1].startswith("worker a@x is consuming")


def test_a_worker_on_another_queue_is_no_worker_for_this_one(redis_client):
    said: list[str] = []
    beat(redis_client, info("a@x", queue="other"), ttl_s=30)
    Liveness(redis_client, protocol.QUEUE, said.append).check("J")
    assert len(said) == 1 and "no worker" in said[0]


def test_the_worker_resolves_a_relative_repository(tmp_path, monkeypatch):
    tiny_repository(tmp_path / "models")
    monkeypatch.chdir(tmp_path)
    settings, models = published_repository(Settings(model_repository=Path("models")))
    assert settings.model_repository == tmp_path.resolve() / "models"
    assert settings.model_repository.is_absolute() and models


@pytest.mark.parametrize("made", [False, True])
def test_the_worker_refuses_a_repository_without_models(tmp_path, monkeypatch, made):
    if made:
        (tmp_path / "model_repository" / "conv").mkdir(parents=True)  # a folder, no version
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RepositoryError) as raised:
        published_repository(Settings())
    message = str(raised.value)
    assert str(tmp_path.resolve() / "model_repository") in message
    assert ("publishes no models" if made else "does not exist") in message
    assert "--repository" in message and "\n" not in message
