"""A Triton Inference Server model repository, written from aeq's.

aeq publishes three graphs per model version; Triton serves one graph per model, so each model
and graph becomes the Triton model ``<model>_<graph>``, with every chosen version beside its
``config.pbtxt`` (ONNX Runtime backend):

    OUT_DIR/<model>_<graph>/config.pbtxt
                           <version>/model.onnx

Two aeq models never give the same Triton name: the graph names (``autoencoder``, ``encoder``,
``decoder``) are not ``_``-suffixes of one another. Each graph's bytes are copied only after
``ModelVersion.read_verified`` matched them to the sha256 recorded at publishing. The inputs,
outputs, element types and dims of ``config.pbtxt`` are read from the ONNX graph itself, not
from ``config.json``: Triton checks the config against the graph, so the graph is what must
agree. The text is written here, without protobuf; the tests parse it with Triton's own
``ModelConfig`` schema. The whole tree is built in a hidden folder beside OUT_DIR and renamed
into place (``aeq.core.durable.staged_folder``), so OUT_DIR is never half written.

Needs the ``onnx`` package (the ``train`` extra), imported with this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from aeq.core.catalog import Graph, check_model_name
from aeq.core.durable import fsync_folder, staged_folder
from aeq.core.errors import ModelError, ModelNotFoundError, OutputExistsError, UsageError
from aeq.repository import ModelRepository, ModelVersion

TRITON_PLATFORM = "onnxruntime_onnx"
TRITON_CONFIG_FILE = "config.pbtxt"
TRITON_MODEL_FILE = "model.onnx"
# aeq's graphs take any batch size (their first dimension is dynamic), so the limit is Triton's
# choice: the largest batch a client may send and dynamic batching may form. 1024 is the batch
# docs/BENCHMARKS.md measures ONNX Runtime's throughput at, and it keeps one batch's largest
# activation modest (denoising: 28x28x32 float32 per image, about 100 MB at 1024), so one
# request never asks an instance for gigabytes.
TRITON_MAX_BATCH_SIZE = 1024
# A graph whose first dimension is fixed cannot be batched by Triton: max_batch_size 0 says so,
# and its dims are then the full shape.
NO_BATCHING = 0
# A dimension the graph leaves open (a dim_param such as 'batch', or none given).
DYNAMIC_DIM = -1
START_COMMAND = "tritonserver --model-repository"

# ONNX element types (TensorProto.DataType names) as Triton's DataType names.
_TRITON_TYPES = {
    "FLOAT": "TYPE_FP32",
    "DOUBLE": "TYPE_FP64",
    "FLOAT16": "TYPE_FP16",
    "BFLOAT16": "TYPE_BF16",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "BOOL": "TYPE_BOOL",
    "STRING": "TYPE_STRING",
}


@dataclass(frozen=True)
class TritonTensor:
    """One graph input or output as Triton sees it.

    Attributes:
        name: the tensor's name in the ONNX graph.
        data_type: Triton's name for its element type (``TYPE_FP32``, ...).
        dims: its full shape in the graph, batch included; ``-1`` where the graph leaves it open.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]

    def describe(self) -> str:
        """``image[-1,28,28,1] FP32``: name, full shape and element type, for people."""
        shape = ",".join(str(dim) for dim in self.dims)
        return f"{self.name}[{shape}] {self.data_type.removeprefix('TYPE_')}"


@dataclass(frozen=True)
class TritonSignature:
    """A graph's inputs and outputs, read from the ONNX graph."""

    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]

    @property
    def batched(self) -> bool:
        """Whether Triton may batch the graph: every input and output has an open first dim."""
        return all(tensor.dims[:1] == (DYNAMIC_DIM,) for tensor in self.inputs + self.outputs)

    @property
    def max_batch_size(self) -> int:
        return TRITON_MAX_BATCH_SIZE if self.batched else NO_BATCHING

    def describe(self) -> str:
        """``image[-1,784] FP32 -> code[-1,64] FP32``, for people."""
        inputs = ", ".join(tensor.describe() for tensor in self.inputs)
        outputs = ", ".join(tensor.describe() for tensor in self.outputs)
        return f"{inputs} -> {outputs}"


