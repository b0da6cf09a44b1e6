"""What a worker does with one chunk message, as a plain function (the Celery task only calls it).

Every message is checked before it is trusted, and the worker goes on serving whatever arrives:
- a message that is not a chunk message (a field missing, of the wrong type, inconsistent) is
  kept as a dead letter (``aeq dead-letters``); if it names a real chunk, that chunk fails with the
  reason, so its job cannot wait forever for a chunk that will never come;
- a message for a chunk its job does not have (an index past the job's last chunk, an item count
  that is not the chunk's) is only a dead letter: it never touches that job, so a stray message
  cannot fail a job that is running or already done;
- a chunk message that fits its job but cannot be run (another model, bytes of the wrong size, a
  model missing from the repository) fails its chunk with a reason the user sees in
  ``aeq status``.
Finishing is idempotent: a chunk that already has a status (a redelivery after a worker died, or a
duplicate message) is left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from aeq.core.errors import AeqError, PayloadError, StoreFullError
from aeq.core.settings import Settings
from aeq.queue.dead_letters import DeadLetter, DeadLetters
from aeq.queue.jobs import ChunkOutcome, ChunkStatus, JobSpec, JobStore, TakenChunk
from aeq.queue.protocol import TASK_NAME, ChunkMessage, decode_array, encode_array
from aeq.repository import ModelRepository, ModelVersion
from worker.inference import Engine
from worker.scoring import run_chunk

logger = logging.getLogger(__name__)

# Pauses before storing a chunk's output again when Redis refused it for lack of memory; after
# the last, the chunk fails with the reason (about 7 s a chunk in all).
FULL_STORE_PAUSES_S = (1.0, 2.0, 4.0)


@dataclass
class WorkerContext:
    """What processing a chunk needs, made once per worker process."""

    settings: Settings
    store: JobStore
    repository: ModelRepository
    engine: Engine
    hostname: str
    _versions: dict[tuple[str, int], ModelVersion] = field(default_factory=dict)

    def model_version(self, model: str, version: int) -> ModelVersion:
        """A published model version, looked up once per process (versions never change)."""
        key = (model, version)
        if key not in self._versions:
            self._versions[key] = self.repository.get(model, version)
        return self._versions[key]

    @property
    def dead_letters(self) -> DeadLetters:
        """The dead-letter list, in the result store."""
        return DeadLetters(self.store.client)


def process_chunk(
    context: WorkerContext, data: Mapping[str, Any], task_id: str = ""
) -> dict[str, Any]:
    """Check, run and store one chunk; return a small summary (for logs; nobody waits on it).

    Args:
        context: this process's context.
        data: the message's keyword arguments, as received.
        task_id: the Celery task id, recorded with a dead letter.

    Redis errors propagate (the task requeues the message); everything else about the chunk ends
    as a chunk status or a dead letter.
    """
    try:
        message = ChunkMessage.from_wire(data)
    except PayloadError as error:
        return _reject_unparsable(context, data, str(error), task_id)
    taken = context.store.take(message.job, message.chunk)
    if taken is None:
        logger.warning("job %s is gone (expired or collected); chunk %d dropped", *_ids(message))
        return {"chunk": message.chunk, "state": "gone"}
    misfit = _misfit(message, taken.spec)
    if misfit is not None:
        _keep_dead_letter(context, data, misfit, task_id)
        return {"chunk": message.chunk, "state": "dead letter", "reason": misfit}
    if taken.finished:
        logger.info("job %s chunk %d already finished; duplicate delivery ignored", *_ids(message))
        return {"chunk": message.chunk, "state": "duplicate"}
    if taken.cancelled:
        return _finish(context, message, ChunkOutcome.SKIPPED, "job cancelled")
    try:
        return _run(context, message, taken)
    except AeqError as error:  # PayloadError, ModelError, ProviderError: the chunk's own fault
        return _finish(context, message, ChunkOutcome.FAILED, str(error))
    except Exception as error:  # noqa: BLE001 - the job must finish whatever ONNX Runtime raised
        logger.exception("job %s chunk %d failed", *_ids(message))
        return _finish(context, message, ChunkOutcome.FAILED, f"{type(error).__name__}: {error}")


def _run(context: WorkerContext, message: ChunkMessage, taken: TakenChunk) -> dict[str, Any]:
    version = _check_against_job(context, message, taken.spec)
    items = decode_array(message, taken.data)
    # For ``score`` the result is the items' scores, not their reconstructions (worker.scoring).
    result = run_chunk(context.engine, version, message.op, items)
    status = ChunkStatus(
        chunk=message.chunk,
        outcome=ChunkOutcome.DONE,
        items=message.count,
        provider=result.provider,
        worker=context.hostname,
        seconds=round(result.seconds, 6),
    )
    stored = _store_output(context, message, status, encode_array(result.array))
    return {
        "chunk": message.chunk,
        "state": "done" if stored else "duplicate",
        "provider": result.provider,
        "seconds": status.seconds,
    }


def _store_output(
    context: WorkerContext, message: ChunkMessage, status: ChunkStatus, output: memoryview
) -> bool:
    """Store a done chunk; while Redis is full, try again after growing pauses (a client may be
    collecting), then raise ``StoreFullError`` with the figures, which fails the chunk rather
    than leave its job waiting."""
    for pause in FULL_STORE_PAUSES_S:
        try:
            return context.store.complete(message.job, status, output)
        except StoreFullError as error:
            logger.warning("%s; trying again in %.0f s", error, pause)
            time.sleep(pause)
    try:
        return context.store.complete(message.job, status, output)
    except StoreFullError as error:
        used, limit = context.store.memory()
        raise StoreFullError(
            f"Redis is full ({used / 2**20:.1f} of its maxmemory {limit / 2**20:.1f} MiB used): "
            f"{error}"
        ) from None


def _check_against_job(
    context: WorkerContext, message: ChunkMessage, spec: JobSpec
) -> ModelVersion:
    """The message must ask for what its job does, with a model that exists and has the graph
    the operation runs."""
    if (message.op, message.model, message.version) != (spec.op, spec.model, spec.version):
        raise PayloadError(
            f"message says {message.op.value} with {message.model}@{message.version}, "
            f"job {message.job} is {spec.op.value} with {spec.model}@{spec.version}"
        )
    version = context.model_version(message.model, message.version)
    # A model published without an encoder and decoder has no code size to check a layout by.
    version.check_serves(message.op)
    message.check_layout(version.code_dim)
    return version


def _misfit(message: ChunkMessage, spec: JobSpec) -> str | None:
    """Why the message is not one of its job's chunks (index or item count), or None."""
    if message.chunk < spec.chunks and message.count == spec.chunk_count(message.chunk):
        return None
    return (
        f"chunk {message.chunk} with {message.count} items does not fit job {message.job} "
        f"({spec.total} items in {spec.chunks} chunks of {spec.chunk_size})"
    )


