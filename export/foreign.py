"""ONNX autoencoders made elsewhere (PyTorch, ...), read and checked for ``aeq export --onnx``.

    ae.onnx [encoder.onnx decoder.onnx]
        -> read_model: each file through onnx.checker and strict shape inference; one float32
           input and one float32 output, 28x28 gray in a layout aeq serves (export.geometry)
        -> refuse_other_kind: NAME's latest version must be an ONNX model of the same kind
        -> export.run_check: ONNX Runtime on real MNIST test images, finite outputs of the
           declared shapes
        -> publish_foreign: <repository>/<NAME>/<next version>/

A file is published byte for byte (the sha256 ``config.json`` records for the graph is the one of
the file the user gave), unless it keeps its weights in files beside it (``torch.onnx.export``'s
default): a worker loads one file per graph, so those weights are put inside, and ``source``
records the sha256 of every file read. TensorFlow-free; imports onnx (the CLI imports this module
inside ``aeq export``, and a worker never does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from aeq.core.catalog import FOREIGN_ARCHITECTURE, Graph, check_model_name
from aeq.core.errors import InputError, ModelNotFoundError, UsageError
from aeq.core.pixel_scale import PixelScale
from aeq.repository import ModelRepository, ModelVersion, TensorInfo, sha256_bytes, sha256_file
from export.geometry import dims_text, image_geometry, item_size, served_text
from export.onnx_tensors import tensor_info
from export.publishing import graph_file, publish
from export.run_check import RunCheck, error_line, run_check

# The operator sets onnx knows every operator of; a graph using another domain's (ONNX Runtime's
# com.microsoft contrib ops) is shape-inferred without strict mode, which fails on unknown ops.
_STANDARD_DOMAINS = frozenset({"", "ai.onnx"})


@dataclass(frozen=True)
class ForeignGraph:
    """One checked ONNX file and what ``config.json`` records of it.

    Attributes:
        graph: the role it is published in.
        path: the file as given.
        data: the bytes published: the file's own, or (weights kept in files beside it, as
            ``torch.onnx.export`` writes by default) the model with those weights put inside.
        file_sha256: the sha256 of the file as given.
        weight_files: the files beside it its weights came from, with their sha256.
        input: its one input (name, element type, dims after shape inference; -1 = open).
        output: its one output.
        opset: the default domain's opset it imports.
        producer: the tool that wrote it (``pytorch 2.13.0``), as the file says.
    """

    graph: Graph
    path: Path
    data: bytes
    file_sha256: str
    weight_files: Mapping[str, str]
    input: TensorInfo
    output: TensorInfo
    opset: int | None
    producer: str

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the graph takes, where its first input dim is a number."""
        return self.input.fixed_batch

    def signature(self) -> dict[str, Any]:
        """The graph's entry under ``graphs`` in ``config.json``."""
        return {
            "file": graph_file(self.graph),
            "inputs": [self.input.to_json()],
            "outputs": [self.output.to_json()],
        }

    def source(self) -> dict[str, Any]:
        """Where the graph came from, for ``config.json``'s ``source``."""
        source: dict[str, Any] = {"file": self.path.name, "sha256": self.file_sha256}
        if self.weight_files:
            source["weight_files"] = dict(self.weight_files)
        return {**source, "producer": self.producer, "opset": self.opset}


@dataclass(frozen=True)
class ForeignModel:
    """An autoencoder made elsewhere, checked and ready to publish under ``name``."""

    name: str
    scale: PixelScale
    graphs: Mapping[Graph, ForeignGraph]

    @property
    def has_codes(self) -> bool:
        """Published with an encoder and a decoder (so it serves encode and decode too)."""
        return Graph.ENCODER in self.graphs

    @property
    def code_dims(self) -> tuple[int, ...]:
        """The encoder output's shape per item (empty without an encoder)."""
        encoder = self.graphs.get(Graph.ENCODER)
        return encoder.output.dims[1:] if encoder else ()

    @property
    def code_dim(self) -> int | None:
        """Values per code (``None`` without an encoder: the model has no code)."""
        return math.prod(self.code_dims) if self.has_codes else None

    @property
    def kind(self) -> str:
        """What the model is, as a refusal names it."""
        return _kind(self.has_codes)


@dataclass(frozen=True)
class ForeignResult:
    """What ``aeq export --onnx`` published and measured."""

    version: ModelVersion
    model: ForeignModel
    check: RunCheck
    sizes: Mapping[str, int]


