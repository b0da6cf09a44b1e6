"""The job commands: ``denoise``, ``reconstruct``, ``encode``, ``decode``, ``score``, ``status``,
``results``, ``cancel``, ``jobs`` and ``worker``.

TensorFlow-free. ONNX Runtime and Celery are imported inside the commands that use them, so
``aeq --help`` stays quick. With ``AEQ_BROKER_URL`` unset the five verbs run in this process
(local mode); with it set they queue the job to workers through Redis and, unless ``--no-wait``,
follow it to the end, writing outputs as chunks finish.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aeq.client import views
from aeq.client.signals import terminate_as_interrupt
from aeq.client.views import stderr, stdout
from aeq.core.catalog import Operation
from aeq.core.errors import UsageError
from aeq.core.options import JsonOption, RepositoryOption
from aeq.core.settings import Settings, load_settings
from aeq.queue.protocol import MAX_CHUNK_SIZE
from aeq.repository import Calibration, ModelRepository, ModelVersion

if TYPE_CHECKING:  # redis-py and Celery come with these; 'aeq -h' does without
    from aeq.client.client import ChunkSource, FollowState, JobClient, Submission
    from aeq.client.views import JobWriter
    from aeq.files.score_files import Scores
    from aeq.queue.jobs import JobRecord
    from aeq.queue.workers import WorkerInfo

InputsArgument = Annotated[
    list[Path],
    typer.Argument(
        help="Image files (PNG/JPEG/BMP), folders, .npy/.npz arrays or MNIST IDX files.",
        show_default=False,
    ),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", help="A folder of PNGs, or a .npy/.npz file.", show_default=False
    ),
]
ModelOption = Annotated[str | None, typer.Option(help="Model name (default: per operation).")]
VersionOption = Annotated[int | None, typer.Option(min=1, help="Model version (default: latest).")]
ChunkOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=MAX_CHUNK_SIZE,
        help="Items per chunk, one task each (default: about 2 MiB of input, 2048 images).",
        show_default=False,
    ),
]
ResizeOption = Annotated[bool, typer.Option("--resize", help="Resize images that are not 28x28.")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
NoWaitOption = Annotated[
    bool, typer.Option("--no-wait", help="Print the job id and return; see 'aeq results'.")
]
JobArgument = Annotated[str, typer.Argument(help="The job id 'aeq jobs' lists.")]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Go on with the unfinished job that last wrote to -o (its client was killed).",
    ),
]


@dataclass(frozen=True)
class JobOptions:
    """What every job command takes beside its inputs and model."""

    output: Path | None
    chunk_size: int | None  # None: sized in bytes (aeq.client.submissions.chunk_items)
    overwrite: bool
    no_wait: bool
    # Run without an output file (score --calibrate): the writer only collects.
    collect_only: bool = False
    # Go on with the job whose resume point is beside the output (aeq.files.resume).
    resume: bool = False


def register(app: typer.Typer) -> None:
    """Add the job commands to the aeq app."""
    app.command("denoise")(denoise)
    app.command("reconstruct")(reconstruct)
    app.command("encode")(encode)
    app.command("decode")(decode)
    app.command("score")(score)
    app.command("status")(status)
    app.command("results")(results)
    app.command("cancel")(cancel)
    app.command("jobs")(jobs)
    app.command("dead-letters")(dead_letters)


def denoise(
    inputs: InputsArgument,
    output: OutputOption = None,
    model: ModelOption = None,
    version: VersionOption = None,
    repository: RepositoryOption = None,
    chunk_size: ChunkOption = None,
    resize: ResizeOption = False,
    overwrite: OverwriteOption = False,
    no_wait: NoWaitOption = False,
    resume: ResumeOption = False,
) -> None:
    """Denoise images with the denoising autoencoder (or --model)."""
    options = JobOptions(output, chunk_size, overwrite, no_wait, resume=resume)
    _image_job(Operation.DENOISE, inputs, model, version, repository, resize, options)


def reconstruct(
    inputs: InputsArgument,
    output: OutputOption = None,
    model: ModelOption = None,
    version: VersionOption = None,
    repository: RepositoryOption = None,
    chunk_size: ChunkOption = None,
    resize: ResizeOption = False,
    overwrite: OverwriteOption = False,
    no_wait: NoWaitOption = False,
    resume: ResumeOption = False,
) -> None:
    """Reconstruct images through an autoencoder (default: conv)."""
    options = JobOptions(output, chunk_size, overwrite, no_wait, resume=resume)
    _image_job(Operation.RECONSTRUCT, inputs, model, version, repository, resize, options)


def encode(
    inputs: InputsArgument,
    output: OutputOption = None,
    model: ModelOption = None,
    version: VersionOption = None,
    repository: RepositoryOption = None,
    chunk_size: ChunkOption = None,
    resize: ResizeOption = False,
    overwrite: OverwriteOption = False,
    no_wait: NoWaitOption = False,
    resume: ResumeOption = False,
) -> None:
    """Encode images to codes (default model: multilayer); writes CODES.npy/.npz with names."""
    options = JobOptions(output, chunk_size, overwrite, no_wait, resume=resume)
    _image_job(Operation.ENCODE, inputs, model, version, repository, resize, options)


def decode(
    codes: Annotated[Path, typer.Argument(help="A codes file written by 'aeq encode'.")],
    output: OutputOption = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (default: the one that made the codes).")
    ] = None,
    version: Annotated[
        int | None, typer.Option(min=1, help="Model version (default: the codes' version).")
    ] = None,
    repository: RepositoryOption = None,
    chunk_size: ChunkOption = None,
    overwrite: OverwriteOption = False,
    no_wait: NoWaitOption = False,
    resume: ResumeOption = False,
) -> None:
    """Decode codes back to images with the decoder of the model that made them."""
    from aeq.files.inputs import open_codes

    settings = load_settings().with_overrides(model_repository=repository)
    source = open_codes(codes)
    chosen = model or source.model
    if not chosen:
        raise UsageError(f"{codes} does not say which model made it; pass --model")
    if version is None and chosen == source.model:
        version = source.version
    resolved = _resolve(settings, chosen, version, Operation.DECODE)
    if resolved.code_dim != source.code_dim:
        raise UsageError(
            f"{codes} holds {source.code_dim}-d codes, {resolved.label} decodes "
            f"{resolved.code_dim}-d codes"
        )
    options = JobOptions(output, chunk_size, overwrite, no_wait, resume=resume)
    _run(settings, Operation.DECODE, resolved, source, options)


def score(
    inputs: InputsArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="SCORES.csv, .json or .npy: per item mse, psnr, ssim, rank, name, model@version.",
            show_default=False,
        ),
    ] = None,
    model: ModelOption = None,
    version: VersionOption = None,
    repository: RepositoryOption = None,
    chunk_size: ChunkOption = None,
    resize: ResizeOption = False,
    overwrite: OverwriteOption = False,
    no_wait: NoWaitOption = False,
    top: Annotated[
        int,
        typer.Option(
            min=0,
            metavar="K",
            help="Also draw the K worst items (input | reconstruction | difference) into "
            "SCORES-top.png.",
        ),
    ] = 0,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="The inputs are known-good: record their score percentiles with the model "
            "version, so later jobs count the items past them.",
        ),
    ] = False,
) -> None:
    """Score how badly an autoencoder (default: conv) reconstructs each item; rank them."""
    if no_wait and (top or calibrate):
        raise UsageError("--top and --calibrate need the scores: leave out --no-wait")
    if top and output is None:
        raise UsageError("--top draws beside the scores: give them with -o/--output")
    if output is None and not calibrate and not no_wait:
        raise UsageError("give the output with -o/--output (a .csv, .json or .npy file)")
    if output is not None:
        from aeq.files.score_files import check_score_path

        check_score_path(output)
    settings, resolved, source = _image_inputs(
        Operation.SCORE, inputs, model, version, repository, resize
    )
    options = JobOptions(output, chunk_size, overwrite, no_wait, collect_only=calibrate)
    writer = _run(settings, Operation.SCORE, resolved, source, options)
    if writer is None:
        return
    scores: Scores | None = getattr(writer, "scores", None)
    if scores is None:
        raise UsageError("score job ended without scores")  # pragma: no cover - a fault in aeq
    views.print_scores(scores, hint_calibration=not calibrate)
    if calibrate:
        _calibrate(settings, resolved, scores, inputs)
    if top:
        from aeq.client.scoring import draw_worst, top_picture_path

        assert output is not None
        path = draw_worst(settings, resolved, source, scores, top, top_picture_path(output))
        stderr.print(f"the {min(top, len(scores.scores))} worst items: {path}")


def _calibrate(
    settings: Settings, version: ModelVersion, scores: Scores, inputs: list[Path]
) -> None:
    from aeq.client.scoring import record_calibration

    source = " ".join(str(path) for path in inputs)
    calibration = record_calibration(settings, version, scores, source)
    levels = ", ".join(f"p{p:g} {value:.4g}" for p, value in calibration.percentiles)
    stderr.print(
        f"calibrated {version.label} on {calibration.items} known-good items "
        f"({calibration.metric}: {levels})"
    )


def _image_job(
    op: Operation,
    inputs: list[Path],
    model: str | None,
    version: int | None,
    repository: Path | None,
    resize: bool,
    options: JobOptions,
) -> None:
    settings, resolved, source = _image_inputs(op, inputs, model, version, repository, resize)
    _run(settings, op, resolved, source, options)


def _image_inputs(
    op: Operation,
    inputs: list[Path],
    model: str | None,
    version: int | None,
    repository: Path | None,
    resize: bool,
) -> tuple[Settings, ModelVersion, ChunkSource]:
    from aeq.files.inputs import open_images

    settings = load_settings().with_overrides(model_repository=repository)
    resolved = _resolve(settings, model or op.default_model or "", version, op)
    source = open_images(inputs, resize=resize)
    if source.skipped:
        stderr.print(
            f"skipped {len(source.skipped)} file(s) that are not images or arrays "
            f"(first: {source.skipped[0]})"
        )
    return settings, resolved, source


def _resolve(settings: Settings, model: str, version: int | None, op: Operation) -> ModelVersion:
    from aeq.client.submissions import resolve

    return resolve(settings, model, version, op)


def _run(
    settings: Settings,
    op: Operation,
    version: ModelVersion,
    source: ChunkSource,
    options: JobOptions,
) -> JobWriter | None:
    """Run the job to its end and return its committed writer; ``None`` with ``--no-wait``."""
    from aeq.client.client import Submission
    from aeq.client.submissions import chunk_items

    output, overwrite = options.output, options.overwrite
    if source.total == 0:
        raise UsageError("the inputs hold no images")
    remembered = str(output.resolve()) if output is not None else ""
    # A client waiting with -o streams the outputs out of Redis (aeq.files.resume). Scores are a
    # few bytes an item: they stay in Redis until collected, as a --no-wait job's outputs do.
    waits = not options.no_wait and bool(settings.broker_url)
    streamed = waits and output is not None and op is not Operation.SCORE
    chunk_size = chunk_items(options.chunk_size, op, version)
    submission = Submission(op, version, source, chunk_size, output=remembered, streamed=streamed)
    _check_resume_options(options, settings)
    with terminate_as_interrupt():
        if options.no_wait:
            if not settings.broker_url:
                raise UsageError("--no-wait needs a broker: set AEQ_BROKER_URL")
            _submit_only(settings, submission, output, overwrite)
            return None
        if output is None and not options.collect_only:
            raise UsageError("give the output with -o/--output (a folder, or a .npy/.npz file)")
        if not settings.broker_url:
            return _run_local(settings, submission, output, overwrite)
        if options.resume:
            assert output is not None
            return _resume_and_follow(settings, submission, output)
        return _submit_and_follow(settings, submission, output, overwrite)


def _check_resume_options(options: JobOptions, settings: Settings) -> None:
    if not options.resume:
        return
    if options.no_wait or options.overwrite:
        flag = "--no-wait" if options.no_wait else "--overwrite"
        raise UsageError(f"--resume goes on with a job; {flag} does not go with it")
    if not settings.broker_url:
        raise UsageError("--resume needs a broker: set AEQ_BROKER_URL (local mode keeps no job)")
    if options.output is None:
        raise UsageError("--resume needs the -o/--output the job was writing")


def _run_local(
    settings: Settings, submission: Submission, output: Path | None, overwrite: bool
) -> JobWriter:
    from aeq.client.local import LOCAL_MODE_NOTICE, run_local
    from worker.inference import Engine

    stderr.print(LOCAL_MODE_NOTICE)
    engine = Engine(settings)
    started = time.perf_counter()
    with views.open_output(output, submission, overwrite) as writer:
        with views.progress_bar(submission.source.total, submission.op) as advance:
            count = run_local(submission, writer, engine, advance)
        writer.commit()
    views.print_summary(submission, count, output, engine.providers[:1], started)
    return writer


def _submit_only(
    settings: Settings, submission: Submission, output: Path | None, overwrite: bool
) -> None:
    from aeq.client.client import JobClient
    from aeq.core.errors import OutputExistsError

    if output is not None and output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass --overwrite to replace it")
    client = JobClient(settings, notify=stderr.print)
    with views.progress_bar(submission.source.total, submission.op, "queued") as advance:
        job = client.submit(submission, on_queued=advance, on_created=_announce)
    stdout.print(job)
    client.liveness.check(job)
    hint = " -o OUT" if output is None else ""  # a given -o is remembered as the default
    stderr.print(
        f"queued job {job}: {submission.source.total} items in "
        f"{submission.spec().chunks} chunks; 'aeq status {job}', 'aeq results {job}{hint}'"
    )


def _announce(job: str) -> None:
    """Name the job before its first chunk is queued: whatever happens next, it can be found."""
    stderr.print(f"job {job}: queuing")


def _submit_and_follow(
    settings: Settings, submission: Submission, output: Path | None, overwrite: bool
) -> JobWriter:
    from aeq.client.client import FollowState, JobClient, RedisGoneError, submit_collecting
    from aeq.files.resume import ResumeJob, ResumePoint

    point = ResumePoint(output) if submission.streamed and output is not None else None
    if point is not None and point.exists() and not overwrite:
        raise UsageError(
            f"{output} has an unfinished job ({point.job().job}): add --resume to go on with "
            "it, or --overwrite to start again"
        )
    client = JobClient(settings, notify=stderr.print)
    started = time.perf_counter()
    state = FollowState.of(submission)

    def created(job: str) -> None:
        _announce(job)
        if point is not None:
            spec = submission.spec()
            point.record_job(
                ResumeJob(job, spec.op.value, spec.model, spec.version, spec.total, spec.chunk_size)
            )

    with views.open_output(output, submission, overwrite, point) as writer:
        with views.progress_bar(submission.source.total, submission.op) as advance:
            try:
                job = submit_collecting(client, submission, writer, state, advance, created)
            except KeyboardInterrupt:
                stderr.print("interrupted while queuing: the job was cancelled")
                raise
            except RedisGoneError:  # the job lives on in Redis, incomplete: resumable
                _keep_if_resumable(writer, state, submission, output)
                raise
            _follow_to_the_end(client, job, writer, state, advance, submission, output)
        writer.commit()
    _finish(client, job, submission, state, output, started)
    return writer


def _finish(
    client: JobClient,
    job: str,
    submission: Submission,
    state: FollowState,
    output: Path | None,
    started: float,
) -> None:
    """Once the output is in place: delete the job's data from Redis and say what was done."""
    client.finish(job, keep=False)
    record = client.record(job)
    views.print_summary(submission, state.items, output, record.providers(), started, job)


