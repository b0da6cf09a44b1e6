"""Small real ONNX stand-ins for every catalogued model, published into a real model repository.

Built with ``onnx.helper`` (no TensorFlow, milliseconds): for every catalogued model, graphs with
the published names, dtypes and dims of ``aeq export``'s graphs and simple known maths, so a test
can compute the expected output with numpy:

    encoder:      code = relu(flatten(image) @ W)                     (N, code_dim)
    decoder:      reconstruction = reshape(sigmoid(code @ V))           (N, *input_dims)
    autoencoder:  reconstruction = decoder(encoder(image))

The worker's unit tests serve them (``tests/unit/worker_support.py``), and the GPU check
(``aeq.bench.gpu``) runs on them where no real repository is at hand: their speed says nothing
about the real architectures'. Needs the ``onnx`` package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aeq.core.catalog import (
    CODE_TENSOR,
    IMAGE_TENSOR,
    MODELS,
    PIXELS_PER_IMAGE,
    RECONSTRUCTION_TENSOR,
    Graph,
    ModelSpec,
)
from aeq.repository import ModelRepository, ModelVersion

OPSET = 17


def weights(spec: ModelSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The encoder and decoder matrices of a tiny model."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(PIXELS_PER_IMAGE)
    encoder = rng.normal(0, scale, (PIXELS_PER_IMAGE, spec.code_dim)).astype(np.float32)
    decoder = rng.normal(0, 1.0, (spec.code_dim, PIXELS_PER_IMAGE)).astype(np.float32)
    return encoder, decoder


def _value(name: str, dims: tuple[int, ...]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *dims])


def _encode_nodes(spec: ModelSpec, source: str, target: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("Reshape", [source, "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["pre_code"]),
        helper.make_node("Relu", ["pre_code"], [target]),
    ]


def _decode_nodes(spec: ModelSpec, source: str, target: str) -> list[onnx.NodeProto]:
    return [
        helper.make_node("MatMul", [source, "V"], ["pre_image"]),
        helper.make_node("Sigmoid", ["pre_image"], ["flat_image"]),
        helper.make_node("Reshape", ["flat_image", "image_shape"], [target]),
    ]


def build_graph(spec: ModelSpec, graph: Graph, seed: int = 0) -> bytes:
    """Serialised ONNX bytes of one tiny graph."""
    encoder, decoder = weights(spec, seed)
    initializers = [
        numpy_helper.from_array(encoder, "W"),
        numpy_helper.from_array(decoder, "V"),
        numpy_helper.from_array(np.array([-1, PIXELS_PER_IMAGE], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([-1, *spec.input_dims], np.int64), "image_shape"),
    ]
    if graph is Graph.ENCODER:
        nodes = _encode_nodes(spec, IMAGE_TENSOR, CODE_TENSOR)
        inputs, outputs = (
            [_value(IMAGE_TENSOR, spec.input_dims)],
            [_value(CODE_TENSOR, (spec.code_dim,))],
        )
    elif graph is Graph.DECODER:
        nodes = _decode_nodes(spec, CODE_TENSOR, RECONSTRUCTION_TENSOR)
        inputs = [_value(CODE_TENSOR, (spec.code_dim,))]
        outputs = [_value(RECONSTRUCTION_TENSOR, spec.input_dims)]
    else:
        nodes = _encode_nodes(spec, IMAGE_TENSOR, "hidden") + _decode_nodes(
            spec, "hidden", RECONSTRUCTION_TENSOR
        )
        inputs = [_value(IMAGE_TENSOR, spec.input_dims)]
        outputs = [_value(RECONSTRUCTION_TENSOR, spec.input_dims)]
    used = {name for node in nodes for name in node.input}
    initializers = [tensor for tensor in initializers if tensor.name in used]
    proto = helper.make_model(
        helper.make_graph(nodes, f"{spec.name}_{graph.value}", inputs, outputs, initializers),
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _signature(spec: ModelSpec, graph: Graph) -> dict[str, object]:
    image = {"name": IMAGE_TENSOR, "dtype": "float32", "dims": [-1, *spec.input_dims]}
    code = {"name": CODE_TENSOR, "dtype": "float32", "dims": [-1, spec.code_dim]}
    output = {"name": RECONSTRUCTION_TENSOR, "dtype": "float32", "dims": [-1, *spec.input_dims]}
    if graph is Graph.ENCODER:
        return {"inputs": [image], "outputs": [code]}
    if graph is Graph.DECODER:
        return {"inputs": [code], "outputs": [output]}
    return {"inputs": [image], "outputs": [output]}


def publish_tiny(
    repository: ModelRepository, name: str, seed: int = 0, published_as: str | None = None
) -> ModelVersion:
    """Publish the tiny graphs of model ``name`` as the next version of ``published_as``
    (default: ``name``)."""
    spec = MODELS[name]
    folder = repository.root.parent / f".build-{name}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for graph in Graph:
        files[f"{graph.value}.onnx"] = path = folder / f"{graph.value}.onnx"
        path.write_bytes(build_graph(spec, graph, seed))
    config = {
        "graphs": {
            graph.value: {"file": f"{graph.value}.onnx", **_signature(spec, graph)}
            for graph in Graph
        },
        "code_dim": spec.code_dim,
        "input_dims": list(spec.input_dims),
        "opset": OPSET,
        "tiny_test_model_seed": seed,
        "architecture": name,
    }
    return repository.publish(published_as or name, files, config)


def tiny_repository(root: Path, seed: int = 0) -> ModelRepository:
    """A repository at ``root`` with version 1 of every catalogued model."""
    repository = ModelRepository(root)
    for name in MODELS:
        publish_tiny(repository, name, seed)
    return repository
