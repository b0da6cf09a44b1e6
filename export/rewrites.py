"""Graph rewrites applied at export, after conversion and before the parity gate.

tf2onnx's graphs of the convolutional autoencoders lose ~40% of ONNX Runtime's time in two places
(profiles in docs/BENCHMARKS.md, finding 6); each rewrite below computes the same function
faster, so the published graphs are the rewritten ones and the parity gate checks them against
Keras like any other.

- ``upsample_to_resize``: Keras 3 lowers ``UpSampling2D`` to ``repeat``, which tf2onnx turns
  into Unsqueeze/Tile/Reshape/Transpose plus a chain of Shape arithmetic. The Tiles are slow and,
  not being layout-aware, force NCHWc reorders around every upsampling. One ``Resize`` (nearest,
  integer scales) computes the same and keeps the blocked layout.
- ``upsampled_conv_to_subpixel``: the last layer, a one-output-channel 3x3 Conv on a 2x nearest
  upsampling, is the same as a Conv with four output channels (one per position in each 2x2
  block: the 3x3 kernel folds onto the source pixels it sees) on the map *before* upsampling,
  followed by DepthToSpace. A quarter of the positions, no 2x-sized intermediate map, no Resize:
  the tail of the denoising graph ran 3x faster than the depthwise form below (docs/BENCHMARKS.md).
- ``single_channel_conv_to_depthwise``: a Conv with one output channel runs in ONNX Runtime's
  blocked convolution 16 output channels at a time, so the last layer, 5-15% of the arithmetic,
  takes half the time. The same sum as a depthwise Conv (one filter per input channel), a
  ReduceSum over channels and the bias vectorises across the input channels instead.

Each rewrite finds its pattern by structure, then proves it: an upsampling region is run alone on
random inputs and must equal NumPy's ``repeat`` exactly, and the whole rewritten graph must give
the unrewritten graph's outputs on random inputs within ``REWRITE_ATOL``; a region that does not
prove out is left alone, a graph whose check fails is returned unchanged. A graph without the
patterns (the dense models) comes back unchanged, and so does a rewritten one (idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

UPSAMPLE_TO_RESIZE = "upsample_to_resize"
UPSAMPLED_CONV_TO_SUBPIXEL = "upsampled_conv_to_subpixel"
SINGLE_CHANNEL_CONV_TO_DEPTHWISE = "single_channel_conv_to_depthwise"
# Largest |rewritten - unrewritten| accepted on the check inputs: the depthwise form sums the
# same products in another order (float32 rounding, ~1e-6); nearest Resize copies exactly.
REWRITE_ATOL = 1e-5
CHECK_ITEMS = 8
CHECK_SEED = 0
# The ops tf2onnx emits for an UpSampling2D lowering (data path and its Shape arithmetic).
_UPSAMPLING_OPS = frozenset(
    {"Unsqueeze", "Tile", "Reshape", "Transpose", "Shape", "Gather", "Cast", "Slice", "Concat"}
)
# ReduceSum takes its axes as an input from opset 13 on, as an attribute before.
_REDUCE_AXES_INPUT_OPSET = 13


@dataclass(frozen=True)
class Rewritten:
    """A graph after the rewrites.

    Attributes:
        proto: the rewritten graph (the input itself when nothing applied).
        applied: rewrite name -> how many places it changed (only rewrites that changed some).
        max_abs_diff: largest |rewritten - unrewritten| on the check inputs (0 if unchanged).
    """

    proto: onnx.ModelProto
    applied: dict[str, int]
    max_abs_diff: float

    @property
    def names(self) -> list[str]:
        """The rewrites that changed the graph, in the order they ran."""
        return list(self.applied)


def rewrite_graph(proto: onnx.ModelProto, input_dims: tuple[int, ...]) -> Rewritten:
    """Apply every rewrite that matches, then check the result against ``proto``.

    Args:
        proto: a converted graph with one float32 input and one output (left unmodified).
        input_dims: one item's input shape, batch excluded (for the check inputs).
    """
    candidate = onnx.ModelProto()
    candidate.CopyFrom(proto)
    applied = {}
    for name, rewrite in REWRITES.items():
        count = rewrite(candidate)
        if count:
            applied[name] = count
    if not applied:
        return Rewritten(proto, {}, 0.0)
    drop_dead_nodes(candidate.graph)
    onnx.checker.check_model(candidate, full_check=True)
    diff = max_output_diff(proto, candidate, input_dims)
    if not diff <= REWRITE_ATOL:
        logger.warning(
            "%s: rewrites %s change the outputs by %.2e (> %g); graph left as converted",
            proto.graph.name, ", ".join(applied), diff, REWRITE_ATOL,
        )  # fmt: skip
        return Rewritten(proto, {}, 0.0)
    return Rewritten(candidate, applied, diff)


# -- UpSampling2D lowering -> Resize -------------------------------------------------------------


def replace_upsamplings(model: onnx.ModelProto) -> int:
    """Replace each proven upsampling region by one nearest ``Resize``; return how many.

    One region at a time: shape inference cannot see through tf2onnx's computed Reshape, so the
    input shape of the next upsampling is known only once the one before it is a Resize.
    """
    replaced = 0
    while _replace_first_upsampling(model):
        replaced += 1
        drop_dead_nodes(model.graph)
    return replaced


def _replace_first_upsampling(model: onnx.ModelProto) -> bool:
    graph = model.graph
    producers = _producers(graph)
    consumers = _consumers(graph)
    constants = {tensor.name for tensor in graph.initializer}
    graph_outputs = {value.name for value in graph.output}
    shapes = _inferred_shapes(model)
    for node in graph.node:
        if node.op_type not in _UPSAMPLING_OPS or len(node.output) != 1:
            continue
        users = consumers.get(node.output[0], [])
        if node.output[0] not in graph_outputs and all(
            user.op_type in _UPSAMPLING_OPS for user in users
        ):
            continue  # not the end of a region: the data goes on through more of these ops
        region = _region(node, producers, constants)
        if region is None:
            continue
        start, nodes = region
        scales = _proven_scales(model, nodes, start, node.output[0], shapes.get(start))
        if scales is None:
            continue
        scales_name = _unique_name(graph, f"aeq_resize_scales_{'x'.join(map(str, scales))}")
        graph.initializer.append(numpy_helper.from_array(np.array(scales, np.float32), scales_name))
        node.CopyFrom(
            helper.make_node(
                "Resize", [start, "", scales_name], [node.output[0]], name=f"{node.name}_resize",
                mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor",
            )
        )  # fmt: skip
        return True
    return False


def _region(
    end: Any, producers: dict[str, Any], constants: set[str]
) -> tuple[str, list[Any]] | None:
    """The nodes behind ``end`` made only of upsampling ops, and the one data tensor they start
    from; None unless there is exactly one such tensor and at least one Tile."""
    nodes, stack, seen, starts = [], [end], {id(end)}, set()
    while stack:
        node = stack.pop()
        nodes.append(node)
        for name in node.input:
            if not name or name in constants:
                continue
            source = producers.get(name)
            if source is None or source.op_type not in _UPSAMPLING_OPS:
                starts.add(name)  # a graph input or the output of a computing node
            elif id(source) not in seen:
                seen.add(id(source))
                stack.append(source)
    if len(starts) != 1 or not any(node.op_type == "Tile" for node in nodes):
        return None
    return starts.pop(), nodes


def _proven_scales(
    model: onnx.ModelProto, nodes: list[Any], start: str, end: str, shape: list[int] | None
) -> list[int] | None:
    """The integer scale per axis if the region is exactly nearest-neighbour upsampling of
    ``start`` (checked by running it alone on random input), else None."""
    if not shape or any(dim <= 0 for dim in shape[1:]):
        return None
    order = {id(node): index for index, node in enumerate(model.graph.node)}
    region = sorted(nodes, key=lambda node: order[id(node)])
    used = {name for node in region for name in node.input}
    sub = helper.make_model(
        helper.make_graph(
            region, "upsampling_region",
            [helper.make_tensor_value_info(start, onnx.TensorProto.FLOAT, ["n", *shape[1:]])],
            [helper.make_tensor_value_info(end, onnx.TensorProto.FLOAT, None)],
            [tensor for tensor in model.graph.initializer if tensor.name in used],
        ),
        opset_imports=list(model.opset_import),
    )  # fmt: skip
    sub.ir_version = model.ir_version
    data = np.random.default_rng(CHECK_SEED).random((2, *shape[1:]), dtype=np.float32)
    try:
        (output,) = _session(sub.SerializeToString()).run(None, {start: data})
    except Exception:  # noqa: BLE001 - a region ONNX Runtime cannot run alone is not ours
        return None
    if output.ndim != data.ndim:
        return None
    if any(o % i for o, i in zip(output.shape, data.shape, strict=True)):
        return None
    scales = [o // i for o, i in zip(output.shape, data.shape, strict=True)]
    expected = data
    for axis, scale in enumerate(scales):
        expected = np.repeat(expected, scale, axis=axis)
    if scales[0] != 1 or max(scales) < 2 or not np.array_equal(output, expected):
        return None
    return scales


# -- one-output-channel 3x3 Conv on a 2x nearest upsampling -> 4-channel Conv + DepthToSpace -----

_SUBPIXEL_SCALE = 2
_SUBPIXEL_CONV: dict[str, Any] = {"pads": [1, 1, 1, 1], "strides": [1, 1], "dilations": [1, 1]}
# ONNX Conv's attribute defaults (auto_pad NOTSET: the pads apply).
_CONV_DEFAULTS: dict[str, Any] = {
    "pads": [0, 0, 0, 0],
    "strides": [1, 1],
    "dilations": [1, 1],
    "auto_pad": b"NOTSET",
}


def subpixel_upsampled_convs(model: onnx.ModelProto) -> int:
    """Rewrite each 3x3 same-padded Conv with one output channel whose only input is a 2x nearest
    ``Resize`` as Conv(4 channels) + DepthToSpace on the Resize's input; return how many."""
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    producers, consumers = _producers(graph), _consumers(graph)
    nodes, count = [], 0
    for node in graph.node:
        weight = _single_channel_weight(node, weights)
        resize = producers.get(node.input[0]) if weight is not None else None
        if (
            weight is None
            or resize is None
            or not _is_subpixel_pair(resize, node, weight, weights, consumers)
        ):
            nodes.append(node)
            continue
        nodes += _subpixel_nodes(graph, node, resize.input[0], weight, weights)
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _is_subpixel_pair(
    resize: Any,
    conv: Any,
    weight: np.ndarray,
    weights: dict[str, Any],
    consumers: dict[str, list[Any]],
) -> bool:
    """``resize`` is a 2x nearest upsampling that feeds only ``conv``, a plain 3x3 same Conv."""
    if resize.op_type != "Resize" or len(consumers.get(resize.output[0], [])) != 1:
        return False
    return _is_nearest_2x(resize, weights) and _is_plain_3x3(conv, weight)