def _finish(
    context: WorkerContext, message: ChunkMessage, outcome: ChunkOutcome, reason: str
) -> dict[str, Any]:
    if outcome is ChunkOutcome.FAILED:
        logger.warning("job %s chunk %d failed: %s", message.job, message.chunk, reason)
    status = ChunkStatus(
        chunk=message.chunk,
        outcome=outcome,
        items=message.count,
        reason=reason,
        worker=context.hostname,
    )
    context.store.complete(message.job, status)
    return {"chunk": message.chunk, "state": outcome.value, "reason": reason}


def _reject_unparsable(
    context: WorkerContext, data: Mapping[str, Any], reason: str, task_id: str
) -> dict[str, Any]:
    """A message too broken to trust: keep it as a dead letter, and fail its chunk if it names a
    real job and chunk."""
    job, chunk = data.get("job"), data.get("chunk")
    _keep_dead_letter(context, data, reason, task_id)
    if isinstance(job, str) and isinstance(chunk, int) and not isinstance(chunk, bool):
        try:
            spec = context.store.spec_of(job)
        except Exception:  # noqa: BLE001 - a malformed job id may not even form a valid key
            spec = None
        if spec is not None and 0 <= chunk < spec.chunks:
            status = ChunkStatus(
                chunk=chunk,
                outcome=ChunkOutcome.FAILED,
                items=spec.chunk_count(chunk),
                reason=f"bad message: {reason}",
                worker=context.hostname,
            )
            context.store.complete(job, status)
    return {"state": "refused", "reason": reason}


def _keep_dead_letter(
    context: WorkerContext, data: Mapping[str, Any], reason: str, task_id: str
) -> None:
    """Record a refused message; the body kept is its keyword arguments, packed again."""
    logger.warning("dead letter %r: %s", _abbreviate(data), reason)
    try:
        body = msgpack.packb(dict(data))
    except (TypeError, ValueError, OverflowError):  # a JSON message may hold what msgpack cannot
        body = _abbreviate(data).encode()
    headers = {"task": TASK_NAME, "id": task_id}
    letter = DeadLetter.of(reason, context.hostname, headers, body, "application/x-msgpack")
    context.dead_letters.keep(letter)


def _ids(message: ChunkMessage) -> tuple[str, int]:
    return message.job, message.chunk


def _abbreviate(data: Mapping[str, Any]) -> str:
    text = repr(dict(data))
    return text if len(text) < 300 else text[:297] + "..."
