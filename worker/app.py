"""The Celery app, configured from aeq's one settings object.

``celery -A worker.app worker`` and ``celery -A worker.app inspect ping`` work as usual; ``aeq
worker`` starts the same app with aeq's defaults (``worker.launcher``).

Choices (docs/SERVICE.md explains each):
- msgpack messages, JSON also accepted, never pickle (a pickled message is refused and acked).
- Every message is checked before Celery unpacks it (``worker.intake``): one it cannot use is
  acknowledged and kept as a dead letter, and the worker goes on serving.
- Late acknowledgement and prefetch 1: a message is acknowledged only after its chunk's output is
  stored, and a worker holds at most one unacknowledged message per process.
- Redis redelivers an unacknowledged message once the visibility timeout has passed; kombu only
  notices during a periodic sweep, which runs every ``restore_interval_s(visibility_timeout)``.
- Results are stored by aeq itself (``aeq.queue.jobs``), so Celery's result backend is off.
- A prefork child dies with its parent (``worker.lifetime``): nothing keeps running chunks for a
  worker that was killed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from celery import Celery, signals

from aeq.core.settings import Settings, load_settings
from worker.lifetime import die_with_parent

QUEUE = "aeq"
# Celery's consumer with the message check in front (imported by a worker only, when it starts).
CONSUMER = "worker.intake:CheckedConsumer"
# Client-side connect timeout: an unreachable broker fails in seconds, not after kombu's retries.
CONNECT_TIMEOUT_S = 3.0
# Reads on an open connection; longer than kombu's 1 s BRPOP poll so it only fires on a dead peer.
SOCKET_TIMEOUT_S = 30.0
# The kombu sweep that restores timed-out unacknowledged messages runs this many times per
# visibility timeout (at most every 10 s): a killed worker's chunk comes back at most
# visibility_timeout * (1 + 1/4) after it was taken.
RESTORE_SWEEPS_PER_TIMEOUT = 4
MAX_RESTORE_INTERVAL_S = 10.0


@dataclass(frozen=True)
class WorkerOptions:
    """How this worker process was started (``aeq worker`` options)."""

    concurrency: int = 1
    require_gpu: bool = False


def restore_interval_s(visibility_timeout_s: int) -> float:
    """Seconds between kombu's sweeps for messages whose visibility timeout has passed."""
    return min(MAX_RESTORE_INTERVAL_S, max(0.5, visibility_timeout_s / RESTORE_SWEEPS_PER_TIMEOUT))


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration aeq runs with."""
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": CONNECT_TIMEOUT_S,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": restore_interval_s(settings.visibility_timeout_s),
            # kombu otherwise scans only every 10th sweep.
            "unacked_restore_throttle": 1,
            # A worker killed during a sweep (milliseconds long) leaves kombu's sweep lock behind;
            # with kombu's 300 s expiry that held back every redelivery for five minutes.
            "unacked_mutex_expire": restore_interval_s(settings.visibility_timeout_s),
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_timeout": SOCKET_TIMEOUT_S,
        },
        "task_serializer": "msgpack",
        "result_serializer": "msgpack",
        "accept_content": ["msgpack", "json"],
        "result_accept_content": ["msgpack", "json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": QUEUE,
        "task_create_missing_queues": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        # With late acks a task cut off by a lost connection is redelivered anyway.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": True,
        "worker_consumer": CONSUMER,
        "worker_send_task_events": False,
    }


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings`` (the worker's, or a client's for publishing)."""
    celery_app = Celery("aeq", set_as_current=False)
    celery_app.conf.update(celery_config(settings))
    celery_app.conf.update(include=["worker.tasks"])
    return celery_app


settings: Settings = load_settings()
options = WorkerOptions()
app = make_app(settings)
# The worker's main process, recorded before it forks its pool.
_parent_pid: int | None = None


def configure(new_settings: Settings, new_options: WorkerOptions) -> None:
    """Set what this worker process (and the children it forks) run with; before the start."""
    global settings, options
    settings = new_settings
    options = new_options
    app.conf.update(celery_config(new_settings))


@signals.worker_init.connect
def _record_concurrency(sender: Any = None, **_: Any) -> None:
    """Remember the main process (before any fork); under plain ``celery -A worker.app worker -c
    N``, split the cores over N processes too."""
    global options, _parent_pid
    _parent_pid = os.getpid()
    concurrency = getattr(sender, "concurrency", None)
    if isinstance(concurrency, int) and concurrency > 0:
        options = replace(options, concurrency=concurrency)


@signals.worker_process_init.connect
def _die_with_the_worker(**_: Any) -> None:
    """In each prefork child: be killed by the kernel when the worker's main process dies.

    The solo pool sends this signal too, in the main process itself: nothing to arm there.
    """
    if _parent_pid is not None and os.getpid() != _parent_pid:
        die_with_parent(_parent_pid)