def read_model(
    name: str,
    autoencoder: Path,
    scale: PixelScale,
    encoder: Path | None = None,
    decoder: Path | None = None,
) -> ForeignModel:
    """Read and check the files of an autoencoder made elsewhere.

    Raises:
        UsageError: a name aeq's own models keep, or an encoder without a decoder (or back).
        InputError: a file is missing, not ONNX, fails the checker or shape inference, or has
            a signature aeq does not serve (the message says what it has).
    """
    check_model_name(name, FOREIGN_ARCHITECTURE)
    if (encoder is None) != (decoder is None):
        raise UsageError("--encoder and --decoder go together: give both, or neither")
    graphs = {Graph.AUTOENCODER: read_graph(autoencoder, Graph.AUTOENCODER)}
    if encoder is not None and decoder is not None:
        graphs[Graph.ENCODER] = read_graph(encoder, Graph.ENCODER)
        graphs[Graph.DECODER] = read_graph(decoder, Graph.DECODER)
        _check_code_sizes(graphs[Graph.ENCODER], graphs[Graph.DECODER])
    return ForeignModel(name, scale, graphs)


def read_graph(path: Path, graph: Graph) -> ForeignGraph:
    """Read one ONNX file in the role ``graph`` and check it as ``read_model`` says."""
    file_bytes = _read_bytes(path)
    proto = _parsed(path, file_bytes)
    weight_files = _inline_weights(path, proto)
    data = proto.SerializeToString() if weight_files else file_bytes
    proto = _checked(path, proto)
    given, made = _one_input_and_output(path, proto)
    _check_geometry(path, graph, given, made)
    opsets = {entry.domain: entry.version for entry in proto.opset_import}
    producer = " ".join(part for part in (proto.producer_name, proto.producer_version) if part)
    return ForeignGraph(
        graph=graph,
        path=path,
        data=data,
        file_sha256=sha256_bytes(file_bytes),
        weight_files=weight_files,
        input=given,
        output=made,
        opset=opsets.get("", opsets.get("ai.onnx")),
        producer=producer or "unknown",
    )


def refuse_other_kind(model: ForeignModel, repository: ModelRepository) -> None:
    """Raise ``UsageError`` if the latest version of ``model.name`` is not an ONNX model of the
    same kind (with or without encoder and decoder): an upload must not silently replace a
    model aeq trained, nor take encode and decode away from the commands that run the latest."""
    try:
        latest = repository.get(model.name)
    except ModelNotFoundError:  # nothing published under this name yet
        return
    if latest.config.get("architecture") == FOREIGN_ARCHITECTURE:
        if (Graph.ENCODER in latest.graphs) == model.has_codes:
            return
        what = _kind(Graph.ENCODER in latest.graphs)
    else:
        trained_on = latest.config.get("training", {}).get("data_source") or "unrecorded data"
        what = f"a {latest.config.get('architecture', 'Keras')} model aeq trained on {trained_on}"
    raise UsageError(
        f"{latest.label} in {repository.root} is {what}, this is {model.kind}: publish it "
        f"under another name or into another repository (--repository), or pass --other-data to "
        f"publish it as the next {model.name}"
    )


def publish_foreign(
    model: ForeignModel, repository: ModelRepository, images: np.ndarray, data_source: str
) -> ForeignResult:
    """Run ``model`` on ``images`` (``export.run_check``) and publish it as the next version.

    Args:
        model: what ``read_model`` checked.
        repository: where to publish.
        images: MNIST test images, floats in [0, 1] (as ``load_parity_images`` gives them).
        data_source: where ``images`` came from, recorded in ``config.json``.

    Raises:
        InputError: a graph does not load or run in ONNX Runtime, or gives outputs that are not
            finite or not of its declared shape; nothing is published.
    """
    check = run_check(model.graphs, model.scale, images)
    config = version_config(model, {**check.to_json(), "data_source": data_source})
    onnx_bytes = {graph: item.data for graph, item in model.graphs.items()}
    version = publish(repository, model.name, onnx_bytes, config)
    sizes = {file: (version.path / file).stat().st_size for file in version.config["sha256"]}
    return ForeignResult(version, model, check, sizes)


