"""Keras -> ONNX: the three graphs of one autoencoder, with stable tensor names and a pinned opset.

This is the only module of ``export`` that imports TensorFlow and tf2onnx; the CLI imports it
inside the ``aeq export`` command, so ``aeq models`` and the worker never load them.

tf2onnx with Keras 3 names a graph's output after its last layer (``code_vector``,
``conv2d_1``…) and its dynamic batch dimension ``unk__123``; we rename both in the ONNX proto so
every published graph reads ``image`` / ``code`` -> ``code`` / ``reconstruction`` with a batch
dimension called ``batch``. Then ``export.rewrites`` replaces the two patterns of tf2onnx's
convolutional graphs that ONNX Runtime runs slowly (UpSampling2D's Tile chain, the one-channel
last Conv) with equivalent faster ones, before the parity gate sees the graphs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

from aeq.core.catalog import (
    CODE_TENSOR,
    IMAGE_TENSOR,
    RECONSTRUCTION_TENSOR,
    Graph,
    ModelSpec,
)
from export.onnx_tensors import tensor_info
from export.rewrites import rewrite_graph
from training.architectures import split

# tf2onnx 1.17 tests opsets 14-18 and ONNX Runtime >= 1.22 runs all of them; 17 has every op these
# graphs use (Conv, MaxPool, Resize, Gemm, Relu, Sigmoid, Reshape) and leaves one step of headroom.
ONNX_OPSET = 17
BATCH_DIM = "batch"

# Each graph's (input name, output name); the encoder/decoder code is always a flat vector.
GRAPH_TENSORS: dict[Graph, tuple[str, str]] = {
    Graph.AUTOENCODER: (IMAGE_TENSOR, RECONSTRUCTION_TENSOR),
    Graph.ENCODER: (IMAGE_TENSOR, CODE_TENSOR),
    Graph.DECODER: (CODE_TENSOR, RECONSTRUCTION_TENSOR),
}


@dataclass(frozen=True)
class ConvertedGraph:
    """One graph converted to ONNX, with the Keras model it came from (for the parity gate).

    Attributes:
        graph: which of the three graphs this is.
        keras_model: the Keras model that was converted.
        proto: the ONNX model, names fixed, rewritten and checked.
        rewrites: the ``export.rewrites`` rewrites that changed this graph, in order.
    """

    graph: Graph
    keras_model: Any
    proto: onnx.ModelProto
    rewrites: tuple[str, ...] = ()

    def signature(self) -> dict[str, Any]:
        """What ``config.json`` records of the graph besides its file and parity: ``inputs`` and
        ``outputs`` (name, dtype, dims; -1 = dynamic) and the ``graph_rewrites`` applied."""
        return {
            "inputs": [tensor_info(value).to_json() for value in self.proto.graph.input],
            "outputs": [tensor_info(value).to_json() for value in self.proto.graph.output],
            "graph_rewrites": list(self.rewrites),
        }


def keras_graphs(autoencoder: keras.Model, spec: ModelSpec) -> dict[Graph, keras.Model]:
    """The three Keras models to export: the autoencoder and its encoder/decoder halves."""
    encoder, decoder = split(autoencoder, spec)
    return {Graph.AUTOENCODER: autoencoder, Graph.ENCODER: encoder, Graph.DECODER: decoder}


def input_dims(graph: Graph, spec: ModelSpec) -> tuple[int, ...]:
    """One item's shape at ``graph``'s input, batch excluded."""
    return (spec.code_dim,) if graph is Graph.DECODER else spec.input_dims


def convert_model(
    autoencoder: keras.Model, spec: ModelSpec, opset: int = ONNX_OPSET
) -> dict[Graph, ConvertedGraph]:
    """Convert an autoencoder's three graphs to ONNX and apply ``export.rewrites``.

    Args:
        autoencoder: a trained model built by ``training.architectures.build(spec.name)``.
        spec: the model's catalogue entry.
        opset: ONNX opset to target.

    Returns:
        One ``ConvertedGraph`` per ``Graph``, each passed through ``onnx.checker``.
    """
    converted = {}
    for graph, model in keras_graphs(autoencoder, spec).items():
        # Both checked in full: the converted graph by convert_graph, a rewritten one by
        # rewrite_graph.
        rewritten = rewrite_graph(convert_graph(model, graph, spec, opset), input_dims(graph, spec))
        converted[graph] = ConvertedGraph(graph, model, rewritten.proto, tuple(rewritten.names))
    return converted


def convert_graph(
    model: keras.Model, graph: Graph, spec: ModelSpec, opset: int = ONNX_OPSET
) -> onnx.ModelProto:
    """Convert one Keras model to ONNX with ``graph``'s stable input/output names (as tf2onnx
    makes it: ``convert_model`` adds the rewrites).

    Raises:
        ValueError: the model does not have exactly one input and one output, or the stable
            output name is already used inside the converted graph.
    """
    input_name, output_name = GRAPH_TENSORS[graph]
    signature = [tf.TensorSpec((None, *input_dims(graph, spec)), tf.float32, name=input_name)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    if len(proto.graph.input) != 1 or len(proto.graph.output) != 1:
        raise ValueError(f"{spec.name} {graph}: expected one input and one output")
    if proto.graph.input[0].name != input_name:
        rename_tensor(proto, proto.graph.input[0].name, input_name)
    rename_tensor(proto, proto.graph.output[0].name, output_name)
    name_batch_dimension(proto)
    proto.graph.name = f"{spec.name}_{graph.value}"
    onnx.checker.check_model(proto, full_check=True)
    return proto


def rename_tensor(proto: onnx.ModelProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` everywhere in ``proto``'s main graph.

    Raises:
        ValueError: ``new`` already names another tensor (renaming would merge two tensors).
    """
    if old == new:
        return
    graph = proto.graph
    if new in _tensor_names(graph):
        raise ValueError(f"cannot rename {old!r} to {new!r}: the graph already has a {new!r}")
    for node in graph.node:
        _replace(node.input, old, new)
        _replace(node.output, old, new)
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def name_batch_dimension(proto: onnx.ModelProto) -> None:
    """Call the first (dynamic) dimension of every graph input and output ``batch``."""
    for value in (*proto.graph.input, *proto.graph.output):
        first = value.type.tensor_type.shape.dim[0]
        if not first.HasField("dim_value"):
            first.dim_param = BATCH_DIM


def _replace(names: Any, old: str, new: str) -> None:
    for index, name in enumerate(names):
        if name == old:
            names[index] = new


def _tensor_names(graph: onnx.GraphProto) -> set[str]:
    names = {value.name for value in (*graph.input, *graph.output, *graph.value_info)}
    names.update(initializer.name for initializer in graph.initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def serialized(graphs: Mapping[Graph, ConvertedGraph]) -> dict[Graph, bytes]:
    """Each graph's ONNX bytes, as written to disk and loaded by ONNX Runtime."""
    return {graph: converted.proto.SerializeToString() for graph, converted in graphs.items()}


def library_versions() -> dict[str, str]:
    """Versions of the libraries that trained, converted and checked a model."""
    import onnxruntime

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }
