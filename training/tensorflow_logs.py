"""TensorFlow's start-up: the one place aeq tells TensorFlow how loud to be and what to run on.

Kernels: TensorFlow turns its oneDNN kernels on by default only on some x86 CPUs (recent Intel
ones); elsewhere (an AVX2-only AMD Zen 3, say) it runs Eigen's and says nothing. oneDNN's were
measured 2-3x faster for the conv nets there (docs/TRAINING.md), so aeq turns them on everywhere
before TensorFlow loads; a ``TF_ENABLE_ONEDNN_OPTS`` the user set wins (``0`` gives Eigen's back).
Which path a run took changes its numerics: ``kernel_path()`` names it for the training record.

Logs:

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
import platform
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
ONEDNN_SWITCH = "TF_ENABLE_ONEDNN_OPTS"
# oneDNN's own cap on the instruction set it dispatches to (unset: the best the CPU has).
ONEDNN_ISA_CAP = "ONEDNN_MAX_CPU_ISA"
# The vector extensions that decide which kernels run, as /proc/cpuinfo spells them.
VECTOR_FLAGS = ("avx512_vnni", "avx512f", "avx2", "fma", "avx", "sse4_2")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow once, with its start-up lines kept out of aeq's output.

    Call it before anything imports TensorFlow or Keras; once TensorFlow is loaded it does nothing.
    Lines TensorFlow writes on import that are not known noise are passed on to stderr.
    """
    if "tensorflow" in sys.modules:
        return
    set_tensorflow_environment()
    with _descriptor_2_filtered(IMPORT_NOISE):
        import tensorflow  # noqa: F401  (the import is the point)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def set_tensorflow_environment() -> None:
    """Set aeq's log level and oneDNN switch for a TensorFlow not yet imported (the user's win)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)
    os.environ.setdefault(ONEDNN_SWITCH, "1")


def kernel_path() -> dict[str, str]:
    """The CPU kernel path this process trains on: same seed + same path = same weights.

    Call after TensorFlow is imported: ``onednn`` is what TensorFlow reports, not the switch.
    """
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own oneDNN query

    flags = _cpu_flags()
    return {
        "onednn": "on" if _pywrap_util_port.IsMklEnabled() else "off",
        "onednn_isa_cap": os.environ.get(ONEDNN_ISA_CAP, "none"),
        "cpu": _cpu_model(),
        "cpu_vector_isa": " ".join(flag for flag in VECTOR_FLAGS if flag in flags) or "unknown",
    }


def _cpu_model() -> str:
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    for line in _cpuinfo_lines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: the model name comes from platform, the flags stay unknown
        return []


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