def version_config(model: ForeignModel, check: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json`` of a model made elsewhere (the repository adds model, version,
    published_at and sha256)."""
    import onnxruntime

    autoencoder = model.graphs[Graph.AUTOENCODER]
    return {
        "graphs": {graph.value: item.signature() for graph, item in model.graphs.items()},
        "architecture": FOREIGN_ARCHITECTURE,
        # No encoder, no code: null, which ModelVersion.code_dim reads as 0.
        "code_dim": model.code_dim,
        "code_dims": list(model.code_dims),
        "input_dims": list(autoencoder.input.dims[1:]),
        "pixel_scale": model.scale.value,
        "opset": autoencoder.opset,
        "source": {graph.value: item.source() for graph, item in model.graphs.items()},
        "run_check": dict(check),
        "libraries": {
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
        },
    }


def _kind(has_codes: bool) -> str:
    return f"an ONNX model {'with' if has_codes else 'without'} encoder and decoder"


def _read_bytes(path: Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not an ONNX file") from None
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    if not data:
        raise InputError(f"{path} is empty (0 bytes)")
    return data


def _parsed(path: Path, data: bytes) -> onnx.ModelProto:
    try:
        proto = onnx.load_model_from_string(data)
    except DecodeError:
        raise InputError(f"{path} is not an ONNX model (it does not parse as one)") from None
    if not proto.ir_version or not proto.HasField("graph"):
        raise InputError(f"{path} is not an ONNX model (no IR version or graph)")
    return proto


def _inline_weights(path: Path, proto: onnx.ModelProto) -> dict[str, str]:
    """Put weights kept in files beside ``path`` into ``proto`` (a worker loads one file per
    graph); return those files' names and sha256 (empty: the weights are inside already)."""
    external = [t for t in proto.graph.initializer if external_data_helper.uses_external_data(t)]
    locations = sorted({external_data_helper.ExternalDataInfo(t).location for t in external})
    folder = Path(path).parent
    for location in locations:
        if Path(location).name != location:  # only files beside the model, never elsewhere
            raise InputError(f"{path} keeps weights in {location!r}, outside its own folder")
    try:
        external_data_helper.load_external_data_for_model(proto, str(folder))
        return {location: sha256_file(folder / location) for location in locations}
    except (OSError, ValueError, onnx.checker.ValidationError) as error:
        raise InputError(
            f"{path} keeps its weights in {', '.join(locations)} beside it, which cannot be "
            f"read: {error_line(error)}"
        ) from None


def _checked(path: Path, proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` through ``onnx.checker`` and shape inference (strict where onnx knows every
    operator), with every tensor's shape filled in."""
    strict = {entry.domain for entry in proto.opset_import} <= _STANDARD_DOMAINS
    try:
        onnx.checker.check_model(proto)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=strict)
    except onnx.checker.ValidationError as error:
        raise InputError(f"{path} fails onnx.checker: {error_line(error)}") from None
    except onnx.shape_inference.InferenceError as error:
        raise InputError(f"{path} fails ONNX shape inference: {error_line(error)}") from None


def _one_input_and_output(path: Path, proto: onnx.ModelProto) -> tuple[TensorInfo, TensorInfo]:
    """The graph's one input and one output, both float32."""
    weights = {tensor.name for tensor in proto.graph.initializer}
    # Graphs of old IR versions list their weights as inputs too; only the others are fed.
    inputs = [tensor_info(v) for v in proto.graph.input if v.name not in weights]
    outputs = [tensor_info(value) for value in proto.graph.output]
    if len(inputs) != 1 or len(outputs) != 1:
        raise InputError(
            f"{path} has {_tensors_text(inputs, 'input')} and "
            f"{_tensors_text(outputs, 'output')}; aeq serves "
            f"{served_text()}, one input and one output"
        )
    for tensor in (*inputs, *outputs):
        if tensor.dtype != "float32":
            raise InputError(
                f"{path}: {tensor.name!r} is {tensor.dtype}; aeq serves float32 graphs"
            )
    return inputs[0], outputs[0]


def _check_geometry(path: Path, graph: Graph, given: TensorInfo, made: TensorInfo) -> None:
    """Images in and out (autoencoder), images in (encoder), images out (decoder); a code's
    size must be known."""
    takes_images = graph is not Graph.DECODER
    gives_images = graph is not Graph.ENCODER
    fits = (image_geometry(given.dims) if takes_images else item_size(given.dims)) and (
        image_geometry(made.dims) if gives_images else item_size(made.dims)
    )
    if not fits:
        role = {Graph.ENCODER: " (image -> code)", Graph.DECODER: " (code -> image)"}
        raise InputError(
            f"{path}{role.get(graph, '')} has input {_tensor_text(given)} and output "
            f"{_tensor_text(made)}; aeq serves {served_text()}"
        )


def _check_code_sizes(encoder: ForeignGraph, decoder: ForeignGraph) -> None:
    made, taken = item_size(encoder.output.dims), item_size(decoder.input.dims)
    if made != taken:
        raise InputError(
            f"{encoder.path} makes codes of {made} values ({_tensor_text(encoder.output)}), "
            f"{decoder.path} decodes {taken} ({_tensor_text(decoder.input)})"
        )


def _tensor_text(tensor: TensorInfo) -> str:
    return f"{tensor.name!r} {dims_text(tensor.dims)}"


def _tensors_text(tensors: list[TensorInfo], kind: str) -> str:
    """``2 inputs ('a' [N, 784], 'b' [N, 784])``, ``no outputs``."""
    if not tensors:
        return f"no {kind}s"
    listed = ", ".join(_tensor_text(tensor) for tensor in tensors)
    return f"{len(tensors)} {kind}{'s' if len(tensors) > 1 else ''} ({listed})"
