"""Which execution provider ONNX Runtime really uses here, found with a real session.

ONNX Runtime lists CUDA as available whenever the GPU wheel is installed and falls back to the CPU
when the CUDA libraries cannot load, so only a session's ``get_providers()`` tells the truth. The
probe runs in a short-lived subprocess (``python -m worker.provider_probe``) so the worker's own
process does no CUDA work before it forks its children.

The session is made from a one-node ONNX graph (Identity on a float tensor) whose protobuf bytes
are written here by hand: worker images need not install the ``onnx`` package.
"""

from __future__ import annotations

import json
import subprocess
import sys

from aeq.core.errors import ProviderError

PROBE_TIMEOUT_S = 120.0
_IR_VERSION = 7
_OPSET = 13
_FLOAT = 1  # onnx.TensorProto.FLOAT


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    """One protobuf field: a varint (int) or a length-delimited blob (bytes)."""
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _tensor_value(name: str) -> bytes:
    dim = _field(1, 1)  # Dimension.dim_value = 1
    shape = _field(1, dim)  # TensorShapeProto.dim
    tensor_type = _field(1, _FLOAT) + _field(2, shape)  # elem_type, shape
    type_proto = _field(1, tensor_type)  # TypeProto.tensor_type
    return _field(1, name.encode()) + _field(2, type_proto)  # ValueInfoProto name, type


def identity_model_bytes() -> bytes:
    """A serialised ONNX ModelProto: ``y = Identity(x)`` on a float tensor of shape (1,)."""
    node = _field(1, b"x") + _field(2, b"y") + _field(4, b"Identity")
    graph = (
        _field(1, node)
        + _field(2, b"probe")
        + _field(11, _tensor_value("x"))
        + _field(12, _tensor_value("y"))
    )
    opset = _field(1, b"") + _field(2, _OPSET)
    return _field(1, _IR_VERSION) + _field(7, graph) + _field(8, opset)


def providers_in_use(requested: list[str]) -> list[str]:
    """Make a session here with ``requested`` providers and return those it really uses."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted = [name for name in requested if name in available] or ["CPUExecutionProvider"]
    session = ort.InferenceSession(identity_model_bytes(), providers=wanted)
    return list(session.get_providers())


def probe(requested: tuple[str, ...]) -> list[str]:
    """``providers_in_use`` in a fresh subprocess (no CUDA initialised in this process)."""
    command = [sys.executable, "-m", "worker.provider_probe", *requested]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise ProviderError(
            f"the provider probe did not finish in {PROBE_TIMEOUT_S:.0f} s"
        ) from None
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        detail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ProviderError(f"the provider probe failed: {detail[0]}")
    return list(json.loads(lines[-1]))


def main(argv: list[str]) -> int:
    print(json.dumps(providers_in_use(argv or ["CPUExecutionProvider"])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