def _is_nearest_2x(resize: Any, weights: dict[str, Any]) -> bool:
    if len(resize.input) < 3 or resize.input[2] not in weights:
        return False
    scales = numpy_helper.to_array(weights[resize.input[2]]).tolist()
    modes = _attributes(resize)
    return (
        scales == [1, 1, _SUBPIXEL_SCALE, _SUBPIXEL_SCALE]
        and modes.get("mode") == b"nearest"
        and modes.get("coordinate_transformation_mode") == b"asymmetric"
        and modes.get("nearest_mode") == b"floor"
    )


def _is_plain_3x3(conv: Any, weight: np.ndarray) -> bool:
    """A 3x3 kernel, stride 1, no dilation, one pixel of zero padding on every side."""
    attributes = {**_CONV_DEFAULTS, **_attributes(conv)}
    return (
        weight.shape[2:] == (3, 3)
        and attributes["auto_pad"] == b"NOTSET"
        and all(attributes.get(key) == value for key, value in _SUBPIXEL_CONV.items())
    )


def subpixel_kernel(weight: np.ndarray) -> np.ndarray:
    """(1, C, 3, 3) kernel on a 2x nearest upsampling -> (4, C, 3, 3) on the source map.

    Output pixel (2i + a, 2j + b) sees upsampled rows 2i + a - 1 ... 2i + a + 1, which are source
    rows i + (a + r - 1) // 2 for kernel row r: the three kernel rows fold onto two source rows
    (likewise columns). Channel a * 2 + b holds block position (a, b), DepthToSpace's DCR order.
    """
    folded = np.zeros((_SUBPIXEL_SCALE**2, weight.shape[1], 3, 3), np.float32)
    for a in range(_SUBPIXEL_SCALE):
        for b in range(_SUBPIXEL_SCALE):
            for r in range(3):
                for c in range(3):
                    row = (a + r - 1) // _SUBPIXEL_SCALE + 1
                    col = (b + c - 1) // _SUBPIXEL_SCALE + 1
                    folded[a * _SUBPIXEL_SCALE + b, :, row, col] += weight[0, :, r, c]
    return folded