def _resume_and_follow(settings: Settings, submission: Submission, output: Path) -> JobWriter:
    """Go on with the job whose resume point is beside ``output`` (``--resume``)."""
    from aeq.client.client import FollowState, JobClient
    from aeq.core.errors import JobError, JobNotFoundError
    from aeq.files.resume import ResumePoint

    point = ResumePoint(output)
    noted = point.job()
    spec = submission.spec()
    given = (spec.op.value, spec.model, spec.version, spec.total)
    if given != (noted.op, noted.model, noted.version, noted.total):
        raise UsageError(
            f"the unfinished job at {output} ({noted.job}) is {noted.op} of {noted.total} items "
            f"with {noted.model}@{noted.version}, not {spec.op.value} of {spec.total} with "
            f"{spec.model}@{spec.version}: resume it with the command that started it"
        )
    client = JobClient(settings, notify=stderr.print)
    try:
        record = client.record(noted.job)
    except JobNotFoundError:
        raise JobError(
            f"job {noted.job} is no longer in Redis (expired?); start again with --overwrite"
        ) from None
    if record.cancelled:
        raise JobError(f"job {noted.job} was cancelled; start again with --overwrite")
    submission = replace(submission, chunk_size=noted.chunk_size)
    started = time.perf_counter()
    state = FollowState.of(submission)
    with views.open_array_output(output, submission, False, point, resuming=True) as writer:
        state.written.update(writer.stored_chunks())
        state.items = writer.items_written
        stderr.print(
            f"job {noted.job}: resuming, {state.items:,} of {noted.total:,} items already stored"
        )
        with views.progress_bar(submission.source.total, submission.op) as advance:
            advance(state.items)
            try:
                client.resubmit(noted.job, submission, writer, state, advance)
            except BaseException:  # nothing here cancels the job: what is stored stays
                _keep_if_resumable(writer, state, submission, output)
                raise
            _follow_to_the_end(client, noted.job, writer, state, advance, submission, output)
        writer.commit()
    _finish(client, noted.job, submission, state, output, started)
    return writer


