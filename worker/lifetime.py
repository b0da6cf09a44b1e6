"""A prefork worker's children die with their parent.

Celery's parent process holds the broker connection and acknowledges messages; its children only
run tasks. billiard's children notice a dead parent only when they next read the task pipe, so a
child busy with a chunk when its parent is SIGKILLed would finish it and store the result with
nobody left to acknowledge the message, and a child blocked elsewhere could linger. On Linux the
kernel can deliver a signal to a process when its parent dies (``prctl(PR_SET_PDEATHSIG)``):
each child asks for SIGKILL, so ``kill -9`` of a worker stops all of it at once and its
unacknowledged chunks come back to the queue whole, as with the solo pool.

A worker also says it is alive: once Celery reports it consumes its queue (``worker_ready``), a
thread in its main process writes a heartbeat to Redis every second (``aeq.queue.workers``) until
it shuts down (``worker_shutdown`` deletes it); a killed worker's heartbeat expires in seconds.
Clients read these to tell a waiting user that no worker is listening, and ``aeq status`` lists
them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time
from typing import Any

from celery import signals

from aeq.queue.workers import Heartbeat, WorkerInfo

# From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent exits; False where not supported.

    Args:
        parent_pid: the parent this process was forked from. If it has already gone (it died
            between the fork and this call, so the kernel would never send the signal), this
            process kills itself at once.

    Raises:
        OSError: the kernel refused the request.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)
    return True


_heartbeat: Heartbeat | None = None


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    """In the worker's main process, once it consumes: beat until shutdown."""
    global _heartbeat
    from aeq.queue.store import connect
    from worker import app as app_module

    if _heartbeat is not None:
        return
    settings = app_module.settings
    name = str(getattr(sender, "hostname", "") or f"aeq@{socket.gethostname()}")
    info = WorkerInfo(
        name=name,
        host=socket.gethostname(),
        pid=os.getpid(),
        queue=app_module.QUEUE,
        concurrency=app_module.options.concurrency,
        started_at=time.time(),
    )
    _heartbeat = Heartbeat(connect(settings.results_url or "", check=False), info)
    _heartbeat.start()


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    """A worker that stops leaves the list at once (no waiting for the heartbeat to expire)."""
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None