def _subpixel_nodes(
    graph: Any, conv: Any, source: str, weight: np.ndarray, weights: dict[str, Any]
) -> list[Any]:
    out = conv.output[0]
    names = {part: _unique_name(graph, f"{out}_aeq_{part}") for part in ("w4", "b4", "p")}
    graph.initializer.append(numpy_helper.from_array(subpixel_kernel(weight), names["w4"]))
    inputs = [source, names["w4"]]
    if len(conv.input) > 2 and conv.input[2]:
        bias = numpy_helper.to_array(weights[conv.input[2]]).astype(np.float32)
        graph.initializer.append(
            numpy_helper.from_array(np.repeat(bias, _SUBPIXEL_SCALE**2), names["b4"])
        )
        inputs.append(names["b4"])
    return [
        helper.make_node(
            "Conv",
            inputs,
            [names["p"]],
            name=f"{conv.name}_subpixel",
            **_SUBPIXEL_CONV,
        ),  # fmt: skip
        helper.make_node(
            "DepthToSpace",
            [names["p"]],
            [out],
            name=f"{conv.name}_depth_to_space",
            blocksize=_SUBPIXEL_SCALE,
            mode="DCR",
        ),  # fmt: skip
    ]


# -- one-output-channel Conv -> depthwise Conv + ReduceSum + bias ---------------------------------