def _follow_to_the_end(
    client: JobClient,
    job: str,
    writer: JobWriter,
    state: FollowState,
    advance: Callable[[int], None],
    submission: Submission,
    output: Path | None,
) -> None:
    try:
        client.follow(job, writer, state, advance)
    except KeyboardInterrupt:
        if _keep_if_resumable(writer, state, submission, output):
            raise
        stderr.print(
            f"job {job} keeps running; collect it with 'aeq results {job} -o {output or 'OUT'}'"
        )
        raise
    except BaseException:
        _keep_if_resumable(writer, state, submission, output)
        raise


def _keep_if_resumable(
    writer: JobWriter, state: FollowState, submission: Submission, output: Path | None
) -> bool:
    """For a streamed job that may still finish (not cancelled, no chunk failed), keep what the
    writer stored and say how to go on; ``False`` (the writer aborts as usual) otherwise."""
    if not submission.streamed or state.cancelled or state.failed:
        return False
    suspend = getattr(writer, "suspend", None)
    if suspend is None:
        return False
    suspend()
    stderr.print(
        f"{state.items:,} of {submission.source.total:,} items are stored; the same command "
        f"with --resume goes on with the job where it stopped (-o {output})"
    )
    return True


def status(job: JobArgument, as_json: JsonOption = False) -> None:
    """Show a job's state, chunk counts, model, provider, timings and the live workers."""
    client = _client()
    record = client.record(job)
    live = _live_workers(client)
    if as_json:
        stdout.print_json(json.dumps(views.status_dict(record, live)))
    else:
        views.print_status(record, live)


