"""aeq's Python API: the CLI's five verbs on NumPy arrays or files, returning NumPy arrays.

    >>> import aeq
    >>> clean = aeq.denoise(noisy)                 # uint8 (N, 28, 28), run in this process
    >>> codes = aeq.encode("digits/")              # float32 (N, 64), from a folder of PNGs
    >>> images = aeq.decode(codes, model="multilayer")
    >>> scores = aeq.score(images)                 # per-item mse, psnr, ssim and rank

Inputs get exactly the CLI's checks (``aeq.files``): a float array outside [0, 1], NaN or inf, a
wrong shape or dtype raise ``InputError`` naming the first bad item, never a black image. Jobs run
in this process with ONNX Runtime (local mode) unless a broker is given (``broker_url=``) or set
(``AEQ_BROKER_URL``); then they are queued to aeq's workers through Redis and collected as they
finish. ``Client`` queues without waiting. docs/PYTHON.md shows it all in notebook order.

Importing this module (and ``aeq``) stays cheap and TensorFlow-free: ONNX Runtime, Pillow, redis
and Celery are imported by the calls that use them.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from aeq.client.remote import Client, Job, JobStatus
from aeq.core.catalog import IMAGE_SIDE, Operation
from aeq.core.errors import UsageError
from aeq.core.settings import Settings, load_settings
from aeq.queue.protocol import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from aeq.client.client import Submission
    from aeq.client.submissions import Inputs, PathLike
    from aeq.files.memory import ArrayWriter
    from aeq.files.score_files import Scores
    from aeq.model_summary import ModelSummary
    from worker.inference import Engine

__all__ = [
    "Client",
    "Images",
    "Job",
    "JobStatus",
    "decode",
    "denoise",
    "encode",
    "models",
    "read_images",
    "reconstruct",
    "score",
]


class Images(NamedTuple):
    """Images read from files, with the name each came from.

    Attributes:
        array: uint8 ``(N, 28, 28)``, in the order the files were read.
        names: one name per image, the names the CLI gives output files (``digits/7/a.png`` ->
            ``digits_7_a``; the items of an array file ``<stem>_00000`` ...).
    """

    array: np.ndarray
    names: list[str]


def denoise(
    images: Inputs,
    model: str | None = None,
    version: int | None = None,
    *,
    broker_url: str | None = None,
    repository: PathLike | None = None,
    chunk_size: int | None = None,
    resize: bool = False,
) -> np.ndarray:
    """Denoise images with the denoising autoencoder (or ``model``).

    Args:
        images: a NumPy array of N images (uint8 0-255 or float 0-1; N x 28 x 28, N x 784,
            N x 28 x 28 x 1 or N x 1 x 28 x 28), or a path, or a list of paths: image files
            (PNG, JPEG, BMP), folders of them (read recursively, in sorted order), ``.npy``/
            ``.npz`` arrays, MNIST IDX files.
        model: the model to run (default ``denoising``).
        version: the model version (default: the latest published).
        broker_url: queue the job to workers through this Redis (default ``AEQ_BROKER_URL``;
            ``""`` runs in this process even where that is set).
        repository: the model repository (default ``AEQ_MODEL_REPOSITORY`` or
            ``./model_repository``).
        chunk_size: items per chunk (one task each when queued), 1 to 4096 (default: about
            2 MiB of input, 2048 images or 4096 codes).
        resize: resize images that are not 28 x 28 instead of refusing them.

    Returns:
        uint8 ``(N, 28, 28)``, in input order (for files: the order ``read_images`` lists).

    Raises:
        InputError: an input is unusable; the message names it, and the first bad item.
        ModelNotFoundError: unknown model or version, or nothing published.
        UsageError: a bad chunk size.
        JobError: a queued job failed or was cancelled.
        BrokerError: the broker cannot be reached.
    """
    return _run_images(
        Operation.DENOISE, images, model, version, broker_url, repository, chunk_size, resize
    )


def reconstruct(
    images: Inputs,
    model: str | None = None,
    version: int | None = None,
    *,
    broker_url: str | None = None,
    repository: PathLike | None = None,
    chunk_size: int | None = None,
    resize: bool = False,
) -> np.ndarray:
    """Reconstruct images through an autoencoder (default ``conv``).

    Arguments, result and errors as ``denoise``.
    """
    return _run_images(
        Operation.RECONSTRUCT, images, model, version, broker_url, repository, chunk_size, resize
    )


def encode(
    images: Inputs,
    model: str | None = None,
    version: int | None = None,
    *,
    broker_url: str | None = None,
    repository: PathLike | None = None,
    chunk_size: int | None = None,
    resize: bool = False,
) -> np.ndarray:
    """Encode images to codes with a model's encoder (default ``multilayer``).

    Arguments and errors as ``denoise``.

    Returns:
        float32 ``(N, code_dim)``, in input order.
    """
    return _run_images(
        Operation.ENCODE, images, model, version, broker_url, repository, chunk_size, resize
    )


def decode(
    codes: Inputs,
    model: str | None = None,
    version: int | None = None,
    *,
    broker_url: str | None = None,
    repository: PathLike | None = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Decode codes back to images with the decoder of the model that made them.

    Args:
        codes: a float array ``(N, code_dim)`` (finite), or the path of a codes file
            ``aeq encode`` wrote (``.npy`` with its ``.npy.json``, or ``.npz``).
        model: the model; required for an array (an array does not say which model made it),
            else the one the file names.
        version: the model version (default: the file's, else the latest).
        broker_url: as ``denoise``.
        repository: as ``denoise``.
        chunk_size: as ``denoise``.

    Returns:
        uint8 ``(N, 28, 28)``, in input order.

    Raises:
        InputError: the codes are unusable (not 2-D float, NaN/inf, a bad file).
        UsageError: no model for an array, or codes of a length the model does not decode.
        ModelNotFoundError, JobError, BrokerError: as ``denoise``.
    """
    from aeq.client.submissions import decode_submission

    settings = _settings(broker_url, repository)
    return _run(settings, decode_submission(settings, codes, model, version, chunk_size))