@dataclass(frozen=True)
class TritonModel:
    """One Triton model written: one graph of one aeq model, at the versions chosen."""

    model: str
    graph: Graph
    versions: tuple[int, ...]
    signature: TritonSignature

    @property
    def name(self) -> str:
        """The Triton model's name (and folder): ``<model>_<graph>``."""
        return triton_name(self.model, self.graph)

    @property
    def versions_text(self) -> str:
        """``version 1`` or ``versions 1, 2``, for people."""
        listed = ", ".join(str(version) for version in self.versions)
        return f"version{'s' if len(self.versions) > 1 else ''} {listed}"

    def config_text(self) -> str:
        """The model's ``config.pbtxt``, in protobuf text format."""
        signature = self.signature
        lines = [
            f"# aeq model {self.model}, {self.graph} graph, {self.versions_text}: 'aeq triton'.",
            f"name: {_quoted(self.name)}",
            f"platform: {_quoted(TRITON_PLATFORM)}",
            f"max_batch_size: {signature.max_batch_size}",
            "version_policy: { all { } }",
            _tensors_text("input", signature.inputs, signature.batched),
            _tensors_text("output", signature.outputs, signature.batched),
        ]
        if signature.batched:
            # Requests that arrive together run as one batch, up to max_batch_size.
            lines.append("dynamic_batching { }")
        return "\n".join(lines) + "\n"

    def to_json(self, out_dir: Path) -> dict[str, Any]:
        """The plain data ``aeq triton --json`` prints for this model."""
        return {
            "name": self.name,
            "model": self.model,
            "graph": self.graph.value,
            "versions": list(self.versions),
            "max_batch_size": self.signature.max_batch_size,
            "inputs": [_tensor_json(tensor) for tensor in self.signature.inputs],
            "outputs": [_tensor_json(tensor) for tensor in self.signature.outputs],
            "path": str(out_dir / self.name),
        }


def triton_name(model: str, graph: Graph) -> str:
    """The Triton model serving ``graph`` of aeq model ``model``."""
    return f"{model}_{graph.value}"


def start_command(out_dir: Path) -> str:
    """How to start Triton on a repository this module wrote."""
    return f"{START_COMMAND} {out_dir.resolve()}"


def parse_selection(items: Sequence[str]) -> dict[str, set[int] | None]:
    """``MODEL`` and ``MODEL@VERSION`` items as model -> versions (``None``: every version).

    Raises:
        UsageError: a name that cannot be a model's, or a version that is not a positive integer.
    """
    chosen: dict[str, set[int] | None] = {}
    for item in items:
        model, at, version = item.partition("@")
        check_model_name(model)
        if not at:
            chosen[model] = None
            continue
        if not (version.isascii() and version.isdigit() and int(version) > 0):
            raise UsageError(f"{item!r}: the version after '@' must be a positive integer")
        versions = chosen.setdefault(model, set())
        if versions is not None:  # the bare name asked for every version already
            versions.add(int(version))
    return chosen


def select_versions(
    repository: ModelRepository, chosen: Mapping[str, set[int] | None]
) -> list[ModelVersion]:
    """The published versions ``chosen`` names (none named: every version of every model).

    Raises:
        ModelNotFoundError: nothing is published, or a model or version is not; the message says
            what is.
    """
    if not chosen:
        chosen = dict.fromkeys(repository.models())
        if not chosen:
            raise ModelNotFoundError(
                f"no models published in {repository.root} yet; run 'aeq train all' and "
                "'aeq export all' (or give --repository)"
            )
    selected = []
    for model, versions in chosen.items():
        if versions is None:
            repository.get(model)  # an unknown model: raises, naming the published ones
            versions = set(repository.versions(model))
        selected += [repository.get(model, version) for version in sorted(versions)]
    return selected


def refuse_out_dir(out_dir: Path, repository: ModelRepository, overwrite: bool) -> None:
    """Refuse an ``out_dir`` that holds anything (unless ``overwrite``) or that is, holds or lies
    inside the aeq repository (replacing it would delete what is being copied).

    Raises:
        UsageError: ``out_dir`` and the repository overlap.
        OutputExistsError: ``out_dir`` exists, is not an empty folder, and ``overwrite`` is off.
    """
    target, source = out_dir.resolve(), repository.root.resolve()
    if source.is_relative_to(target) or target.is_relative_to(source):
        raise UsageError(
            f"{out_dir} overlaps the model repository {repository.root}; write the Triton "
            "repository to a folder of its own"
        )
    if overwrite or not os.path.lexists(out_dir):
        return
    if out_dir.is_dir() and not out_dir.is_symlink() and not any(out_dir.iterdir()):
        return
    raise OutputExistsError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")


def write_triton_repository(versions: Sequence[ModelVersion], out_dir: Path) -> list[TritonModel]:
    """Write ``versions`` as a Triton model repository at ``out_dir``, replacing what is there.

    Raises:
        IntegrityError: a graph's bytes do not match their recorded sha256.
        UsageError: versions of one model whose graphs differ in inputs or outputs (one Triton
            model has one config).
        ModelError: a graph Triton's config cannot describe (an unknown element type, ...).
    """
    by_model: dict[str, list[ModelVersion]] = {}
    for version in sorted(versions, key=lambda item: (item.model, item.version)):
        by_model.setdefault(version.model, []).append(version)
    with staged_folder(out_dir) as staging:
        # An ONNX model made elsewhere may publish its autoencoder alone: a graph becomes a
        # Triton model with the versions that have it.
        written = [
            _write_triton_model(staging, having, graph)
            for model_versions in by_model.values()
            for graph in Graph
            if (having := [version for version in model_versions if graph in version.graphs])
        ]
    fsync_folder(out_dir.parent)
    return written