def _live_workers(client: JobClient) -> list[WorkerInfo]:
    from aeq.queue.protocol import QUEUE
    from aeq.queue.workers import live_workers

    return live_workers(client.store.client, QUEUE)


def results(
    job: JobArgument,
    output: OutputOption = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the job's data in Redis after writing.")
    ] = False,
    overwrite: OverwriteOption = False,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial",
            help="Write the items of the chunks that finished (of a failed, cancelled or "
            "incomplete job), once no more will.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write a job's outputs (waiting for it to finish), then delete its data unless --keep."""
    from aeq.client.client import FollowState, incomplete_reason, streamed_reason
    from aeq.core.errors import JobError
    from aeq.queue.jobs import JobState

    client = _client()
    record = client.record(job)
    target = output or (Path(record.spec.output) if record.spec.output else None)
    if target is None:
        raise UsageError("give the output with -o/--output")
    if client.store.is_deleted(job):
        raise JobError(f"the results of job {job} were collected and deleted (use --keep to keep)")
    if record.spec.streamed:  # its client took (and deleted) the outputs as they came
        raise JobError(streamed_reason(record))
    if record.state is JobState.INCOMPLETE and not partial:
        raise JobError(incomplete_reason(record))
    with terminate_as_interrupt():
        if partial:
            _write_partial(client, record, target, overwrite, keep)
            if as_json:
                _print_results_json(client, job, target)
            return
        started = time.perf_counter()
        state = FollowState()
        calibration = _calibration_of(client, record)
        with views.open_job_output(target, record, overwrite, None, calibration) as writer:
            with views.progress_bar(record.spec.total, record.spec.op) as advance:
                client.follow(job, writer, state, advance)
            writer.commit()
    client.finish(job, keep)
    views.print_collected(client.record(job), target, state.items, started, keep)
    if as_json:
        _print_results_json(client, job, target)


