"""SIGTERM handled like Ctrl-C while a job command runs.

``timeout``, ``docker stop`` and ``kill`` send SIGTERM, which by default ends the process where
it stands: a job half-queued stayed ``running``, a ``.partial-`` output stayed on disk. Raised as
``KeyboardInterrupt`` instead, it unwinds through the same paths as Ctrl-C: a job still being
queued is cancelled, a queued one is left to collect later, staged output is removed.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises ``KeyboardInterrupt`` in the main thread."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