def _write_triton_model(staging: Path, versions: list[ModelVersion], graph: Graph) -> TritonModel:
    """Copy ``graph`` of every version in ``versions`` (one model's) and write its config."""
    folder = staging / triton_name(versions[0].model, graph)
    signatures: dict[int, TritonSignature] = {}
    for version in versions:
        data = version.read_verified(graph)
        signatures[version.version] = read_signature(data, f"{version.label} {graph.value}")
        _write_file(folder / str(version.version) / TRITON_MODEL_FILE, data)
    model = TritonModel(
        versions[0].model, graph, tuple(signatures), _one_signature(folder.name, signatures)
    )
    _write_file(folder / TRITON_CONFIG_FILE, model.config_text().encode())
    return model


def read_signature(data: bytes, where: str) -> TritonSignature:
    """The inputs and outputs of the ONNX graph serialised in ``data`` (``where``: its name in
    errors).

    Raises:
        ModelError: an input or output Triton cannot describe.
    """
    graph = onnx.load_model_from_string(data).graph
    # Graphs of old IR versions list their weights as inputs too; Triton feeds only the others.
    weights = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    signature = TritonSignature(
        inputs=tuple(_tensor(value, where) for value in inputs),
        outputs=tuple(_tensor(value, where) for value in graph.output),
    )
    for tensor in signature.inputs + signature.outputs:
        if not _config_dims(tensor, signature.batched):
            # Triton wants at least one dim per item (a scalar needs a reshape entry); aeq's
            # graphs never have such a tensor, so no reshape is written.
            raise ModelError(f"{where}: {tensor.name} has no dims per item; Triton needs one")
    return signature


def _tensor(value: onnx.ValueInfoProto, where: str) -> TritonTensor:
    if not value.type.HasField("tensor_type"):
        raise ModelError(f"{where}: {value.name} is not a tensor; Triton's ONNX backend needs one")
    tensor_type = value.type.tensor_type
    element = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
    if element not in _TRITON_TYPES:
        raise ModelError(f"{where}: {value.name} has element type {element}, which Triton lacks")
    if not tensor_type.HasField("shape"):
        raise ModelError(f"{where}: {value.name} has no shape; Triton's config needs its dims")
    dims = tuple(
        dim.dim_value if dim.HasField("dim_value") else DYNAMIC_DIM for dim in tensor_type.shape.dim
    )
    return TritonTensor(value.name, _TRITON_TYPES[element], dims)


def _one_signature(name: str, signatures: Mapping[int, TritonSignature]) -> TritonSignature:
    """The signature all versions share; one config.pbtxt describes every version."""
    distinct = list(dict.fromkeys(signatures.values()))
    if len(distinct) == 1:
        return distinct[0]
    described = "; ".join(
        f"version {version}: {signature.describe()}" for version, signature in signatures.items()
    )
    raise UsageError(
        f"{name}: its versions' graphs differ ({described}), and one Triton model has one "
        "config.pbtxt; choose versions that agree with MODEL@VERSION"
    )


def _tensors_text(kind: str, tensors: Sequence[TritonTensor], batched: bool) -> str:
    """An ``input [...]`` or ``output [...]`` list of ``config.pbtxt``."""
    entries = ",\n".join(_tensor_text(tensor, batched) for tensor in tensors)
    return f"{kind} [\n{entries}\n]"


def _tensor_text(tensor: TritonTensor, batched: bool) -> str:
    dims = ", ".join(str(dim) for dim in _config_dims(tensor, batched))
    return (
        "  {\n"
        f"    name: {_quoted(tensor.name)}\n"
        f"    data_type: {tensor.data_type}\n"
        f"    dims: [ {dims} ]\n"
        "  }"
    )


def _config_dims(tensor: TritonTensor, batched: bool) -> tuple[int, ...]:
    """The dims ``config.pbtxt`` gives: without the batch dimension where Triton batches."""
    return tensor.dims[1:] if batched else tensor.dims


def _tensor_json(tensor: TritonTensor) -> dict[str, Any]:
    return {"name": tensor.name, "data_type": tensor.data_type, "dims": list(tensor.dims)}


def _quoted(text: str) -> str:
    """``text`` as a protobuf text-format string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())
