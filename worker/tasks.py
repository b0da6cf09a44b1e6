"""The Celery task: one for every operation (the operation travels in the message).

Thin on purpose: it hands the message to ``worker.processing.process_chunk`` with this process's
context (Redis connection, model repository, ONNX Runtime engine), made on first use, which in a
prefork worker is in the child, after the fork.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import redis
from celery.exceptions import Reject

from aeq.queue.jobs import JobStore
from aeq.queue.protocol import TASK_NAME
from aeq.queue.store import connect
from aeq.repository import ModelRepository
from worker import app as app_module
from worker.app import app
from worker.inference import process_engine
from worker.processing import WorkerContext, process_chunk

logger = logging.getLogger(__name__)

# Pause before handing a message back when the result store is unreachable, so a Redis outage
# does not become a hot loop of redeliveries.
STORE_RETRY_PAUSE_S = 1.0

_context: WorkerContext | None = None
_context_pid: int | None = None


def worker_context(hostname: str | None = None) -> WorkerContext:
    """This process's context, created on first use (after any fork)."""
    global _context, _context_pid
    if _context is None or _context_pid != os.getpid():
        settings, options = app_module.settings, app_module.options
        client = connect(settings.results_url or "", check=False)
        _context = WorkerContext(
            settings=settings,
            store=JobStore(client, settings.result_ttl_s),
            repository=ModelRepository(settings.model_repository),
            engine=process_engine(settings, options.concurrency, options.require_gpu),
            hostname=hostname or socket.gethostname(),
        )
        _context_pid = os.getpid()
    return _context


@app.task(name=TASK_NAME, bind=True, acks_late=True, ignore_result=True)
def run_chunk(self: Any, **message: Any) -> dict[str, Any]:
    """Process one chunk message (see ``aeq.queue.protocol``); return a summary for the log."""
    context = worker_context(self.request.hostname)
    try:
        return process_chunk(context, message, task_id=self.request.id or "")
    except redis.RedisError as error:
        logger.error("result store unreachable (%s); handing the message back", error)
        time.sleep(STORE_RETRY_PAUSE_S)
        raise Reject(str(error), requeue=True) from None
