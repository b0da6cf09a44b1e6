"""Two ONNX graph rewrites the engine benchmark measures as proposals for ``export/``.

ONNX Runtime's profiler shows where the convolutional graphs that tf2onnx makes lose their time
(docs/BENCHMARKS.md):

1. Keras 3 lowers ``UpSampling2D`` to ``repeat``, which tf2onnx turns into Unsqueeze/Tile/
   Reshape/Transpose plus a chain of Shape arithmetic. The Tiles cost ~10% and, because they are
   not layout-aware, force NCHWc reorders around every upsampling. One ``Resize`` (nearest,
   scales 1,1,2,2) computes the same thing and keeps the blocked layout.
2. The last convolution has one output channel. ONNX Runtime's blocked (NCHWc) convolution
   computes output channels 16 at a time, so this conv, 5-15% of the multiply-adds, takes half
   the time. The same arithmetic as a depthwise conv (one 3x3 filter per input channel) followed
   by a sum over channels and the bias vectorises across the input channels instead.

Each rewrite is kept only if the rewritten graph gives the original's outputs (to ``ATOL``) on
random inputs; a graph with nothing to rewrite (the dense models, or a future exporter that
already does this) comes back unchanged with zero counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ATOL = 1e-5
CHECK_ITEMS = 8
UPSAMPLE_SCALES = (1.0, 1.0, 2.0, 2.0)
# What tf2onnx emits between the Relu before an UpSampling2D and the Conv after it.
_UPSAMPLING_OPS = frozenset(
    {"Unsqueeze", "Tile", "Reshape", "Transpose", "Shape", "Gather", "Cast", "Slice", "Concat"}
)
_TILES_PER_UPSAMPLING = 2  # one per spatial axis


@dataclass(frozen=True)
class Rewritten:
    """A rewritten graph and what was changed."""

    model_bytes: bytes
    upsamplings: int
    single_channel_convs: int
    max_abs_diff: float

    @property
    def changed(self) -> bool:
        return bool(self.upsamplings or self.single_channel_convs)


def _producers(graph: Any) -> dict[str, Any]:
    return {output: node for node in graph.node for output in node.output}


def _upsampling_start(graph: Any, end: Any, producers: dict[str, Any]) -> str | None:
    """The tensor an UpSampling2D lowering ending at ``end`` starts from (a Relu's output)."""
    stack, seen, tiles, start = [end], {id(end)}, 0, None
    while stack:
        node = stack.pop()
        if node.op_type not in _UPSAMPLING_OPS:
            return None
        tiles += node.op_type == "Tile"
        for name in node.input:
            source = producers.get(name)
            if source is None or id(source) in seen:
                continue
            seen.add(id(source))
            if source.op_type == "Relu":
                start = source.output[0] if start in (None, source.output[0]) else ""
            else:
                stack.append(source)
    return start if start and tiles == _TILES_PER_UPSAMPLING else None


def replace_upsamplings(model: Any) -> int:
    """Replace each tf2onnx UpSampling2D lowering that feeds a Conv by one Resize; return count."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = _producers(graph)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    scales = "aeq_upsample_scales"
    replaced = 0
    for index, node in enumerate(list(graph.node)):
        feeds_conv = any(c.op_type == "Conv" for c in consumers.get(node.output[0], []))
        start = _upsampling_start(graph, node, producers) if feeds_conv else None
        if start is None:
            continue
        graph.node[index].CopyFrom(
            helper.make_node("Resize", [start, "", scales], [node.output[0]], mode="nearest",
                             coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        )  # fmt: skip
        replaced += 1
    if replaced:
        graph.initializer.append(
            numpy_helper.from_array(np.array(UPSAMPLE_SCALES, np.float32), scales)
        )
        _drop_dead_nodes(graph)
    return replaced


def depthwise_single_channel_convs(model: Any) -> int:
    """Rewrite every Conv with one output channel as depthwise Conv + ReduceSum + bias."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "Conv" else None
        array = numpy_helper.to_array(weight) if weight is not None else None
        if array is None or array.shape[0] != 1 or len(array.shape) != 4:
            nodes.append(node)
            continue
        channels, base = array.shape[1], node.output[0]
        bias = np.zeros(1, np.float32)
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(weights[node.input[2]]).astype(np.float32)
        graph.initializer.extend([
            numpy_helper.from_array(array.reshape(channels, 1, *array.shape[2:]), f"{base}_dw"),
            numpy_helper.from_array(np.array([1], np.int64), f"{base}_axes"),
            numpy_helper.from_array(bias.reshape(1, 1, 1, 1), f"{base}_bias"),
        ])  # fmt: skip
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes += [
            helper.make_node("Conv", [node.input[0], f"{base}_dw"], [f"{base}_d"],
                             **{**attributes, "group": channels}),
            helper.make_node("ReduceSum", [f"{base}_d", f"{base}_axes"], [f"{base}_s"], keepdims=1),
            helper.make_node("Add", [f"{base}_s", f"{base}_bias"], [base]),
        ]  # fmt: skip
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _drop_dead_nodes(graph: Any) -> None:
    """Remove nodes and initializers nothing uses any more (ONNX Runtime warns about each)."""
    nodes = list(graph.node)
    outputs = {value.name for value in graph.output}
    while True:
        used = {name for node in nodes for name in node.input} | outputs
        alive = [node for node in nodes if any(name in used for name in node.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def rewrite(model_bytes: bytes, input_dims: tuple[int, ...]) -> Rewritten:
    """Both rewrites, checked against the original graph on random inputs.

    Raises:
        ValueError: the rewritten graph's outputs differ from the original's beyond ``ATOL``.
    """
    import onnx

    from bench.sessions import OrtConfig

    model = onnx.load_from_string(model_bytes)
    upsamplings = replace_upsamplings(model)
    convs = depthwise_single_channel_convs(model)
    if not (upsamplings or convs):
        return Rewritten(model_bytes, 0, 0, 0.0)
    _drop_dead_nodes(model.graph)
    onnx.checker.check_model(model)
    rewritten = model.SerializeToString()
    inputs = np.random.default_rng(0).random((CHECK_ITEMS, *input_dims), dtype=np.float32)
    outputs = []
    for data in (model_bytes, rewritten):
        session = OrtConfig().session(data)
        outputs.append(session.run(None, {session.get_inputs()[0].name: inputs})[0])
    diff = float(np.abs(outputs[0] - outputs[1]).max())
    if diff > ATOL:
        raise ValueError(f"rewritten graph differs from the original by {diff:.2e}")
    return Rewritten(rewritten, upsamplings, convs, diff)
