"""``aeq triton``: a Triton model repository written from aeq's, checked with Triton's own schema.

Every ``config.pbtxt`` written is parsed with ``tritonclient``'s ``ModelConfig`` (the protobuf
message Triton reads it into) and compared with the ONNX graph beside it, read with ``onnx``;
every ``model.onnx`` must be the published bytes. The models are real ONNX graphs
(``aeq.bench.tiny_models``: the published names, dtypes and dims, milliseconds to build). Triton
itself is not run here: no Triton server is reachable from the test machines.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import triton_to_np_dtype
from typer.testing import CliRunner

import cli
from aeq.bench.tiny_models import publish_tiny, tiny_repository
from aeq.core.catalog import MODELS, Graph
from aeq.repository import ModelRepository, sha256_bytes

# The batch limit aeq writes for graphs with an open first dimension (export/triton.py says why).
MAX_BATCH_SIZE = 1024
# A graph with a fixed first dimension (Triton cannot batch it): uint8 pixels in, floats out.
FIXED_SHAPE = (4, 28, 28)


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args), terminal_width=200)


def written_paths(folder: Path) -> set[str]:
    """Every path under ``folder``, hidden ones included (staging leftovers would show)."""
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def parse_config(folder: Path) -> model_config_pb2.ModelConfig:
    """A Triton model's config.pbtxt, parsed as Triton parses it (unknown fields fail)."""
    text = (folder / "config.pbtxt").read_text()
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def graph_tensors(path: Path) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    graph = onnx.load(path).graph
    weights = {tensor.name for tensor in graph.initializer}
    return [value for value in graph.input if value.name not in weights], list(graph.output)


def full_dims(value: onnx.ValueInfoProto) -> list[int]:
    """A tensor's dims as the graph declares them, -1 where it names no size."""
    return [
        dim.dim_value if dim.HasField("dim_value") else -1
        for dim in value.type.tensor_type.shape.dim
    ]


def assert_tensor_matches(entry, value: onnx.ValueInfoProto, batched: bool) -> None:
    """A config.pbtxt input/output entry against the ONNX graph's tensor."""
    assert entry.name == value.name
    # Triton's client maps its type names to numpy, onnx maps its element types: they must meet.
    triton_type = model_config_pb2.DataType.Name(entry.data_type).removeprefix("TYPE_")
    onnx_type = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
    assert np.dtype(triton_to_np_dtype(triton_type)) == onnx_type, (entry.name, triton_type)
    dims = full_dims(value)
    assert list(entry.dims) == (dims[1:] if batched else dims)


def assert_triton_model(folder: Path, versions: dict[int, bytes]) -> model_config_pb2.ModelConfig:
    """One written Triton model: its config parses, names itself, serves every version, and
    describes the ONNX graph beside it; each version's model.onnx holds the published bytes."""
    config = parse_config(folder)
    assert config.name == folder.name
    assert config.platform == "onnxruntime_onnx"
    assert config.version_policy.WhichOneof("policy_choice") == "all"
    assert sorted(path.name for path in folder.iterdir() if path.is_dir()) == [
        str(version) for version in sorted(versions)
    ]
    for version, published in versions.items():
        model_file = folder / str(version) / "model.onnx"
        assert sha256_bytes(model_file.read_bytes()) == sha256_bytes(published)
        inputs, outputs = graph_tensors(model_file)
        batched = config.max_batch_size > 0
        assert len(config.input) == len(inputs) == 1 and len(config.output) == len(outputs) == 1
        assert_tensor_matches(config.input[0], inputs[0], batched)
        assert_tensor_matches(config.output[0], outputs[0], batched)
    return config


def published_bytes(repository: ModelRepository, model: str, graph: Graph) -> dict[int, bytes]:
    return {
        version: repository.get(model, version).read_verified(graph)
        for version in repository.versions(model)
    }


@pytest.fixture
def repository(tmp_path) -> ModelRepository:
    """Version 1 of the five models' tiny graphs, and a second version of conv."""
    repository = tiny_repository(tmp_path / "repository")
    publish_tiny(repository, "conv", seed=1)
    return repository


