"""The wire format of a chunk: a small msgpack message that points at raw bytes in Redis.

A job's items travel in chunks. The client stores each chunk's array as raw bytes under the job's
keys (claim check) and sends one small Celery message per chunk carrying the job id, the chunk
index and what the worker needs to check the bytes before trusting them: operation, model,
version, item count, dtype and shape. Images travel as uint8 pixels (784 bytes each), codes as
float32; never as JSON lists and never pickled. What comes back is laid out by
``output_layout``: images, codes, or for ``score`` one float32 row of ``SCORE_METRICS`` per item
(12 bytes).

Both sides use this module: the client builds messages with ``ChunkMessage.for_array``; the worker
turns whatever arrived back into a ``ChunkMessage`` with ``ChunkMessage.from_wire`` and into an
array with ``decode_array``, each raising ``PayloadError`` with a reason a user can read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aeq.core.catalog import (
    IMAGE_SIDE,
    MODEL_NAME,
    MODELS,
    PIXELS_PER_IMAGE,
    SCORE_METRICS,
    Operation,
)
from aeq.core.errors import PayloadError

if TYPE_CHECKING:  # NumPy loads with the first array: the job commands' '-h' does without
    import numpy as np

# The one Celery task every chunk is sent to (the operation travels in the message).
TASK_NAME = "aeq.run_chunk"
# The queue chunk messages go to and workers consume (worker.app configures Celery with it).
QUEUE = "aeq"
# A chunk holds at most this many items; a larger count in a message is refused before any
# allocation (4096 images = 3.2 MB, 4096 64-d codes = 1 MB).
MAX_CHUNK_SIZE = 4096
# Unless the user gives a count, a chunk carries about this much input: chunks are sized in bytes,
# not items. Each chunk costs the client, Redis and the worker a fixed ~10 ms of CPU (a message,
# four Redis round trips, a durable write); 200,000-image CLI jobs measured 512 -> 2048 MNIST
# images per chunk at 0.80 -> 0.87x of in-process ONNX Runtime (denoising), 0.68 -> 0.79x (conv),
# 3.6 -> 2.6 s (vanilla), and 4096 no better (docs/BENCHMARKS.md, "Scale").
DEFAULT_CHUNK_BYTES = 2 * 2**20


def default_chunk_size(item_bytes: int) -> int:
    """Items per chunk for items of ``item_bytes`` input: the largest power of two whose chunk
    fits ``DEFAULT_CHUNK_BYTES``, 1 to ``MAX_CHUNK_SIZE`` (2048 MNIST images, 4096 codes)."""
    fitting = max(1, min(MAX_CHUNK_SIZE, DEFAULT_CHUNK_BYTES // max(1, item_bytes)))
    return 1 << (fitting.bit_length() - 1)


DEFAULT_CHUNK_SIZE = default_chunk_size(PIXELS_PER_IMAGE)
IMAGE_DTYPE = "uint8"
CODE_DTYPE = "float32"
SCORE_DTYPE = "float32"
_JOB_ID = re.compile(r"^[0-9a-f]{8,32}$")
_FIELDS = ("job", "chunk", "op", "model", "version", "count", "dtype", "shape")


@dataclass(frozen=True)
class ChunkMessage:
    """One chunk of one job, as carried in a Celery message.

    Attributes:
        job: the job id (lower-case hex).
        chunk: the chunk index, from 0.
        op: what to do with the items.
        model: the model name.
        version: the model version (resolved by the client; never "latest" on the wire).
        count: how many items the chunk holds.
        dtype: ``uint8`` for images, ``float32`` for codes.
        shape: the array's shape, ``(count, 28, 28)`` or ``(count, code_dim)``.
    """

    job: str
    chunk: int
    op: Operation
    model: str
    version: int
    count: int
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def for_array(
        cls, job: str, chunk: int, op: Operation, model: str, version: int, array: np.ndarray
    ) -> ChunkMessage:
        """Describe ``array`` as chunk ``chunk`` of ``job``."""
        return cls(job, chunk, op, model, version, len(array), str(array.dtype), array.shape)

    @property
    def nbytes(self) -> int:
        """The byte count the stored array must have."""
        import numpy as np

        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    def to_wire(self) -> dict[str, Any]:
        """The message as plain msgpack/JSON-friendly data (Celery task kwargs)."""
        return {
            "job": self.job,
            "chunk": self.chunk,
            "op": self.op.value,
            "model": self.model,
            "version": self.version,
            "count": self.count,
            "dtype": self.dtype,
            "shape": list(self.shape),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> ChunkMessage:
        """Check a received message field by field and build it.

        Raises:
            PayloadError: a field is missing, of the wrong type, or inconsistent with the others.
        """
        missing = [field for field in _FIELDS if field not in data]
        if missing:
            raise PayloadError(f"message lacks {', '.join(missing)}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise PayloadError(f"message has unknown fields {', '.join(map(str, unknown))}")
        message = cls(
            job=_job_id(data["job"]),
            chunk=_non_negative_int(data["chunk"], "chunk"),
            op=_operation(data["op"]),
            model=_model(data["model"]),
            version=_positive_int(data["version"], "version"),
            count=_positive_int(data["count"], "count"),
            dtype=str(data["dtype"]),
            shape=_shape(data["shape"]),
        )
        default = MODELS.get(message.model)
        if default is not None:  # another name's code size is its published version's
            message.check_layout(default.code_dim)
        return message

    def check_layout(self, code_dim: int) -> None:
        """Check count, dtype and shape against the operation and the model's code size.

        Raises:
            PayloadError: the layout is not the one this operation takes.
        """
        if self.count > MAX_CHUNK_SIZE:
            raise PayloadError(f"chunk holds {self.count} items, more than {MAX_CHUNK_SIZE}")
        dtype, shape = expected_layout(self.op, self.count, code_dim)
        if self.dtype != dtype:
            raise PayloadError(f"{self.op.value} takes {dtype} items, message says {self.dtype}")
        if self.shape != shape:
            raise PayloadError(
                f"{self.op.value} with {self.model} takes shape {shape}, message says {self.shape}"
            )


def expected_layout(op: Operation, count: int, code_dim: int) -> tuple[str, tuple[int, ...]]:
    """The dtype and shape of a chunk of ``count`` items for ``op``."""
    if op is Operation.DECODE:
        return CODE_DTYPE, (count, code_dim)
    return IMAGE_DTYPE, (count, IMAGE_SIDE, IMAGE_SIDE)


def output_layout(op: Operation, count: int, code_dim: int) -> tuple[str, tuple[int, ...]]:
    """The dtype and shape of what a worker stores for a chunk of ``count`` items of ``op``."""
    if op is Operation.ENCODE:
        return CODE_DTYPE, (count, code_dim)
    if op is Operation.SCORE:
        return SCORE_DTYPE, (count, len(SCORE_METRICS))
    return IMAGE_DTYPE, (count, IMAGE_SIDE, IMAGE_SIDE)


def encode_array(array: np.ndarray) -> memoryview:
    """The raw bytes of ``array`` in C order (no header: the message carries dtype and shape),
    as a view: redis-py sends a memoryview as it is, so a chunk is not copied on its way out."""
    import numpy as np

    return memoryview(np.ascontiguousarray(array).data).cast("B")


def decode_array(message: ChunkMessage, raw: bytes | None) -> np.ndarray:
    """Turn the stored bytes of a chunk back into its array, checking them first.

    The array is a read-only view of ``raw`` (no copy).

    Raises:
        PayloadError: the bytes are missing, of the wrong length, or (codes) not finite.
    """
    import numpy as np

    if raw is None:
        raise PayloadError(
            f"input of chunk {message.chunk} is not in the result store (expired or deleted)"
        )
    if len(raw) != message.nbytes:
        raise PayloadError(
            f"chunk {message.chunk} holds {len(raw)} bytes, "
            f"{message.shape} {message.dtype} needs {message.nbytes}"
        )
    array = np.frombuffer(raw, dtype=message.dtype).reshape(message.shape)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise PayloadError(f"chunk {message.chunk} holds NaN or infinite values")
    return array


def _job_id(value: Any) -> str:
    if not isinstance(value, str) or not _JOB_ID.match(value):
        raise PayloadError(f"bad job id {value!r}")
    return value


def _operation(value: Any) -> Operation:
    try:
        return Operation(value)
    except ValueError:
        known = ", ".join(op.value for op in Operation)
        raise PayloadError(f"unknown operation {value!r}; known: {known}") from None


def _model(value: Any) -> str:
    # Any published name (the worker's repository says whether it exists); never a path.
    if not isinstance(value, str) or not MODEL_NAME.fullmatch(value):
        raise PayloadError(f"model {value!r} is not a model name")
    return value


def _non_negative_int(value: Any, name: str) -> int:
    # bool is an int in Python; a message saying ``chunk: true`` is malformed, not chunk 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PayloadError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _positive_int(value: Any, name: str) -> int:
    number = _non_negative_int(value, name)
    if number == 0:
        raise PayloadError(f"{name} must be positive, got 0")
    return number


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise PayloadError(f"shape must be a list of integers, got {value!r}")
    return tuple(_positive_int(dim, "shape entry") for dim in value)