def depthwise_single_channel_convs(model: onnx.ModelProto) -> int:
    """Rewrite each Conv with one output channel and several input channels; return how many."""
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes, count = [], 0
    for node in graph.node:
        weight = _single_channel_weight(node, weights)
        if weight is None:
            nodes.append(node)
            continue
        nodes += _depthwise_nodes(graph, node, weight, weights, opset)
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _single_channel_weight(node: Any, weights: dict[str, Any]) -> np.ndarray | None:
    """The (1, C, kh, kw) weight of a plain 2-D Conv with one output channel and C > 1."""
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
        return None
    attributes = _attributes(node)
    weight = numpy_helper.to_array(weights[node.input[1]])
    if attributes.get("group", 1) != 1 or weight.ndim != 4 or weight.shape[0] != 1:
        return None
    if weight.shape[1] < 2 or (len(node.input) > 2 and node.input[2] not in ("", *weights)):
        return None
    return weight


def _depthwise_nodes(
    graph: Any, node: Any, weight: np.ndarray, weights: dict[str, Any], opset: int
) -> list[Any]:
    channels, out = weight.shape[1], node.output[0]
    names = {part: _unique_name(graph, f"{out}_aeq_{part}") for part in ("dw", "d", "s", "b", "ax")}
    attributes = _attributes(node)
    depthwise = weight.reshape(channels, 1, *weight.shape[2:]).astype(np.float32)
    graph.initializer.append(numpy_helper.from_array(depthwise, names["dw"]))
    conv = helper.make_node(
        "Conv", [node.input[0], names["dw"]], [names["d"]], name=f"{node.name}_depthwise",
        **{**attributes, "group": channels},
    )  # fmt: skip
    has_bias = len(node.input) > 2 and node.input[2] != ""
    summed = names["s"] if has_bias else out
    if opset >= _REDUCE_AXES_INPUT_OPSET:
        graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), names["ax"]))
        reduce = helper.make_node("ReduceSum", [names["d"], names["ax"]], [summed], keepdims=1)
    else:
        reduce = helper.make_node("ReduceSum", [names["d"]], [summed], axes=[1], keepdims=1)
    if not has_bias:
        return [conv, reduce]
    bias = numpy_helper.to_array(weights[node.input[2]]).astype(np.float32).reshape(1, 1, 1, 1)
    graph.initializer.append(numpy_helper.from_array(bias, names["b"]))
    return [conv, reduce, helper.make_node("Add", [summed, names["b"]], [out])]


