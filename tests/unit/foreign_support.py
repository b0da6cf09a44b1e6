"""ONNX autoencoders as other tools export them, built with ``onnx.helper`` (no torch), for the
tests of ``aeq export --onnx``.

PyTorch's exporter names tensors ``input.1`` and ``output_0``, lays images out NCHW and fixes the
batch at the example's (1) unless told otherwise; ``conv_autoencoder`` is such a graph, computing
per pixel

    y = low + (high - low) * sigmoid(conv3x3(x) / (high - low))

in the pixel range (low, high) of its scale, so its output is in range for every scale. The
others are what the refusals need: any signature, any element type, several inputs, NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from aeq.core.pixel_scale import PixelScale

OPSET = 17
# A 3x3 kernel that sharpens: each output pixel depends on its neighbours, not on itself alone.
KERNEL = np.array([[0.0, -0.5, 0.0], [-0.5, 3.0, -0.5], [0.0, -0.5, 0.0]], np.float32)
BIAS = -0.75
Dim = int | str | None  # a number, a named (open) dim, or none at all


def value(name: str, dims: Sequence[Dim], elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(dims))


def model_bytes(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    check: bool = True,
) -> bytes:
    """A serialised model, as PyTorch would label it."""
    graph = helper.make_graph(nodes, "main_graph", inputs, outputs, list(initializers))
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="pytorch",
        producer_version="2.13.0",
    )
    proto.ir_version = 8
    if check:
        onnx.checker.check_model(proto)
    return proto.SerializeToString()


def conv_autoencoder(
    batch: Dim = 1,
    scale: PixelScale = PixelScale.UNIT,
    input_name: str = "input.1",
    output_name: str = "output_0",
) -> bytes:
    """NCHW [batch, 1, 28, 28] -> the same: the sharpening conv, squashed into ``scale``'s range."""
    width = scale.high - scale.low
    constants = [
        numpy_helper.from_array((KERNEL / width).reshape(1, 1, 3, 3), "conv.weight"),
        numpy_helper.from_array(np.array([BIAS], np.float32), "conv.bias"),
        numpy_helper.from_array(np.array(width, np.float32), "width"),
        numpy_helper.from_array(np.array(scale.low, np.float32), "low"),
    ]
    nodes = [
        helper.make_node(
            "Conv", [input_name, "conv.weight", "conv.bias"], ["conv"], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Sigmoid", ["conv"], ["squashed"]),
        helper.make_node("Mul", ["squashed", "width"], ["spread"]),
        helper.make_node("Add", ["spread", "low"], [output_name]),
    ]
    dims = [batch, 1, 28, 28]
    return model_bytes(nodes, [value(input_name, dims)], [value(output_name, dims)], constants)


def reshaping(
    in_dims: Sequence[Dim],
    out_dims: Sequence[Dim],
    in_type: int = TensorProto.FLOAT,
    out_type: int = TensorProto.FLOAT,
    nan: bool = False,
) -> bytes:
    """``x`` (in_dims) -> sigmoid, reshaped to ``out_dims`` (-1 for the first) -> ``y``; with
    casts where the element types are not float32, and NaN everywhere if ``nan``."""
    shape = [-1, *[d if isinstance(d, int) else -1 for d in out_dims[1:]]]
    constants = [numpy_helper.from_array(np.array(shape, np.int64), "shape")]
    nodes = [helper.make_node("Cast", ["x"], ["x_float"], to=TensorProto.FLOAT)]
    nodes.append(helper.make_node("Sigmoid", ["x_float"], ["squashed"]))
    if nan:  # sqrt(-1 - sigmoid) is NaN
        constants.append(numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one"))
        nodes.append(helper.make_node("Sub", ["minus_one", "squashed"], ["negative"]))
        nodes.append(helper.make_node("Sqrt", ["negative"], ["squashed_nan"]))
    last = "squashed_nan" if nan else "squashed"
    nodes.append(helper.make_node("Reshape", [last, "shape"], ["reshaped"]))
    nodes.append(helper.make_node("Cast", ["reshaped"], ["y"], to=out_type))
    return model_bytes(
        nodes, [value("x", in_dims, in_type)], [value("y", out_dims, out_type)], constants
    )


def fixed_reshape(batch_declared: str, items: int) -> bytes:
    """Declares an open batch but reshapes to exactly ``items`` images: it runs only at that
    batch size."""
    constants = [numpy_helper.from_array(np.array([items, 784], np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    return model_bytes(
        nodes, [value("x", [batch_declared, 784])], [value("y", [batch_declared, 784])], constants
    )


def two_inputs() -> bytes:
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    dims = ["N", 784]
    return model_bytes(nodes, [value("a", dims), value("b", dims)], [value("y", dims)])


def custom_op() -> bytes:
    """A valid graph of an operator set onnx and ONNX Runtime do not know."""
    nodes = [helper.make_node("Blur", ["x"], ["y"], domain="com.example")]
    dims = ["N", 784]
    graph = helper.make_graph(nodes, "main_graph", [value("x", dims)], [value("y", dims)])
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example", 1)],
    )
    proto.ir_version = 8
    return proto.SerializeToString()


def broken() -> bytes:
    """Parses as ONNX, fails the checker: a node reads a tensor nothing makes."""
    nodes = [helper.make_node("Add", ["x", "nowhere"], ["y"])]
    dims = ["N", 784]
    return model_bytes(nodes, [value("x", dims)], [value("y", dims)], check=False)


def encoder(batch: Dim = 1, code_dims: Sequence[int] = (4, 2, 2), seed: int = 0) -> bytes:
    """NCHW [batch, 1, 28, 28] -> relu(flat @ W), shaped ``code_dims``."""
    size = int(np.prod(code_dims))
    weights = np.random.default_rng(seed).normal(0, 0.05, (784, size)).astype(np.float32)
    constants = [
        numpy_helper.from_array(weights, "W"),
        numpy_helper.from_array(np.array([-1, 784], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([-1, *code_dims], np.int64), "code_shape"),
    ]
    nodes = [
        helper.make_node("Reshape", ["input.1", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["code"]),
        helper.make_node("Reshape", ["code", "code_shape"], ["output_0"]),
    ]
    inputs, outputs = (
        [value("input.1", [batch, 1, 28, 28])],
        [value("output_0", [batch, *code_dims])],
    )
    return model_bytes(nodes, inputs, outputs, constants)


def decoder(batch: Dim = "batch", code_dims: Sequence[int] = (4, 2, 2), seed: int = 1) -> bytes:
    """[batch, *code_dims] -> sigmoid(flat @ V), NCHW [batch, 1, 28, 28]."""
    size = int(np.prod(code_dims))
    weights = np.random.default_rng(seed).normal(0, 1.0, (size, 784)).astype(np.float32)
    constants = [
        numpy_helper.from_array(weights, "V"),
        numpy_helper.from_array(np.array([-1, size], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([-1, 1, 28, 28], np.int64), "image_shape"),
    ]
    nodes = [
        helper.make_node("Reshape", ["code.1", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "V"], ["pre"]),
        helper.make_node("Sigmoid", ["pre"], ["image"]),
        helper.make_node("Reshape", ["image", "image_shape"], ["output_0"]),
    ]
    inputs, outputs = (
        [value("code.1", [batch, *code_dims])],
        [value("output_0", [batch, 1, 28, 28])],
    )
    return model_bytes(nodes, inputs, outputs, constants)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def write_with_weights_beside(folder: Path, name: str, data: bytes, location: str) -> Path:
    """Save the model with its weights in ``location`` beside it, as ``torch.onnx.export``
    does by default (a ``location`` outside the folder is written in as it is, for the
    refusal: onnx itself saves only inside)."""
    path = folder / name
    inside = Path(location).name
    onnx.save_model(
        onnx.load_model_from_string(data),
        path,
        save_as_external_data=True,
        location=inside,
        size_threshold=0,
    )
    if location != inside:
        proto = onnx.load_model(path, load_external_data=False)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        path.write_bytes(proto.SerializeToString())
    return path


def run_onnx(data: bytes, feed: np.ndarray, batch: int | None = None) -> np.ndarray:
    """ONNX Runtime's own output for ``feed`` (already in the graph's scale and layout), run one
    batch of ``batch`` items at a time where the graph's batch is fixed."""
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    step = batch or len(feed)
    parts = [session.run(None, {name: feed[i : i + step]})[0] for i in range(0, len(feed), step)]
    return np.concatenate(parts)


def to_graph(pixels: np.ndarray, scale: PixelScale) -> np.ndarray:
    """uint8 pixels in the graph's scale, computed in float64 (the reference, not the worker's
    code): 0-1 x/255, 0-255 x, -1-1 x/127.5 - 1."""
    values = {
        PixelScale.UNIT: pixels / 255.0,
        PixelScale.BYTE: pixels * 1.0,
        PixelScale.SYMMETRIC: pixels / 127.5 - 1.0,
    }[scale]
    return values.astype(np.float32)


def to_pixels(values: np.ndarray, scale: PixelScale) -> np.ndarray:
    """Graph values back to uint8 by the inverse, clipped and rounded (float64 reference)."""
    grey = {
        PixelScale.UNIT: values * 255.0,
        PixelScale.BYTE: values * 1.0,
        PixelScale.SYMMETRIC: (values.astype(np.float64) + 1.0) * 127.5,
    }[scale]
    return np.rint(np.clip(grey, 0, 255)).astype(np.uint8).reshape(len(values), 28, 28)
