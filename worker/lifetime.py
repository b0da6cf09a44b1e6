"""A prefork worker's children die with their parent.

Celery's parent process holds the broker connection and acknowledges messages; its children only
run tasks. billiard's children notice a dead parent only when they next read the task pipe, so a
child busy with a chunk when its parent is SIGKILLed would finish it and store the result with
nobody left to acknowledge the message, and a child blocked elsewhere could linger. On Linux the
kernel can deliver a signal to a process when its parent dies (``prctl(PR_SET_PDEATHSIG)``):
each child asks for SIGKILL, so ``kill -9`` of a worker stops all of it at once and its
unacknowledged chunks come back to the queue whole, as with the solo pool.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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
