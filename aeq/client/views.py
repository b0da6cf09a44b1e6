"""How the job commands show things: progress bar, summaries, status, the jobs table.

Kept apart from ``aeq.client.commands`` so the commands read as what they do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from aeq.core.catalog import Operation

if TYPE_CHECKING:  # redis-py and Celery come with these; 'aeq -h' does without
    from aeq.client.client import Submission
    from aeq.files.outputs import CodeWriter, ImageWriter
    from aeq.files.resume import ResumePoint
    from aeq.files.score_files import Scores, ScoreWriter
    from aeq.queue.jobs import JobRecord
    from aeq.queue.workers import WorkerInfo
    from aeq.repository import Calibration

    JobWriter = ImageWriter | CodeWriter | ScoreWriter

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)
# Failed chunks listed by ``aeq status`` before "... and N more".
MAX_LISTED_FAILURES = 10

_VERBS = {
    Operation.DENOISE: "denoised",
    Operation.RECONSTRUCT: "reconstructed",
    Operation.ENCODE: "encoded",
    Operation.DECODE: "decoded",
    Operation.SCORE: "scored",
}


class RateColumn(ProgressColumn):
    """Items per second, the way a user compares runs."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} items/s")


@contextmanager
def progress_bar(
    total: int, op: Operation, label: str | None = None
) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr; yields ``advance(items_done)``."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as progress:
        task = progress.add_task(label or op.value, total=total)

        def advance(done: int) -> None:
            progress.update(task, completed=done)

        yield advance


def open_output(
    output: Path | None,
    submission: Submission,
    overwrite: bool,
    resume: ResumePoint | None = None,
) -> JobWriter:
    """The writer a submission's results go to (images, codes for encode, scores for score:
    those with the version's calibration, and only collected when ``output`` is ``None``;
    images and codes staged at ``resume`` when given)."""
    from aeq.files.score_files import open_score_output

    version = submission.version
    if submission.op is Operation.SCORE:
        calibration = version.calibration()
        return open_score_output(
            output, submission.source.total, version.model, version.version, calibration, overwrite
        )
    if output is None:
        raise ValueError(f"{submission.op.value} needs an output path")
    return open_array_output(output, submission, overwrite, resume)


def open_array_output(
    output: Path,
    submission: Submission,
    overwrite: bool,
    resume: ResumePoint | None = None,
    resuming: bool = False,
) -> ImageWriter | CodeWriter:
    """The images' (codes' for encode) writer, staged at ``resume`` when given; ``resuming``:
    going on from what the resume point holds."""
    from aeq.files.outputs import open_code_output, open_image_output

    total = submission.source.total
    version = submission.version
    if submission.op is Operation.ENCODE:
        code_dim, model, number = version.code_dim, version.model, version.version
        return open_code_output(output, total, code_dim, model, number, overwrite, resume, resuming)
    return open_image_output(output, total, overwrite, resume, resuming)


def open_job_output(
    output: Path,
    record: JobRecord,
    overwrite: bool,
    total: int | None = None,
    calibration: Calibration | None = None,
) -> JobWriter:
    """The writer a stored job's results go to (``total`` items, default all of them; a score
    job's with ``calibration``)."""
    from aeq.files.outputs import open_code_output, open_image_output
    from aeq.files.score_files import open_score_output

    spec = record.spec
    count = spec.total if total is None else total
    if spec.op is Operation.SCORE:
        return open_score_output(output, count, spec.model, spec.version, calibration, overwrite)
    if spec.op is Operation.ENCODE:
        return open_code_output(output, count, spec.code_dim, spec.model, spec.version, overwrite)
    return open_image_output(output, count, overwrite)


def print_summary(
    submission: Submission,
    count: int,
    output: Path | None,
    providers: Sequence[str],
    started: float,
    job: str | None = None,
) -> None:
    """One line: what was done, with what, how fast, where it went."""
    seconds = time.perf_counter() - started
    where = f"job {job}, " if job else ""
    stderr.print(
        f"{_VERBS[submission.op]} {count} items with {submission.version.label} "
        f"({where}{', '.join(providers) or 'no provider reported'}) in {seconds:.1f} s "
        f"({count / max(seconds, 1e-9):,.0f} items/s)" + ("" if output is None else f" -> {output}")
    )


def print_scores(scores: Scores, worst: int = 3, hint_calibration: bool = True) -> None:
    """What a score job found: the worst items, and how many pass each calibrated percentile."""
    from aeq.core.catalog import SCORE_METRICS

    for item in scores.worst(worst):
        values = ", ".join(
            f"{metric} {scores.scores[item, column]:.4g}"
            for column, metric in enumerate(SCORE_METRICS)
        )
        stderr.print(f"rank {scores.rank[item]}: {scores.names[item]} ({values})", markup=False)
    calibration = scores.calibration
    if calibration is None:
        if not hint_calibration:
            return
        stderr.print(
            f"{scores.label} is not calibrated: 'aeq score --calibrate CLEAN...' records what "
            "known-good items score, then jobs count the items past its percentiles"
        )
        return
    counts = ", ".join(
        f"{entry.items} over p{entry.percentile:g} ({entry.threshold:.4g})"
        for entry in scores.exceeding()
    )
    stderr.print(
        f"of {len(scores.scores)} items, by {calibration.metric} against {calibration.items} "
        f"known-good ones: {counts}"
    )


