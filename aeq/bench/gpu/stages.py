"""The check's stages: what each one found, the time budget they share, and child processes.

Every stage ends as one ``StageResult``: passed, failed or skipped, with its seconds, one line
saying what it found (or why it did not run) and its data. A stage that cannot run here (the CUDA
stages on a host without a GPU, the service stages without redis-server) is skipped with the
reason: skipped is never passed, and the check passes only when no stage failed.

The measuring stages run in child processes (``run_child``) with a hard timeout, so one stuck
ONNX Runtime call cannot hold the check past its budget; the child writes its results as it goes
and whatever it had written is kept when it is stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from aeq.bench.report import write_atomic

# Kept back from every stage's timeout: stopping the workers and Redis and writing the report.
RESERVE_S = 8.0
PREFIX = "gpu-check:"


class Status(StrEnum):
    """How a stage ended."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class StageSkipped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a stage that cannot run here; the message says why."""


class StageFailed(Exception):  # noqa: N818 - the stage's own verdict
    """Raised by a stage that ran and found a fault; the message is its one line."""

    def __init__(self, line: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(line)
        self.data = dict(data or {})


@dataclass(frozen=True)
class Outcome:
    """What a stage that passed found: one line, and its data for report.json."""

    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    """One stage of the check, as the report records it."""

    name: str
    status: Status
    seconds: float
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{PREFIX} {self.status.value:<7} {self.name} ({self.seconds:.1f} s): {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.data,
            "status": self.status.value,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


def run_stage(name: str, stage: Callable[[], Outcome]) -> StageResult:
    """Run one stage, turn how it ended into a ``StageResult`` and print its line."""
    started = time.perf_counter()
    try:
        outcome = stage()
        status, detail, data = Status.PASSED, outcome.detail, outcome.data
    except StageSkipped as skipped:
        status, detail, data = Status.SKIPPED, str(skipped), {}
    except StageFailed as failed:
        status, detail, data = Status.FAILED, str(failed), failed.data
    except Exception as error:  # a fault of the check itself: recorded, and the rest goes on
        status, detail, data = Status.FAILED, one_line(f"{type(error).__name__}: {error}"), {}
    result = StageResult(name, status, time.perf_counter() - started, detail, data)
    say(result.line())
    return result


def skipped(name: str, reason: str) -> StageResult:
    """A stage that is not even started (its reason printed like any stage's line)."""
    result = StageResult(name, Status.SKIPPED, 0.0, reason)
    say(result.line())
    return result


def say(line: str) -> None:
    print(line, flush=True)


def one_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of ``text``, shortened: what a stage's detail shows of an error."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    return last if len(last) <= limit else last[: limit - 3] + "..."


@dataclass(frozen=True)
class Budget:
    """The check's time: ``total_s`` from ``started`` (``time.time()``, so the shell's install
    step before this process counts too)."""

    total_s: float
    started: float

    def elapsed_s(self) -> float:
        return time.time() - self.started

    def remaining_s(self) -> float:
        return self.total_s - self.elapsed_s()

    def timeout_s(self, cap_s: float) -> float:
        """A stage's timeout: ``cap_s``, or less so that ``RESERVE_S`` is left at the end."""
        return max(0.0, min(cap_s, self.remaining_s() - RESERVE_S))

    def share_s(self, fraction: float, floor_s: float = 1.0) -> float:
        """``fraction`` of the time left after the reserve, at least ``floor_s`` if there is."""
        free = self.remaining_s() - RESERVE_S
        return max(0.0, min(free, max(floor_s, free * fraction)))

    def require(self, seconds: float, what: str) -> float:
        """``seconds`` if that much is left, else fail the stage saying the budget ran out."""
        if seconds < 1.0:
            raise StageFailed(
                f"out of time: {what} not started ({self.elapsed_s():.0f} s of the "
                f"{self.total_s:.0f} s budget used)"
            )
        return seconds


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON, all or nothing (``aeq.bench.report.write_atomic``)."""
    write_atomic(path, json.dumps(data, indent=2, default=str, allow_nan=False) + "\n")


def run_child(
    module: str, spec: Mapping[str, Any], folder: Path, timeout_s: float, env: Mapping[str, str]
) -> dict[str, Any]:
    """Run ``python -m MODULE SPEC.json RESULT.json`` with a hard timeout; return its result.

    The child's output goes to this process's (the check's log). Whatever result the child had
    written is returned, with ``"timed_out": True`` if it had to be stopped; ``StageFailed`` if it
    exited with an error or wrote nothing.
    """
    name = module.rsplit(".", 1)[-1]
    spec_path, result_path = folder / f"{name}-spec.json", folder / f"{name}-result.json"
    write_json(spec_path, spec)
    result_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", module, str(spec_path), str(result_path)]
    timed_out = False
    try:
        finished = subprocess.run(command, env=dict(env), timeout=timeout_s, check=False)
        code = finished.returncode
    except subprocess.TimeoutExpired:
        timed_out, code = True, None
    if not result_path.exists():
        why = f"timed out after {timeout_s:.0f} s" if timed_out else f"exited with {code}"
        raise StageFailed(f"{module} {why} before writing any result")
    result = dict(json.loads(result_path.read_text()))
    if timed_out:
        result["timed_out"] = True
    elif code != 0:
        raise StageFailed(f"{module} exited with {code}: {result.get('error', 'see the log')}")
    return result


def child_main(argv: list[str], measure: Callable[[dict[str, Any], Path], None]) -> int:
    """A child's entry point: read the spec, run ``measure(spec, result_path)``; an exception is
    written into the result as ``error`` (one line) and exits 1."""
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_path.read_text())
    try:
        measure(spec, result_path)
    except Exception as error:
        partial = json.loads(result_path.read_text()) if result_path.exists() else {}
        write_json(result_path, {**partial, "error": one_line(f"{type(error).__name__}: {error}")})
        raise
    return 0