def test_every_graph_of_every_version_becomes_a_triton_model(repository, tmp_path):
    out = tmp_path / "triton"
    result = invoke("triton", str(out), "--repository", str(repository.root))

    assert result.exit_code == 0, result.output
    expected = {f"{model}_{graph}" for model in MODELS for graph in Graph}
    assert {path.name for path in out.iterdir()} == expected
    for model in MODELS:
        for graph in Graph:
            folder = out / f"{model}_{graph}"
            config = assert_triton_model(folder, published_bytes(repository, model, graph))
            # The tiny graphs, like the exported ones, take any batch size.
            assert config.max_batch_size == MAX_BATCH_SIZE
            assert config.HasField("dynamic_batching")
    assert sorted(os.listdir(out / "conv_encoder")) == ["1", "2", "config.pbtxt"]
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected) + 1
    assert {line.split(":")[0] for line in lines[:-1]} == expected
    assert lines[-1] == f"start Triton on it: tritonserver --model-repository {out.resolve()}"
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".triton")] == []


def test_exported_dims_reach_the_config_without_the_batch_dimension(repository, tmp_path):
    out = tmp_path / "triton"
    assert invoke("triton", str(out), "conv@2", "--repository", str(repository.root)).exit_code == 0

    encoder = parse_config(out / "conv_encoder")
    assert (encoder.input[0].name, list(encoder.input[0].dims)) == ("image", [28, 28, 1])
    assert (encoder.output[0].name, list(encoder.output[0].dims)) == ("code", [128])
    assert encoder.input[0].data_type == model_config_pb2.TYPE_FP32


def test_chosen_models_and_versions_only(repository, tmp_path):
    out = tmp_path / "triton"
    args = ["conv@1", "vanilla", "conv@1"]
    result = invoke("triton", str(out), *args, "--repository", str(repository.root))

    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == {
        f"{model}_{graph}" for model in ("conv", "vanilla") for graph in Graph
    }
    for graph in Graph:
        conv = {1: repository.get("conv", 1).read_verified(graph)}
        assert_triton_model(out / f"conv_{graph}", conv)
        assert_triton_model(out / f"vanilla_{graph}", published_bytes(repository, "vanilla", graph))


def fixed_batch_graph() -> bytes:
    """A graph whose first dimension is fixed: uint8 ``image`` (4, 28, 28) -> float
    ``reconstruction``."""
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, list(FIXED_SHAPE))
    output = helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, list(FIXED_SHAPE))
    node = helper.make_node("Cast", ["image"], ["reconstruction"], to=TensorProto.FLOAT)
    proto = helper.make_model(
        helper.make_graph([node], "fixed", [image], [output]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def test_a_fixed_first_dimension_is_served_unbatched_with_full_dims(tmp_path):
    repository = ModelRepository(tmp_path / "repository")
    source = tmp_path / "fixed.onnx"
    source.write_bytes(fixed_batch_graph())
    tensor = {"name": "image", "dtype": "uint8", "dims": list(FIXED_SHAPE)}
    graphs = {
        graph.value: {"file": f"{graph.value}.onnx", "inputs": [tensor], "outputs": [tensor]}
        for graph in Graph
    }
    files = {f"{graph.value}.onnx": source for graph in Graph}
    repository.publish("fixed", files, {"graphs": graphs, "code_dim": 784})
    out = tmp_path / "triton"

    result = invoke("triton", str(out), "--repository", str(repository.root))

    assert result.exit_code == 0, result.output
    for graph in Graph:
        config = assert_triton_model(out / f"fixed_{graph}", {1: source.read_bytes()})
        assert config.max_batch_size == 0
        assert list(config.input[0].dims) == list(FIXED_SHAPE)
        assert config.input[0].data_type == model_config_pb2.TYPE_UINT8
        assert not config.HasField("dynamic_batching")
    assert "max batch none" in result.stdout


def test_json_is_the_report_alone_on_stdout(repository, tmp_path):
    out = tmp_path / "triton"
    result = invoke("triton", str(out), "vanilla", "--repository", str(repository.root), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["triton_repository"] == str(out.resolve())
    assert report["start"] == f"tritonserver --model-repository {out.resolve()}"
    encoder = next(item for item in report["models"] if item["name"] == "vanilla_encoder")
    assert encoder["versions"] == [1] and encoder["max_batch_size"] == MAX_BATCH_SIZE
    assert encoder["inputs"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [-1, 784]}]
    assert encoder["outputs"] == [{"name": "code", "data_type": "TYPE_FP32", "dims": [-1, 64]}]
    assert "vanilla_encoder: version 1;" in result.stderr


def test_an_empty_out_dir_is_filled_and_overwrite_replaces_a_full_one(repository, tmp_path):
    out = tmp_path / "triton"
    out.mkdir()
    root = str(repository.root)
    assert invoke("triton", str(out), "sparse", "--repository", root).exit_code == 0
    (out / "stale.txt").write_text("from before")

    result = invoke("triton", str(out), "vanilla", "--repository", root, "--overwrite")

    assert result.exit_code == 0, result.output
    assert {path.name for path in out.iterdir()} == {f"vanilla_{graph}" for graph in Graph}
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".triton")] == []


