"""Export end to end: all five models convert, pass the parity gate and publish with stable names.

One module-scoped fixture trains (one short epoch) and exports every catalogued model once; the
tests below inspect what was published. The failure paths use the cheap vanilla model.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime
import pytest
from export_support import FIT_IMAGES, held_out_images, write_record, write_trained

from aeq.core.catalog import (
    CODE_TENSOR,
    IMAGE_TENSOR,
    MODELS,
    PARITY_ATOL,
    RECONSTRUCTION_TENSOR,
    Graph,
)
from aeq.core.errors import CollapsedModelError, InputError, ModelNotFoundError, ParityError
from aeq.repository import ModelRepository
from export import convert, exporter, trained
from export.rewrites import UPSAMPLE_TO_RESIZE, UPSAMPLED_CONV_TO_SUBPIXEL

BATCH_SIZES = (1, 7)


@pytest.fixture(scope="module")
def images():
    all_images, source = held_out_images(FIT_IMAGES + 128)
    return all_images[:FIT_IMAGES], all_images[FIT_IMAGES:], source


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("trained")
    for name in MODELS:
        write_trained(folder, name, images[0])
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_dir, images):
    repository = ModelRepository(tmp_path_factory.mktemp("repository"))
    results = {
        name: exporter.export_model(name, trained_dir, repository, images[1], images[2])
        for name in MODELS
    }
    return repository, results


def test_every_catalogued_model_is_exported_and_passes_parity(exported):
    repository, results = exported
    assert repository.models() == sorted(MODELS)
    for name, result in results.items():
        assert result.version.label == f"{name}@1"
        assert set(result.parity) == set(Graph)
        for graph, parity in result.parity.items():
            assert parity.passed, f"{name} {graph}: {parity.describe()}"
            assert 0.0 <= parity.max_abs_diff <= PARITY_ATOL


def test_config_records_graphs_parity_training_and_libraries(exported, trained_dir, images):
    repository, results = exported
    for name, spec in MODELS.items():
        version = repository.get(name)
        config = version.config
        assert version.code_dim == spec.code_dim
        assert config["code_dims"] == list(spec.code_dims)
        assert config["input_dims"] == list(spec.input_dims)
        assert config["noisy_input"] == spec.noisy_input
        assert config["opset"] == convert.ONNX_OPSET
        assert config["parity"]["tolerance"] == PARITY_ATOL
        assert config["parity"]["images"] == len(images[1])
        assert config["parity"]["data_source"] == images[2]
        assert config["training"] == trained.find_trained(trained_dir, name).record
        assert set(config["libraries"]) == {
            "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"
        }  # fmt: skip
        assert set(config["sha256"]) == {f"{graph}.onnx" for graph in Graph}
        for graph in Graph:
            recorded = config["graphs"][graph.value]["parity_max_abs_diff"]
            assert recorded == results[name].parity[graph].max_abs_diff
        version.verify()


@pytest.mark.parametrize("name", list(MODELS))
def test_the_published_graphs_are_the_rewritten_ones_and_say_so(exported, name):
    """The parity gate passed on these very bytes (the test above), rewrites included."""
    repository, _ = exported
    version = repository.get(name)
    convolutional = MODELS[name].input_dims != (784,)
    for graph in Graph:
        applied = version.config["graphs"][graph.value]["graph_rewrites"]
        ops = [n.op_type for n in onnx.load_from_string(version.read_verified(graph)).graph.node]
        if convolutional and graph is not Graph.ENCODER:
            assert applied == [UPSAMPLE_TO_RESIZE, UPSAMPLED_CONV_TO_SUBPIXEL]
            assert "Resize" in ops and "Tile" not in ops and "DepthToSpace" in ops
        else:
            assert applied == [] and "Resize" not in ops


@pytest.mark.parametrize("name", list(MODELS))
def test_graphs_have_stable_names_and_a_dynamic_batch(exported, images, name):
    repository, _ = exported
    version = repository.get(name)
    spec = MODELS[name]
    expected = {
        Graph.AUTOENCODER: (IMAGE_TENSOR, spec.input_dims, RECONSTRUCTION_TENSOR, spec.input_dims),
        Graph.ENCODER: (IMAGE_TENSOR, spec.input_dims, CODE_TENSOR, (spec.code_dim,)),
        Graph.DECODER: (CODE_TENSOR, (spec.code_dim,), RECONSTRUCTION_TENSOR, spec.input_dims),
    }
    for graph, (input_name, input_dims, output_name, output_dims) in expected.items():
        info = version.graph(graph)
        assert (info.input.name, info.output.name) == (input_name, output_name)
        assert info.input.dims == (-1, *input_dims) and info.output.dims == (-1, *output_dims)
        assert info.input.dtype == info.output.dtype == "float32"
        data = version.read_verified(graph)
        proto = onnx.load_model_from_string(data)
        assert [
            opset.version for opset in proto.opset_import if opset.domain in ("", "ai.onnx")
        ] == [convert.ONNX_OPSET]
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        assert [item.name for item in session.get_inputs()] == [input_name]
        assert [item.name for item in session.get_outputs()] == [output_name]
        for batch in BATCH_SIZES:
            inputs = np.random.default_rng(batch).random((batch, *input_dims), dtype=np.float32)
            (output,) = session.run(None, {input_name: inputs})
            assert output.shape == (batch, *output_dims)


def test_noisy_input_models_are_checked_on_noisy_images_too(images):
    spec = MODELS["denoising"]

    def flatten(inputs, training):
        return inputs.reshape(len(inputs), -1)

    inputs = exporter.parity_inputs(spec, images[1], flatten)
    half = len(images[1]) // 2
    clean = images[1].reshape(len(images[1]), *spec.input_dims)
    np.testing.assert_array_equal(inputs[Graph.AUTOENCODER][:half], clean[:half])
    assert np.abs(inputs[Graph.AUTOENCODER][half:] - clean[half:]).mean() > 0.1
    assert inputs[Graph.DECODER].shape == (len(images[1]), 784)


def _bump_output_bias(graphs):
    """Change the Keras output bias after conversion: ONNX keeps the old one."""
    layer = graphs[Graph.AUTOENCODER].keras_model.get_layer("reconstruction")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + 0.5])
    return graphs


def test_parity_gate_names_each_failing_graph_and_publishes_nothing(
    tmp_path, trained_dir, images, monkeypatch
):
    real_convert = exporter.convert_model
    monkeypatch.setattr(
        exporter, "convert_model", lambda *args: _bump_output_bias(real_convert(*args))
    )
    repository = ModelRepository(tmp_path / "repository")
    with pytest.raises(ParityError) as caught:
        exporter.export_model("vanilla", trained_dir, repository, images[1], images[2])
    message = str(caught.value)
    # The output layer feeds the autoencoder and decoder graphs, not the encoder.
    assert re.search(r"\bautoencoder: max \|diff\| [0-9.e-]+ > tolerance 0.0001", message)
    assert re.search(r"\bdecoder: max \|diff\| [0-9.e-]+ > tolerance", message)
    assert not re.search(r"\bencoder: max", message)
    assert "nothing published" in message
    assert repository.models() == []
    assert not any((tmp_path / "repository").rglob("*.onnx"))


def test_a_tolerance_below_the_measured_error_fails_the_gate(tmp_path, trained_dir, images):
    repository = ModelRepository(tmp_path / "repository")
    with pytest.raises(ParityError, match="vanilla: ONNX Runtime disagrees"):
        exporter.export_model(
            "vanilla", trained_dir, repository, images[1], images[2], tolerance=-1.0
        )
    assert repository.versions("vanilla") == []


def test_a_collapsed_model_is_refused(tmp_path, trained_dir, images):
    folder = tmp_path / "trained"
    (folder / "vanilla").mkdir(parents=True)
    (folder / "vanilla" / "model.keras").write_bytes(
        (trained_dir / "vanilla" / "model.keras").read_bytes()
    )
    write_record(folder / "vanilla", "vanilla", collapsed=True, test_mse=0.1125)
    repository = ModelRepository(tmp_path / "repository")
    with pytest.raises(CollapsedModelError, match="vanilla collapsed in training.*0.1125"):
        exporter.export_model("vanilla", folder, repository, images[1], images[2])
    assert not (tmp_path / "repository").exists() or repository.models() == []


def test_missing_model_missing_record_and_wrong_architecture(tmp_path, trained_dir, images):
    repository = ModelRepository(tmp_path / "repository")
    with pytest.raises(ModelNotFoundError, match="no trained conv model.*aeq train conv"):
        exporter.export_model("conv", tmp_path, repository, images[1], images[2])
    with pytest.raises(ModelNotFoundError, match="no trained resnet model.*--name resnet"):
        exporter.export_model("resnet", tmp_path, repository, images[1], images[2])
    (tmp_path / "odd").mkdir()  # a record naming no architecture aeq knows
    (tmp_path / "odd" / "model.keras").write_bytes(b"x")
    write_record(tmp_path / "odd", "resnet")
    with pytest.raises(ModelNotFoundError, match="unknown model 'resnet'"):
        exporter.export_model("odd", tmp_path, repository, images[1], images[2])
    (tmp_path / "conv").mkdir()
    model_bytes = (trained_dir / "vanilla" / "model.keras").read_bytes()
    (tmp_path / "conv" / "model.keras").write_bytes(model_bytes)
    with pytest.raises(InputError, match="record.json"):
        exporter.export_model("conv", tmp_path, repository, images[1], images[2])
    write_record(tmp_path / "conv", "conv")
    with pytest.raises(InputError, match=r"inputs of shape \(784,\), but conv takes \(28, 28, 1\)"):
        exporter.export_model("conv", tmp_path, repository, images[1], images[2])
    assert repository.models() == []


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 28, 28), np.uint8), np.full((2, 784), 2.0), np.zeros((2, 27, 27)), np.zeros(0)],
)
def test_parity_images_must_be_whole_images_in_the_unit_range(bad):
    with pytest.raises(InputError, match="parity images"):
        exporter.check_images(bad)


def test_trained_models_lists_only_folders_with_a_model(trained_dir, tmp_path):
    assert trained.trained_models(trained_dir) == list(MODELS)
    assert trained.trained_models(tmp_path) == []


def _two_step_graph():
    """x -> Relu -> mid -> Sigmoid -> y, built by hand."""
    value = onnx.helper.make_tensor_value_info
    nodes = [
        onnx.helper.make_node("Relu", ["x"], ["mid"]),
        onnx.helper.make_node("Sigmoid", ["mid"], ["y"]),
    ]
    graph = onnx.helper.make_graph(
        nodes,
        "g",
        [value("x", onnx.TensorProto.FLOAT, ["unk__1", 2])],
        [value("y", onnx.TensorProto.FLOAT, ["unk__2", 2])],
    )
    # IR 8 is what tf2onnx writes for opset 17; the onnx package defaults to an IR newer than
    # ONNX Runtime reads.
    opset = onnx.helper.make_opsetid("", convert.ONNX_OPSET)
    return onnx.helper.make_model(graph, opset_imports=[opset], ir_version=8)


def test_rename_tensor_rewires_producers_and_consumers():
    proto = _two_step_graph()
    convert.rename_tensor(proto, "mid", "code")
    convert.rename_tensor(proto, "y", "reconstruction")
    convert.name_batch_dimension(proto)
    onnx.checker.check_model(proto)
    assert [list(node.output) for node in proto.graph.node] == [["code"], ["reconstruction"]]
    assert list(proto.graph.node[1].input) == ["code"]
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (output,) = session.run(["reconstruction"], {"x": np.zeros((3, 2), np.float32)})
    np.testing.assert_allclose(output, 0.5)


def test_rename_tensor_refuses_to_merge_two_tensors():
    proto = _two_step_graph()
    with pytest.raises(ValueError, match="already has a 'mid'"):
        convert.rename_tensor(proto, "y", "mid")
