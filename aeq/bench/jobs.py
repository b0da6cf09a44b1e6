"""Run one job the way ``aeq denoise/reconstruct IN.npy -o OUT.npy`` does, timing every phase.

``run_job`` goes through the same calls as the CLI's waiting path (``aeq.files.inputs.open_images``,
``aeq.client.client.submit_collecting``, ``follow``, the staged writer's ``commit``, ``finish``),
minus the progress bar. It times each phase from the outside: the job store, the input source,
the output writer and the client's between-chunk ``follow`` are wrapped in timing proxies, so no
worker/ code is changed to be measured. Publishing the Celery messages is what is left of the
submit loop once the input reads, the Redis writes and the outputs written between chunks are
taken out.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aeq.core.catalog import Operation
from aeq.core.settings import Settings
from aeq.repository import ModelVersion

READ = "client: read input chunks"
OPEN = "client: open and check the input file"
CONNECT = "client: connect (Redis PING)"
CREATE = "client: create the job record"
STORE_INPUT = "client: store chunk inputs (Redis SET)"
PUBLISH = "client: publish task messages (Celery, incl. its app on first use)"
WAIT = "client: wait for chunk notices (BLPOP)"
STATUS = "client: read chunk statuses"
FETCH = "client: fetch chunk outputs (Redis GET)"
WRITE = "client: write outputs"
COMMIT = "client: commit the output file (fsync, rename)"
CLEANUP = "client: delete job data"
OTHER = "client: other"
# Outputs written between chunks while submitting: timed apart, to be taken out of PUBLISH.
COLLECT = "collect outputs between chunks"
# A job that has not finished after this long (plus a second per 1,000 items) is cancelled, so a
# broken worker fails the benchmark instead of hanging it.
JOB_TIMEOUT_S = 120.0
# Job store methods the proxy times, by the phase they belong to.
STORE_PHASES = {
    "create": CREATE,
    "put_chunk": STORE_INPUT,
    "wait_event": WAIT,
    "status": STATUS,
    "statuses": STATUS,
    "statuses_of": STATUS,
    "get": STATUS,
    "output": FETCH,
    "outputs": FETCH,
    "names": FETCH,
    "mark_collected": CLEANUP,
}


@dataclass
class Stopwatch:
    """Seconds spent per named phase."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def timed(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return function(*args, **kwargs)

        return call


class TimedProxy:
    """Delegates every attribute to ``target``, timing the methods named in ``phases``."""

    def __init__(self, target: Any, watch: Stopwatch, phases: dict[str, str]) -> None:
        self._target, self._watch, self._phases = target, watch, phases

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if name in self._phases:
            return self._watch.timed(self._phases[name], attribute)
        return attribute


@dataclass
class TimedSource:
    """An input source whose chunk reads are timed."""

    source: Any
    watch: Stopwatch

    @property
    def total(self) -> int:
        return int(self.source.total)

    @property
    def names(self) -> Sequence[str]:
        return self.source.names  # type: ignore[no-any-return]

    def chunks(self, size: int) -> Iterator[tuple[Sequence[str], np.ndarray]]:
        iterator = iter(self.source.chunks(size))
        while True:
            with self.watch.phase(READ):
                item = next(iterator, None)
            if item is None:
                return
            yield item


def job_timeout_s(items: int) -> float:
    """How long a job of ``items`` may take before the watchdog cancels it."""
    return JOB_TIMEOUT_S + items / 1000.0


@contextmanager
def watchdog(client: Any, jobs: list[str], seconds: float) -> Iterator[None]:
    """Cancel the last job in ``jobs`` if the block has not ended after ``seconds``.

    ``follow`` then ends with ``JobError`` (cancelled) instead of waiting forever.
    """

    def cancel() -> None:
        if jobs:
            client.store.cancel(jobs[-1])

    timer = threading.Timer(seconds, cancel)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@dataclass(frozen=True)
class JobRun:
    """One job's wall time, its phases and what the job store recorded."""

    items: int
    seconds: float
    phases: dict[str, float]
    inference_s: float
    chunks: int
    workers: list[str]
    job: str

    @property
    def images_per_s(self) -> float:
        return self.items / self.seconds


def run_job(
    settings: Settings,
    op: Operation,
    version: ModelVersion,
    input_path: Path,
    output_path: Path,
    chunk_size: int,
) -> JobRun:
    """Queue ``input_path`` as one job, follow it to the end, write ``output_path``."""
    from aeq.client import views
    from aeq.client.client import FollowState, JobClient, Submission
    from aeq.files.inputs import open_images

    watch = Stopwatch()
    started = time.perf_counter()
    with watch.phase(OPEN):
        source = open_images([input_path])
    with watch.phase(CONNECT):
        client = JobClient(settings)
    client.store = TimedProxy(client.store, watch, STORE_PHASES)  # type: ignore[assignment]
    submission = Submission(op, version, TimedSource(source, watch), chunk_size, str(output_path))
    state = FollowState.of(submission)
    jobs: list[str] = []
    with (
        views.open_output(output_path, submission, True) as writer,
        watchdog(client, jobs, job_timeout_s(source.total)),
    ):
        timed_writer = TimedProxy(writer, watch, {"write": WRITE, "commit": COMMIT})
        job = _submit(client, submission, timed_writer, state, watch, jobs.append)
        client.follow(job, timed_writer, state)
        timed_writer.commit()
    record = client.record(job)
    client.finish(job, keep=False)
    seconds = time.perf_counter() - started
    return JobRun(
        items=state.items,
        seconds=seconds,
        phases=_with_derived(watch, seconds),
        inference_s=sum(status.seconds for status in record.statuses.values()),
        chunks=record.spec.chunks,
        workers=sorted({status.worker for status in record.statuses.values()}),
        job=job,
    )


def _submit(
    client: Any,
    submission: Any,
    writer: Any,
    state: Any,
    watch: Stopwatch,
    on_created: Callable[[str], None],
) -> str:
    """``submit_collecting``, as the CLI calls it, with the time left to publishing worked out."""
    from aeq.client.client import submit_collecting

    collecting = Stopwatch()
    timed_client: Any = TimedProxy(client, collecting, {"follow": COLLECT})
    before = dict(watch.seconds)
    started = time.perf_counter()
    job = submit_collecting(timed_client, submission, writer, state, on_created=on_created)
    loop = time.perf_counter() - started
    timed = sum(watch.seconds[p] - before.get(p, 0.0) for p in (READ, CREATE, STORE_INPUT))
    watch.seconds[PUBLISH] += max(0.0, loop - timed - collecting.seconds[COLLECT])
    return job


def _with_derived(watch: Stopwatch, wall_s: float) -> dict[str, float]:
    phases = dict(watch.seconds)
    phases[OTHER] = max(0.0, wall_s - sum(phases.values()))
    return phases


def worker_split(run: JobRun, task_seconds: list[float], processes: int) -> dict[str, float]:
    """Worker time: inference, the rest of each task, and idle capacity (all processes)."""
    busy = sum(task_seconds)
    return {
        "worker: inference (ONNX Runtime + pixel conversion)": run.inference_s,
        "worker: rest of each task (Redis GET/Lua, checks, Celery)": max(
            0.0, busy - run.inference_s
        ),
        "worker: idle (waiting for messages)": max(0.0, run.seconds * processes - busy),
    }
