"""The chunk wire format: what a worker accepts, and the reason it gives for what it refuses."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from aeq.core.catalog import MODELS, Operation
from aeq.core.errors import PayloadError
from aeq.queue.protocol import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    ChunkMessage,
    decode_array,
    default_chunk_size,
    encode_array,
)

JOB = "0123456789ab"


def image_message(count: int = 3, **changes: object) -> dict[str, object]:
    images = np.zeros((count, 28, 28), np.uint8)
    wire = ChunkMessage.for_array(JOB, 0, Operation.DENOISE, "denoising", 1, images).to_wire()
    wire.update(changes)
    return wire


def test_default_chunk_payload_fits_its_byte_budget_and_the_message_stays_small():
    images = np.zeros((DEFAULT_CHUNK_SIZE, 28, 28), np.uint8)
    assert DEFAULT_CHUNK_SIZE == 2048
    assert DEFAULT_CHUNK_BYTES // 2 < len(encode_array(images)) <= DEFAULT_CHUNK_BYTES
    message = ChunkMessage.for_array(JOB, 7, Operation.DENOISE, "denoising", 1, images)
    assert len(msgpack.packb(message.to_wire())) < 200


@pytest.mark.parametrize(
    ("item_bytes", "items"),
    [
        (784, 2048),
        (32 * 4, MAX_CHUNK_SIZE),
        (3 * 256 * 256, 8),
        (3 * 2**20, 1),
        (0, MAX_CHUNK_SIZE),
    ],
)
def test_chunks_are_sized_in_bytes_as_a_power_of_two(item_bytes, items):
    assert default_chunk_size(item_bytes) == items


def test_round_trip_through_msgpack_keeps_every_field():
    codes = np.ones((5, 64), np.float32)
    message = ChunkMessage.for_array(JOB, 2, Operation.DECODE, "multilayer", 3, codes)
    again = ChunkMessage.from_wire(msgpack.unpackb(msgpack.packb(message.to_wire())))
    assert again == message
    assert again.nbytes == codes.nbytes


def test_array_bytes_round_trip_without_copy():
    images = np.arange(3 * 784, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    message = ChunkMessage.from_wire(image_message())
    encoded = encode_array(images)
    assert encoded.obj is images  # sent as a view of the array, not a copy
    decoded = decode_array(message, bytes(encoded))  # as Redis gives it back
    np.testing.assert_array_equal(decoded, images)
    assert not decoded.flags.writeable  # a view of the bytes, not a copy


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"op": "sharpen"}, "unknown operation 'sharpen'"),
        ({"model": "../resnet"}, "model '../resnet' is not a model name"),
        ({"model": ""}, "model '' is not a model name"),
        ({"shape": [3, 28, 27]}, "takes shape (3, 28, 28)"),
        ({"shape": [3, 784]}, "takes shape (3, 28, 28)"),
        ({"dtype": "float32"}, "takes uint8 items"),
        ({"count": MAX_CHUNK_SIZE + 1, "shape": [MAX_CHUNK_SIZE + 1, 28, 28]}, "more than"),
        ({"version": 0}, "version must be positive"),
        ({"chunk": -1}, "chunk must be a non-negative integer"),
        ({"chunk": True}, "chunk must be a non-negative integer"),
        ({"job": "../etc"}, "bad job id"),
        ({"extra": 1}, "unknown fields extra"),
    ],
)
def test_bad_messages_are_refused_with_a_reason(changes, reason):
    with pytest.raises(PayloadError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        ChunkMessage.from_wire(image_message(**changes))


def test_missing_fields_are_named():
    wire = image_message()
    del wire["shape"], wire["dtype"]
    with pytest.raises(PayloadError, match="lacks dtype, shape"):
        ChunkMessage.from_wire(wire)


def test_decode_codes_must_match_the_models_code_size():
    wire = image_message(op="decode", model="conv", dtype="float32", shape=[3, 64])
    with pytest.raises(PayloadError, match=rf"takes shape \(3, {MODELS['conv'].code_dim}\)"):
        ChunkMessage.from_wire(wire)


@pytest.mark.parametrize("size", [0, 3 * 784 - 1, 3 * 784 + 1])
def test_wrong_byte_count_is_refused(size):
    message = ChunkMessage.from_wire(image_message())
    with pytest.raises(PayloadError, match=f"holds {size} bytes"):
        decode_array(message, b"\0" * size)


def test_missing_input_is_refused():
    with pytest.raises(PayloadError, match="not in the result store"):
        decode_array(ChunkMessage.from_wire(image_message()), None)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_codes_must_be_finite(bad):
    codes = np.zeros((2, 64), np.float32)
    codes[1, 5] = bad
    message = ChunkMessage.for_array(JOB, 0, Operation.DECODE, "vanilla", 1, codes)
    with pytest.raises(PayloadError, match="NaN or infinite"):
        decode_array(message, encode_array(codes))