def _calibration_of(client: JobClient, record: JobRecord) -> Calibration | None:
    """A score job's model calibration, where this machine sees the repository (else none:
    the scores are written all the same)."""
    from aeq.core.errors import ModelError, RepositoryError

    if record.spec.op is not Operation.SCORE:
        return None
    repository = ModelRepository(client.settings.model_repository)
    try:
        return repository.get(record.spec.model, record.spec.version).calibration()
    except (ModelError, RepositoryError):
        return None


def _print_results_json(client: JobClient, job: str, output: Path) -> None:
    """``aeq results --json``: the job's status, as ``aeq status --json`` shows it, and where its
    outputs went."""
    live = _live_workers(client)
    data = {**views.status_dict(client.record(job), live), "output": str(output)}
    stdout.print_json(json.dumps(data))


def _write_partial(
    client: JobClient, record: JobRecord, target: Path, overwrite: bool, keep: bool
) -> None:
    from aeq.core.errors import JobError

    started = time.perf_counter()
    job = record.id
    with views.progress_bar(record.spec.total, record.spec.op, "settling") as advance:
        record = client.settled(job, advance)
    if not record.items_done:
        raise JobError(f"no chunk of job {job} finished ({record.state.value}); nothing to write")
    calibration = _calibration_of(client, record)
    with views.open_job_output(target, record, overwrite, record.items_done, calibration) as writer:
        count = client.write_done_chunks(record, writer)
        writer.commit()
    client.finish(job, keep)
    views.print_collected(client.record(job), target, count, started, keep)
    stderr.print(
        f"partial: {count:,} of {record.spec.total:,} items; chunks done {record.done}, failed "
        f"{record.failed}, skipped {record.skipped}, "
        f"never queued {record.spec.chunks - record.queued}"
    )