def score(
    images: Inputs,
    model: str | None = None,
    version: int | None = None,
    *,
    calibrate: bool = False,
    broker_url: str | None = None,
    repository: PathLike | None = None,
    chunk_size: int | None = None,
    resize: bool = False,
) -> Scores:
    """Score how badly an autoencoder (default ``conv``) reconstructs each image, and rank them.

    The scores are computed where the model runs (a worker, or this process); only they come
    back. Each is measured against the image as given (for the denoising model: the noisy input).

    Args:
        images: as ``denoise``.
        model: the model (default ``conv``).
        version: the model version (default: the latest published).
        calibrate: the images are known-good: record their MSE percentiles with the model
            version (``calibration.json`` in its repository folder), so later scores report
            which items are above them (``Scores.above``). Needs at least 100 images.
        broker_url: as ``denoise``.
        repository: as ``denoise``.
        chunk_size: as ``denoise``.
        resize: as ``denoise``.

    Returns:
        ``Scores``: ``mse``, ``psnr`` (dB) and ``ssim`` per image (float32, input order),
        ``rank`` (1 = worst), ``names``, ``model``, ``version`` and the version's
        ``calibration`` (``None`` if it has none); ``worst(k)``, ``above(percentile)``.

    Raises:
        UsageError: ``calibrate`` with fewer than 100 images, or a bad chunk size.
        RepositoryError: ``calibrate`` and the repository cannot be written.
        InputError, ModelNotFoundError, JobError, BrokerError: as ``denoise``.
    """
    from aeq.client.submissions import image_submission
    from aeq.files.score_files import Scores

    settings = _settings(broker_url, repository)
    submission = image_submission(
        settings, Operation.SCORE, images, model, version, chunk_size, resize
    )
    writer = _collect(settings, submission)
    resolved = submission.version
    scores = Scores.of(
        writer.result(), writer.names, resolved.model, resolved.version, resolved.calibration()
    )
    if calibrate:
        from aeq.client.scoring import record_calibration

        source = "an array" if isinstance(images, np.ndarray) else str(images)
        calibration = record_calibration(settings, resolved, scores, source)
        scores = replace(scores, calibration=calibration)
    return scores