def print_collected(
    record: JobRecord, output: Path, count: int, started: float, keep: bool
) -> None:
    """One line after ``aeq results``."""
    seconds = time.perf_counter() - started
    kept = "kept in Redis" if keep else "deleted from Redis"
    stderr.print(
        f"wrote {count} items of job {record.id} ({record.label}) to {output} in {seconds:.1f} s; "
        f"job data {kept}"
    )


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp).isoformat(timespec="seconds")


def status_dict(record: JobRecord, live: Sequence[WorkerInfo] = ()) -> dict[str, Any]:
    """A job's status as plain data (``aeq status --json``, and ``jobs`` and ``results``).

    ``workers`` are those that ran the job's chunks; ``live_workers`` (``live``, which the caller
    reads from Redis: ``aeq.queue.workers.live_workers``) those that consume the queue now.

    ``seconds`` runs from submission to the end (or to now while the job is unfinished): the
    time a user waits, queueing included, not only the span of the chunks' runs (which for a
    one-chunk job read "0.00 s").
    """
    spec = record.spec
    end = record.finished_at or time.time()
    elapsed = end - record.created_at
    return {
        "job": record.id,
        "state": record.state.value,
        "op": spec.op.value,
        "model": spec.model,
        "version": spec.version,
        "items": {"total": spec.total, "done": record.items_done},
        "chunks": {
            "total": spec.chunks,
            "queued": record.queued,
            "done": record.done,
            "failed": record.failed,
            "skipped": record.skipped,
            "chunk_size": spec.chunk_size,
        },
        "providers": record.providers(),
        "workers": sorted({s.worker for s in record.statuses.values() if s.worker}),
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "collected_at": _iso(record.collected_at),
        "seconds": round(elapsed, 3),
        "inference_seconds": round(sum(s.seconds for s in record.statuses.values()), 3),
        "failures": [{"chunk": s.chunk, "reason": s.reason} for s in record.failures()],
        "live_workers": [worker.to_dict() for worker in live],
    }


def live_workers_line(live: Sequence[WorkerInfo]) -> str:
    """``2 (a@host, b@host)``, or what it means that there are none."""
    if not live:
        return "none: no worker consumes the queue ('aeq worker' starts one)"
    return f"{len(live)} ({', '.join(worker.name for worker in live)})"


def print_status(record: JobRecord, live: Sequence[WorkerInfo] = ()) -> None:
    """``aeq status`` for people."""
    data = status_dict(record)
    chunks = data["chunks"]
    rows = [
        ("job", record.id),
        ("state", data["state"]),
        ("operation", f"{data['op']} with {record.label}"),
        ("items", f"{data['items']['done']} / {data['items']['total']} done"),
        (
            "chunks",
            f"{chunks['done']} done, {chunks['failed']} failed, {chunks['skipped']} skipped "
            f"of {chunks['total']} ({chunks['chunk_size']} items each)",
        ),
        ("providers", ", ".join(data["providers"]) or "-"),
        ("workers", ", ".join(data["workers"]) or "-"),
        ("live", live_workers_line(live)),
        ("created", data["created_at"]),
        ("started", data["started_at"] or "-"),
        ("finished", data["finished_at"] or "-"),
        ("collected", data["collected_at"] or "-"),
        ("elapsed", f"{data['seconds']:.2f} s"),
        ("inference", f"{data['inference_seconds']:.2f} s in workers"),
    ]
    for name, value in rows:
        stdout.print(f"{name:>10}  {value}")
    failures = data["failures"]
    for failure in failures[:MAX_LISTED_FAILURES]:
        stdout.print(f"{'failed':>10}  chunk {failure['chunk']}: {failure['reason']}")
    if len(failures) > MAX_LISTED_FAILURES:
        stdout.print(f"{'':>10}  ... and {len(failures) - MAX_LISTED_FAILURES} more (--json)")


def print_jobs(records: list[JobRecord], live: Sequence[WorkerInfo] = ()) -> None:
    """``aeq jobs``: a table, newest first, then the live workers."""
    if not records:
        stderr.print("no jobs in the result store")
        stdout.print(f"live workers: {live_workers_line(live)}", markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("job", "state", "op", "model", "items", "created"):
        table.add_column(column)
    for record in records:
        table.add_row(
            record.id,
            record.state.value,
            record.spec.op.value,
            record.label,
            f"{record.items_done}/{record.spec.total}",
            _iso(record.created_at) or "",
        )
    stdout.print(table)
    stdout.print(f"live workers: {live_workers_line(live)}", markup=False)