def cancel(job: JobArgument) -> None:
    """Cancel a queued or running job: its remaining chunks are skipped."""
    skipped = _client().cancel(job)
    stderr.print(f"cancelled job {job}; {skipped} queued chunk(s) will be skipped")


def jobs(
    limit: Annotated[int, typer.Option(min=1, help="How many jobs to list.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent jobs, newest first, and the live workers."""
    client = _client()
    store = client.store
    records: list[JobRecord] = store.recent(limit)
    live = _live_workers(client)
    if as_json:
        # The list is read without chunk statuses (the table needs none); each job's JSON is the
        # one 'aeq status --json' prints, providers, workers, live workers and inference time.
        full = [replace(record, statuses=store.statuses(record.id)) for record in records]
        stdout.print_json(json.dumps([views.status_dict(record, live) for record in full]))
    else:
        views.print_jobs(records, live)


def _client() -> JobClient:
    from aeq.client.client import JobClient

    settings = load_settings()
    if not settings.broker_url:
        raise UsageError(
            "no broker configured: set AEQ_BROKER_URL (local-mode jobs leave no record)"
        )
    return JobClient(settings, notify=stderr.print)


def dead_letters(
    limit: Annotated[int, typer.Option(min=1, help="How many to show, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
    clear: Annotated[bool, typer.Option("--clear", help="Delete them all instead.")] = False,
) -> None:
    """Show the messages workers could not use (acknowledged and kept in Redis), newest first."""
    from aeq.queue.dead_letters import DeadLetters

    letters = DeadLetters(_client().store.client)
    if clear:
        stderr.print(f"deleted {letters.clear()} dead letter(s)")
        return
    shown = letters.recent(limit)
    if as_json:
        stdout.print_json(json.dumps([letter.to_dict() for letter in shown]))
        return
    stderr.print(f"{letters.count()} dead letter(s) kept, newest first")
    for letter in shown:
        entry = letter.to_dict()
        task = f"{letter.headers.get('task', '-')}[{letter.headers.get('id', '-')}]"
        body = f"{letter.content_type or '-'}, {letter.body_bytes} bytes: {letter.body[:60]!r}"
        stdout.print(f"{entry['time']}  {letter.worker}  {task}", markup=False)
        stdout.print(f"  {letter.reason}\n  {body}", markup=False)
