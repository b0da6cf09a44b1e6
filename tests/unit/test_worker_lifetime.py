"""A prefork child dies with its worker (``worker.lifetime.die_with_parent``), real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

GONE_TIMEOUT_S = 10.0
# A parent that forks a child; the child asks to die with it, says its pid, and sleeps.
PARENT = """
import os, sys, time
from worker.lifetime import die_with_parent
parent = os.getpid()
child = os.fork()
if child == 0:
    die_with_parent(parent)
    print(os.getpid(), flush=True)
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_child_is_killed_when_its_parent_is_sigkilled():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    child = int(parent.stdout.readline())
    try:
        assert not gone(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_gone(child), "the child outlived its SIGKILLed parent"
    finally:
        if not gone(child):
            os.kill(child, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_kills_itself():
    script = (
        "import os; from worker.lifetime import die_with_parent\n"
        "die_with_parent(os.getppid() + 1_000_000)\n"
        "print('survived')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL and "survived" not in result.stdout
