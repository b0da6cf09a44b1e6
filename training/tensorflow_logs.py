"""TensorFlow without its start-up noise: the one place aeq tells TensorFlow how loud to be.

TensorFlow's C++ runtime writes to the process's file descriptor 2, not to Python's ``sys.stderr``:
on import, absl's "All log messages before absl::InitializeLog() is called are written to STDERR"
banner and INFO lines (oneDNN, CUDA drivers) that no log level silences; later, ERROR lines that
are no error for aeq (``failed call to cuInit`` on a host without a GPU, ``NodeDef mentions
attribute ...`` from tf.data). Every command that loads TensorFlow (train, export, bench) calls
``import_tensorflow_quietly`` first, so none of this reaches the user's terminal.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# TensorFlow's C++ log level. 3 keeps FATAL only: the ERROR lines TensorFlow prints on a healthy
# CPU host are the ones above, and a real failure reaches aeq as a Python exception. A
# TF_CPP_MIN_LOG_LEVEL the user set wins (0 shows everything again).
TF_LOG_LEVEL = "3"
# What TensorFlow prints on import before its log level applies: absl's banner, and absl-format
# INFO and WARNING lines ("I0000 00:00:1796097446.337446   15319 port.cc:153] ...": the seconds
# field holds the whole Unix time before absl is set up).
IMPORT_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] )"
)
# Python-side loggers of TensorFlow and absl: only their errors reach aeq's stderr.
QUIET_LOGGERS = ("absl", "tensorflow")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow once, with its start-up lines kept out of aeq's output.

    Call it before anything imports TensorFlow or Keras; once TensorFlow is loaded it does nothing.
    Lines TensorFlow writes on import that are not known noise are passed on to stderr.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
    with _descriptor_2_filtered(IMPORT_NOISE):
        import tensorflow  # noqa: F401  (the import is the point)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def _descriptor_2_filtered(noise: re.Pattern[str]) -> Iterator[None]:
    """Capture what anything writes to file descriptor 2 in the block; pass on all but ``noise``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not noise.match(line)))
            sys.stderr.flush()