def refused(tmp_path: Path, *args: str):
    """Run ``aeq triton`` expecting a refusal; return the result and whether anything was
    written beside the repository."""
    before = written_paths(tmp_path)
    result = invoke("triton", *args)
    return result, written_paths(tmp_path) - before


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (["nosuch"], "model 'nosuch' is not in "),
        (["conv@3"], "conv has no version 3; published: 1, 2"),
        (["conv@x"], "'conv@x': the version after '@' must be a positive integer"),
        (["conv@0"], "'conv@0': the version after '@' must be a positive integer"),
        (["../conv"], "model name '../conv': use 1-64 letters"),
    ],
    ids=["unknown-model", "unknown-version", "not-a-number", "version-0", "not-a-name"],
)
def test_unknown_models_and_versions_are_refused_with_nothing_written(
    repository, tmp_path, models, message
):
    out = tmp_path / "out" / "triton"
    result, written = refused(tmp_path, str(out), *models, "--repository", str(repository.root))

    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert written == set()


def test_a_full_out_dir_is_refused_without_overwrite(repository, tmp_path):
    out = tmp_path / "triton"
    out.mkdir()
    (out / "keep.txt").write_text("mine")

    result, written = refused(tmp_path, str(out), "--repository", str(repository.root))

    assert result.exit_code == 2 and result.stdout == ""
    message = f"{out} exists and is not empty; pass --overwrite to replace it"
    assert result.stderr == f"error: {message}\n"
    assert written == set() and (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["repository", "parent", "inside"])
def test_an_out_dir_overlapping_the_repository_is_refused(repository, tmp_path, where):
    out = {
        "repository": repository.root,
        "parent": tmp_path,
        "inside": repository.root / "triton",
    }[where]
    args = (str(out), "--repository", str(repository.root), "--overwrite")

    result, written = refused(tmp_path, *args)

    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "overlaps the model repository" in result.stderr
    assert written == set() and repository.versions("conv") == [1, 2]


def test_a_missing_or_empty_repository_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    for root, message in ((tmp_path / "nothing", "no model repository at"),
                          (tmp_path / "empty", "no models published in")):  # fmt: skip
        result, written = refused(tmp_path, str(tmp_path / "out"), "--repository", str(root))
        assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
        assert message in result.stderr and written == set()


def test_a_changed_graph_is_refused_and_nothing_is_written(repository, tmp_path):
    (repository.get("sparse").path / "decoder.onnx").write_bytes(b"not the published graph")

    result, written = refused(tmp_path, str(tmp_path / "out"), "--repository", str(repository.root))

    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert "sparse@1: decoder.onnx has sha256" in result.stderr
    assert written == set()


def test_versions_whose_graphs_differ_cannot_share_one_config(tmp_path):
    repository = ModelRepository(tmp_path / "repository")
    publish_tiny(repository, "conv", published_as="mixed")
    publish_tiny(repository, "vanilla", published_as="mixed")

    result, written = refused(tmp_path, str(tmp_path / "out"), "--repository", str(repository.root))

    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert "mixed_autoencoder: its versions' graphs differ" in result.stderr
    assert "version 1: image[-1,28,28,1] FP32" in result.stderr
    assert "version 2: image[-1,784] FP32" in result.stderr
    assert written == set()
    one = invoke("triton", str(tmp_path / "out"), "mixed@2", "--repository", str(repository.root))
    assert one.exit_code == 0, one.output


def test_without_onnx_installed_it_says_what_to_install(repository, tmp_path, monkeypatch):
    import export

    # A worker image has ONNX Runtime but not onnx; 'aeq triton' must say so, not trace back.
    monkeypatch.delattr(export, "triton", raising=False)
    monkeypatch.delitem(sys.modules, "export.triton", raising=False)
    monkeypatch.setitem(sys.modules, "onnx", None)

    result, written = refused(tmp_path, str(tmp_path / "out"), "--repository", str(repository.root))

    assert result.exit_code == 1 and written == set()
    assert result.stderr.startswith("error: aeq triton reads each graph with the onnx package")