REWRITES: dict[str, Callable[[onnx.ModelProto], int]] = {
    UPSAMPLE_TO_RESIZE: replace_upsamplings,
    UPSAMPLED_CONV_TO_SUBPIXEL: subpixel_upsampled_convs,
    SINGLE_CHANNEL_CONV_TO_DEPTHWISE: depthwise_single_channel_convs,
}


# -- helpers -------------------------------------------------------------------------------------


def max_output_diff(
    original: onnx.ModelProto, rewritten: onnx.ModelProto, input_dims: tuple[int, ...]
) -> float:
    """Largest |rewritten - original| over the outputs on ``CHECK_ITEMS`` random inputs."""
    rng = np.random.default_rng(CHECK_SEED)
    inputs = rng.random((CHECK_ITEMS, *input_dims), dtype=np.float32)
    outputs = []
    for proto in (original, rewritten):
        session = _session(proto.SerializeToString())
        outputs.append(session.run(None, {session.get_inputs()[0].name: inputs})[0])
    if outputs[0].shape != outputs[1].shape:
        return float("inf")
    return float(np.abs(outputs[0] - outputs[1]).max())


def drop_dead_nodes(graph: Any) -> None:
    """Remove nodes, initializers and value infos nothing uses any more."""
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
    _keep(graph.initializer, lambda tensor: tensor.name in used)
    produced = {name for node in nodes for name in node.output}
    _keep(graph.value_info, lambda value: value.name in produced)


def _keep(field: Any, wanted: Callable[[Any], bool]) -> None:
    kept = [item for item in field if wanted(item)]
    del field[:]
    field.extend(kept)


def _session(model_bytes: bytes) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # a region run alone may warn about unused initializers
    return onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every tensor's shape that ONNX shape inference knows (unknown dims as -1)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return shapes


def _attributes(node: Any) -> dict[str, Any]:
    """A node's attributes by name, as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _producers(graph: Any) -> dict[str, Any]:
    return {output: node for node in graph.node for output in node.output}


def _consumers(graph: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _unique_name(graph: Any, base: str) -> str:
    taken = set(_names(graph))
    name, suffix = base, 1
    while name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    return name


def _names(graph: Any) -> Iterable[str]:
    yield from (tensor.name for tensor in graph.initializer)
    yield from (value.name for value in (*graph.input, *graph.output, *graph.value_info))
    for node in graph.node:
        yield from node.input
        yield from node.output