def read_images(images: Inputs, *, resize: bool = False) -> Images:
    """Read and check images as the verbs do, with the names they came from.

    For showing inputs beside results, and for telling which output came from which file: the
    verbs return their results in this order.

    Args:
        images: as ``denoise``.
        resize: as ``denoise``.

    Returns:
        ``Images(array, names)``; ``array`` is uint8 ``(N, 28, 28)`` (floats scaled by 255 and
        rounded, as the verbs send them).

    Raises:
        InputError: an input is unusable.
    """
    from aeq.client.submissions import open_images_input
    from aeq.files.memory import ArrayWriter

    source = open_images_input(images, resize)
    writer = ArrayWriter(source.total, (IMAGE_SIDE, IMAGE_SIDE), np.dtype(np.uint8))
    start = 0
    for names, pixels in source.chunks(DEFAULT_CHUNK_SIZE):
        writer.write(start, names, pixels)
        start += len(pixels)
    return Images(writer.result(), writer.names)


def models(repository: PathLike | None = None) -> list[ModelSummary]:
    """The published models, as ``aeq models`` lists them (figures are the latest version's).

    Args:
        repository: the model repository (default ``AEQ_MODEL_REPOSITORY`` or
            ``./model_repository``).

    Returns:
        One ``ModelSummary`` per model (name, versions, latest, code_dim, test_mse,
        parity_max_abs_diff, size_bytes, opset, published_at, path), sorted by name; empty
        when nothing is published yet.

    Raises:
        UsageError: the repository folder does not exist (as ``aeq models`` refuses it).
    """
    from aeq.model_summary import summarize
    from aeq.repository import ModelRepository

    root = _settings(None, repository).model_repository
    if not root.is_dir():
        raise UsageError(
            f"no model repository at {root}: pass repository=... (or set AEQ_MODEL_REPOSITORY), "
            "or make one with 'aeq train all' and 'aeq export all'"
        )
    return summarize(ModelRepository(root))


# -- running ---------------------------------------------------------------------------------


def _run_images(
    op: Operation,
    images: Inputs,
    model: str | None,
    version: int | None,
    broker_url: str | None,
    repository: PathLike | None,
    chunk_size: int | None,
    resize: bool,
) -> np.ndarray:
    from aeq.client.submissions import image_submission

    settings = _settings(broker_url, repository)
    submission = image_submission(settings, op, images, model, version, chunk_size, resize)
    return _run(settings, submission)


def _settings(broker_url: str | None, repository: PathLike | None) -> Settings:
    """The environment's settings with the call's arguments on top."""
    return load_settings().with_overrides(
        broker_url=broker_url,
        model_repository=None if repository is None else Path(repository),
    )


def _run(settings: Settings, submission: Submission) -> np.ndarray:
    """Run a checked submission through workers when a broker is set, else in this process."""
    return _collect(settings, submission).result()


def _collect(settings: Settings, submission: Submission) -> ArrayWriter:
    """Run a checked submission (queued or here) into an in-memory writer, names and all."""
    from aeq.files.memory import ArrayWriter

    spec = submission.spec()
    writer = ArrayWriter.for_job(spec.op, spec.total, spec.code_dim)
    if settings.broker_url:
        from aeq.client.remote import run_queued

        run_queued(settings, submission, writer)
        return writer
    from aeq.client.local import run_local

    run_local(submission, writer, _engine(settings.providers, settings.threads_per_process))
    return writer


@lru_cache(maxsize=4)
def _engine(providers: tuple[str, ...], threads: int | None) -> Engine:
    """One engine per provider choice, kept: its ONNX Runtime sessions are reused by later
    calls (a session costs far more than a small batch's inference)."""
    from worker.inference import Engine

    return Engine(Settings(providers=providers, threads_per_process=threads))
