"""Export's graph rewrites on real converted graphs: same outputs, fewer and faster nodes.

The graphs are the five architectures untrained (seeded), converted by ``export.convert`` as
``aeq export`` does; the rewritten graphs are compared with the unrewritten ones and with Keras.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from aeq.core.catalog import MODELS, PARITY_ATOL, Graph
from export import rewrites
from export.rewrites import (
    REWRITE_ATOL,
    SINGLE_CHANNEL_CONV_TO_DEPTHWISE,
    UPSAMPLE_TO_RESIZE,
    UPSAMPLED_CONV_TO_SUBPIXEL,
    rewrite_graph,
)

# UpSampling2D layers in each convolutional architecture's autoencoder (docs/TRAINING.md).
UPSAMPLINGS = {"conv": 3, "denoising": 2}
CHECK_IMAGES = 16


@pytest.fixture(scope="module")
def models():
    """Per architecture: the Keras model and each graph as tf2onnx converts it (unrewritten)."""
    import keras

    from export.convert import convert_graph, keras_graphs
    from training.architectures import build

    keras.utils.set_random_seed(0)
    found = {}
    for name in MODELS:
        graphs = keras_graphs(build(name), MODELS[name])
        found[name] = {
            graph: (model, convert_graph(model, graph, MODELS[name]))
            for graph, model in graphs.items()
        }
    return found


def run(proto: onnx.ModelProto, inputs: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def check_inputs(name: str, graph: Graph) -> np.ndarray:
    spec = MODELS[name]
    dims = (spec.code_dim,) if graph is Graph.DECODER else spec.input_dims
    return np.random.default_rng(1).random((CHECK_IMAGES, *dims), dtype=np.float32)


def ops(proto: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in proto.graph.node]


@pytest.mark.parametrize("name", sorted(UPSAMPLINGS))
@pytest.mark.parametrize("graph", [Graph.AUTOENCODER, Graph.DECODER])
def test_convolutional_graphs_are_rewritten_with_the_same_outputs(models, name, graph):
    keras_model, original = models[name][graph]
    inputs = check_inputs(name, graph)

    result = rewrite_graph(original, inputs.shape[1:])

    assert result.applied == {UPSAMPLE_TO_RESIZE: UPSAMPLINGS[name], UPSAMPLED_CONV_TO_SUBPIXEL: 1}
    rewritten = run(result.proto, inputs)
    assert np.abs(rewritten - run(original, inputs)).max() <= REWRITE_ATOL
    keras_outputs = np.asarray(keras_model(inputs, training=False))
    assert np.abs(rewritten.reshape(keras_outputs.shape) - keras_outputs).max() <= PARITY_ATOL
    found = ops(result.proto)
    # The last upsampling and the one-channel Conv after it became Conv + DepthToSpace.
    assert found.count("Resize") == UPSAMPLINGS[name] - 1 and "Tile" not in found
    assert found.count("DepthToSpace") == 1 and "ReduceSum" not in found
    assert len(found) < len(ops(original)) // 2
    onnx.checker.check_model(result.proto, full_check=True)


@pytest.mark.parametrize("name", sorted(UPSAMPLINGS))
def test_a_rewritten_graph_is_left_as_it_is(models, name):
    _, original = models[name][Graph.AUTOENCODER]
    once = rewrite_graph(original, MODELS[name].input_dims)

    again = rewrite_graph(once.proto, MODELS[name].input_dims)

    assert again.applied == {} and again.proto.SerializeToString() == once.proto.SerializeToString()


def test_the_original_graph_is_not_modified(models):
    _, original = models["conv"][Graph.AUTOENCODER]
    before = original.SerializeToString()
    rewrite_graph(original, MODELS["conv"].input_dims)
    assert original.SerializeToString() == before


@pytest.mark.parametrize("name", ["vanilla", "multilayer", "sparse", "conv", "denoising"])
def test_graphs_without_the_patterns_are_unchanged(models, name):
    graphs = [Graph.ENCODER] if name in UPSAMPLINGS else list(Graph)
    for graph in graphs:
        _, original = models[name][graph]
        result = rewrite_graph(original, check_inputs(name, graph).shape[1:])
        assert result.applied == {} and result.proto is original and result.max_abs_diff == 0


def _tiny_graph(nodes, initializers, output_shape):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", [x], [y], initializers),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    return model


def test_a_tile_that_is_not_an_upsampling_is_left_alone():
    # np.tile order (a b a b), not nearest-neighbour repeat (a a b b): same shapes, other values.
    model = _tiny_graph(
        [
            helper.make_node("Tile", ["x", "reps"], ["t"]),
            helper.make_node("Relu", ["t"], ["y"]),
        ],
        [numpy_helper.from_array(np.array([1, 1, 2, 2], np.int64), "reps")],
        ["n", 2, 6, 6],
    )
    assert rewrites.replace_upsamplings(model) == 0
    assert ops(model) == ["Tile", "Relu"]


def test_a_conv_with_one_input_channel_or_groups_is_left_alone():
    weight = np.ones((1, 1, 3, 3), np.float32)
    model = _tiny_graph(
        [
            helper.make_node("Conv", ["x", "w2"], ["c"], group=2),
            helper.make_node("Conv", ["c", "w1"], ["y"]),
        ],
        [
            numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w2"),
            numpy_helper.from_array(weight, "w1"),
        ],
        ["n", 1, 1, 1],
    )
    assert rewrites.depthwise_single_channel_convs(model) == 0


def test_a_rewrite_that_changes_the_outputs_is_dropped(models, monkeypatch):
    def wrong(model):
        # Claims a change and really makes one: doubles the first weight tensor.
        first = model.graph.initializer[0]
        first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) * 2, first.name))
        return 1

    monkeypatch.setattr(rewrites, "REWRITES", {"wrong": wrong})
    _, original = models["vanilla"][Graph.AUTOENCODER]

    result = rewrite_graph(original, MODELS["vanilla"].input_dims)

    assert result.applied == {} and result.proto is original


def _upsampled_conv(bias: bool, scales=(1.0, 1.0, 2.0, 2.0), pads=(1, 1, 1, 1)):
    """x (n, 3, 5, 4) -> 2x nearest Resize -> 3x3 Conv with one output channel -> y."""
    weight = np.random.default_rng(3).standard_normal((1, 3, 3, 3)).astype(np.float32)
    conv_inputs = ["u", "w", "b"] if bias else ["u", "w"]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 5, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "h", "w"])
    resize = helper.make_node(
        "Resize", ["x", "", "s"], ["u"], mode="nearest",
        coordinate_transformation_mode="asymmetric", nearest_mode="floor",
    )  # fmt: skip
    conv = helper.make_node("Conv", conv_inputs, ["y"], kernel_shape=[3, 3], pads=list(pads))
    initializers = [
        numpy_helper.from_array(np.array(scales, np.float32), "s"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array([0.25], np.float32), "b"),
    ]
    model = helper.make_model(
        helper.make_graph([resize, conv], "up", [x], [y], initializers),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    return model


@pytest.mark.parametrize("bias", [True, False])
def test_subpixel_gives_the_upsampled_convs_outputs_on_a_small_odd_map(bias):
    original = _upsampled_conv(bias)
    inputs = np.random.default_rng(4).random((3, 3, 5, 4), dtype=np.float32)

    result = rewrite_graph(original, inputs.shape[1:])

    assert result.applied == {UPSAMPLED_CONV_TO_SUBPIXEL: 1}
    assert ops(result.proto) == ["Conv", "DepthToSpace"]
    assert np.abs(run(result.proto, inputs) - run(original, inputs)).max() <= 1e-6


@pytest.mark.parametrize(
    "variant", [{"scales": (1.0, 1.0, 3.0, 3.0)}, {"pads": (0, 0, 0, 0)}, {"pads": (1, 0, 1, 0)}]
)
def test_subpixel_leaves_other_scales_and_paddings_alone(variant):
    model = _upsampled_conv(bias=True, **variant)
    assert rewrites.subpixel_upsampled_convs(model) == 0
    assert ops(model) == ["Resize", "Conv"]


def test_a_one_channel_conv_without_an_upsampling_still_becomes_depthwise():
    model = _tiny_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        [numpy_helper.from_array(np.ones((1, 2, 3, 3), np.float32), "w")],
        ["n", 1, 3, 3],
    )
    result = rewrite_graph(model, (2, 3, 3))
    assert result.applied == {SINGLE_CHANNEL_CONV_TO_DEPTHWISE: 1}
