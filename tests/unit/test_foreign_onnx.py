"""``aeq export --onnx``: ONNX autoencoders made elsewhere, read, checked, published and served.

The graphs are built with ``onnx.helper`` as PyTorch's exporter lays them out (``input.1``,
NCHW, batch fixed at 1; ``foreign_support``). What is checked here needs no Redis except one
worker chunk: the geometry and pixel-scale reading, the worker's conversions and fixed-batch
runs, the command's output and ``config.json``, every refusal (exit 2, one line, the repository
untouched), the models table, local-mode jobs against ONNX Runtime's own result, and that neither
TensorFlow (export) nor onnx (worker) is imported. The queued path through real workers is
tests/integration/test_foreign_models.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from foreign_support import (
    broken,
    conv_autoencoder,
    custom_op,
    decoder,
    encoder,
    fixed_reshape,
    reshaping,
    run_onnx,
    to_graph,
    to_pixels,
    two_inputs,
    write,
    write_with_weights_beside,
)
from onnx import TensorProto
from typer.testing import CliRunner
from worker_support import publish_tiny, random_images

import aeq
import cli
from aeq.core.catalog import Graph, Operation
from aeq.core.errors import UsageError
from aeq.core.pixel_scale import PixelScale, pixel_scale
from aeq.core.settings import Settings, load_settings
from aeq.queue.jobs import ChunkOutcome, JobSpec, JobStore
from aeq.queue.protocol import ChunkMessage, encode_array
from aeq.repository import ModelRepository
from export.geometry import ImageGeometry, dims_text, image_geometry, item_size
from export.trained import TrainedModel, refuse_other_data
from worker.inference import (
    CPU_PROVIDER,
    Engine,
    from_graph_output,
    pad_to_batch,
    to_graph_input,
)
from worker.processing import WorkerContext, process_chunk

ROOT = Path(__file__).resolve().parents[2]
CPU_ONLY = Settings(providers=(CPU_PROVIDER,))
TIMEOUT_S = 300


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """MNIST for the run check: AEQ_DATA_DIR's IDX folder, else generated digits as mnist.npz."""
    data_dir = load_settings().data_dir
    if data_dir is not None and any(data_dir.glob("t10k-images*")):
        return data_dir
    from export_support import generated_images

    pixels = (generated_images(64, seed=5) * 255).astype(np.uint8)
    labels = np.zeros(len(pixels), np.uint8)
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    np.savez(path, x_train=pixels, y_train=labels, x_test=pixels, y_test=labels)
    return path


@pytest.fixture
def files(tmp_path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli.app, list(args), env=env, terminal_width=120)


def export_onnx(repository: Path, data: Path, *args: str):
    return invoke("export", *args, "--repository", str(repository), "--data", str(data))


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with its sha256."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def assert_one_line_refusal(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- geometry and pixel scales -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dims", "geometry"),
    [
        ((1, 1, 28, 28), ImageGeometry("NCHW", 1)),
        ((-1, 1, 28, 28), ImageGeometry("NCHW", None)),
        ((-1, 28, 28, 1), ImageGeometry("NHWC", None)),
        ((8, 28, 28), ImageGeometry("NHW", 8)),
        ((-1, 784), ImageGeometry("flat", None)),
        ((-1, 3, 28, 28), None),
        ((-1, 1, 32, 32), None),
        ((-1, 28, 28, 3), None),
        ((-1, 1, 28, -1), None),
        ((-1, 783), None),
        ((28, 28), None),
        ((), None),
    ],
)
def test_image_geometry_is_read_from_dims(dims, geometry):
    assert image_geometry(dims) == geometry


def test_dims_read_as_users_write_them():
    assert dims_text((-1, 3, -1, 32)) == "[N, 3, ?, 32]"
    assert dims_text((1, 1, 28, 28)) == "[1, 1, 28, 28]"
    assert item_size((1, 4, 2, 2)) == 16 and item_size((-1, 4, -1)) is None


def test_pixel_scales_are_named_as_the_option_writes_them():
    assert [scale.value for scale in PixelScale] == ["0-1", "0-255", "-1-1"]
    assert pixel_scale(None) is PixelScale.UNIT  # versions published before the field
    assert [(s.low, s.high) for s in PixelScale] == [(0.0, 1.0), (0.0, 255.0), (-1.0, 1.0)]
    with pytest.raises(UsageError, match="use one of 0-1, 0-255, -1-1"):
        pixel_scale("0-2")


# -- the worker's conversions --------------------------------------------------------------------

LEVELS = np.resize(np.arange(256, dtype=np.uint8), 784).reshape(1, 28, 28)  # every grey level


@pytest.mark.parametrize("scale", list(PixelScale))
def test_pixels_go_in_at_the_graphs_scale(scale):
    values = to_graph_input(Operation.RECONSTRUCT, LEVELS, (1, 28, 28), scale)
    assert values.dtype == np.float32 and values.shape == (1, 1, 28, 28)
    np.testing.assert_allclose(values.reshape(1, 28, 28), to_graph(LEVELS, scale), atol=1e-6)
    assert (values.min(), values.max()) == (scale.low, scale.high)


def test_unit_scale_inputs_are_what_they_always_were():
    images = random_images(5)
    before = np.multiply(images.reshape(5, 784), np.float32(1.0 / 255.0), dtype=np.float32)
    now = to_graph_input(Operation.DENOISE, images, (784,))
    assert np.array_equal(now, before)


@pytest.mark.parametrize("scale", list(PixelScale))
def test_outputs_come_back_by_the_inverse_exactly(scale):
    values = to_graph_input(Operation.RECONSTRUCT, LEVELS, (784,), scale)
    assert np.array_equal(from_graph_output(Operation.RECONSTRUCT, values, 1, scale), LEVELS)


@pytest.mark.parametrize("scale", list(PixelScale))
def test_outputs_are_clipped_and_rounded_in_the_graphs_scale(scale):
    width = scale.high - scale.low
    step = width / 255
    raw = [scale.low - width, scale.low, scale.low + 0.4 * step, scale.low + 0.6 * step]
    raw += [scale.low + 127.5 * step + 1e-3 * step, scale.high, scale.high + 5 * width]
    output = np.array(raw + [scale.low] * (784 - len(raw)), np.float32).reshape(1, 784)
    pixels = from_graph_output(Operation.RECONSTRUCT, output, 1, scale).reshape(-1)
    assert list(pixels[: len(raw)]) == [0, 0, 0, 1, 128, 255, 255]


def test_a_short_last_piece_is_padded_with_zeros():
    items = random_images(3)
    padded = pad_to_batch(items, 4)
    assert padded.shape == (4, 28, 28) and np.array_equal(padded[:3], items)
    assert not padded[3].any()
    assert pad_to_batch(items, None) is items and pad_to_batch(items, 3) is items


def publish_raw(repository: ModelRepository, name: str, data: bytes, dims, scale: PixelScale):
    """Publish one autoencoder graph as ``aeq export --onnx`` records it, without its checks."""
    source = repository.root.parent / f"{name}.onnx"
    source.write_bytes(data)
    tensor = {"dtype": "float32", "dims": list(dims)}
    config = {
        "graphs": {
            "autoencoder": {
                "file": "autoencoder.onnx",
                "inputs": [{"name": "input.1", **tensor}],
                "outputs": [{"name": "output_0", **tensor}],
            }
        },
        "architecture": "onnx",
        "code_dim": None,
        "pixel_scale": scale.value,
    }
    return repository.publish(name, {"autoencoder.onnx": source}, config)


@pytest.mark.parametrize(
    ("batch", "scale"),
    [(1, PixelScale.UNIT), (4, PixelScale.SYMMETRIC), ("batch", PixelScale.BYTE)],
)
def test_the_engine_runs_fixed_batches_in_pieces_and_converts_by_scale(tmp_path, batch, scale):
    data = conv_autoencoder(batch, scale)
    dims = [batch if isinstance(batch, int) else -1, 1, 28, 28]
    version = publish_raw(ModelRepository(tmp_path / "repository"), "ae", data, dims, scale)
    images = random_images(10)
    result = Engine(CPU_ONLY).run(version, Operation.RECONSTRUCT, images)
    fixed = batch if isinstance(batch, int) else None
    padded = pad_to_batch(images, -(-10 // (fixed or 10)) * (fixed or 10))
    reference = run_onnx(data, to_graph(padded, scale).reshape(-1, 1, 28, 28), fixed)[:10]
    assert result.array.shape == (10, 28, 28)
    assert np.abs(result.array.astype(int) - to_pixels(reference, scale)).max() <= 1


# -- publishing: what is read and recorded -------------------------------------------------------


def test_a_pytorch_style_export_is_published_with_its_names_dims_and_scale(tmp_path, files, data):
    source = write(files, "ae.onnx", conv_autoencoder(batch=1))
    repository = tmp_path / "repository"

    result = export_onnx(repository, data, "--onnx", str(source), "--name", "torch-ae")

    assert result.exit_code == 0, result.output
    assert f"torch-ae@1 published to {repository / 'torch-ae' / '1'}" in result.stdout
    assert "'input.1' [1, 1, 28, 28] -> 'output_0' [1, 1, 28, 28], fixed batch 1" in result.stdout
    assert "serves denoise, reconstruct, score" in result.stdout
    version = ModelRepository(repository).get("torch-ae")
    config = version.config
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert config["architecture"] == "onnx" and config["pixel_scale"] == "0-1"
    assert config["code_dim"] is None and version.code_dim == 0
    assert version.graphs == (Graph.AUTOENCODER,)
    info = version.graph(Graph.AUTOENCODER)
    assert (info.input.name, info.input.dims) == ("input.1", (1, 1, 28, 28))
    assert (info.output.name, info.output.dims) == ("output_0", (1, 1, 28, 28))
    assert config["sha256"] == {"autoencoder.onnx": digest}  # the file's bytes, as given
    assert config["source"]["autoencoder"] == {
        "file": "ae.onnx", "sha256": digest, "producer": "pytorch 2.13.0", "opset": 17
    }  # fmt: skip
    assert config["run_check"]["images"] == 16 and config["run_check"]["data_source"]
    assert "training" not in config and "parity" not in config
    version.verify()


def test_an_encoder_and_decoder_make_a_model_that_encodes_and_decodes(tmp_path, files, data):
    paths = [
        write(files, "ae.onnx", conv_autoencoder("batch")),
        write(files, "enc.onnx", encoder(batch=1, code_dims=(4, 2, 2))),
        write(files, "dec.onnx", decoder(batch="batch", code_dims=(4, 2, 2))),
    ]
    args = ["--onnx", str(paths[0]), "--encoder", str(paths[1]), "--decoder", str(paths[2])]

    result = export_onnx(tmp_path / "repository", data, *args, "--name", "pair", "--json")

    assert result.exit_code == 0, result.output
    [published] = json.loads(result.stdout)["published"]
    assert published["operations"] == ["denoise", "reconstruct", "encode", "decode", "score"]
    version = ModelRepository(tmp_path / "repository").get("pair")
    assert version.code_dim == 16 and version.config["code_dims"] == [4, 2, 2]
    assert version.graphs == tuple(Graph)
    assert version.graph(Graph.DECODER).input.dims == (-1, 4, 2, 2)


def test_weights_kept_beside_the_file_are_put_inside_the_published_graph(tmp_path, files, data):
    graph = conv_autoencoder()
    source = write_with_weights_beside(files, "ae.onnx", graph, "ae.onnx.data")
    repository = tmp_path / "repository"

    result = export_onnx(repository, data, "--onnx", str(source), "--name", "ae")

    assert result.exit_code == 0, result.output
    version = ModelRepository(repository).get("ae")
    recorded = version.config["source"]["autoencoder"]
    assert recorded["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    weights = (files / "ae.onnx.data").read_bytes()
    assert recorded["weight_files"] == {"ae.onnx.data": hashlib.sha256(weights).hexdigest()}
    published = version.read_verified(Graph.AUTOENCODER)
    images = to_graph(random_images(2), PixelScale.UNIT).reshape(2, 1, 28, 28)
    np.testing.assert_array_equal(run_onnx(published, images, 1), run_onnx(graph, images, 1))


@pytest.mark.parametrize(
    ("in_dims", "out_dims"),
    [
        (["N", 28, 28, 1], ["N", 28, 28, 1]),
        (["N", 28, 28], ["N", 784]),
        ([None, 784], [None, 1, 28, 28]),  # an unset dim is an open one too
    ],
)
def test_every_served_layout_is_published(tmp_path, files, data, in_dims, out_dims):
    source = write(files, "ae.onnx", reshaping(in_dims, out_dims))
    result = export_onnx(tmp_path / "repository", data, "--onnx", str(source), "--name", "ae")
    assert result.exit_code == 0, result.output


def test_reconstructions_far_outside_the_scale_get_a_note(tmp_path, files, data):
    source = write(files, "ae.onnx", conv_autoencoder("batch", PixelScale.BYTE))
    result = export_onnx(tmp_path / "repository", data, "--onnx", str(source), "--name", "ae")
    assert result.exit_code == 0, result.output
    assert "note: ae@1's reconstructions of MNIST test images run from" in result.stderr
    assert "pixel scale 0-1 expects 0 to 1" in result.stderr


def test_models_lists_a_foreign_model_honestly(tmp_path, files, data):
    source = write(files, "ae.onnx", conv_autoencoder())
    repository = tmp_path / "repository"
    export_onnx(repository, data, "--onnx", str(source), "--name", "torch-ae")

    table = invoke("models", "--repository", str(repository))
    listed = json.loads(invoke("models", "--repository", str(repository), "--json").stdout)

    row = next(line for line in table.stdout.splitlines() if "torch-ae" in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]][:6] == [
        "torch-ae", "1", "-", "-", "ae.onnx", "-"
    ]  # fmt: skip
    [item] = listed
    assert item["architecture"] == "onnx" and item["test_mse"] is None
    assert item["code_dim"] is None and item["trained_on"] is None
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert item["source"]["autoencoder"]["file"] == "ae.onnx"
    assert item["source"]["autoencoder"]["sha256"] == digest


def test_triton_writes_the_graphs_a_foreign_model_has(tmp_path, files, data):
    source = write(files, "ae.onnx", conv_autoencoder())
    export_onnx(tmp_path / "repository", data, "--onnx", str(source), "--name", "torch-ae")
    result = invoke(
        "triton", str(tmp_path / "triton"), "--repository", str(tmp_path / "repository")
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "triton").iterdir()) == ["torch-ae_autoencoder"]


# -- serving: local mode, refusals up front, the worker's reason ---------------------------------


@pytest.mark.parametrize(("batch", "scale"), [(1, PixelScale.UNIT), (1, PixelScale.SYMMETRIC)])
def test_a_local_job_equals_onnx_runtimes_own_result(tmp_path, files, data, batch, scale):
    graph = conv_autoencoder(batch, scale)
    source = write(files, "ae.onnx", graph)
    repository = tmp_path / "repository"
    published = export_onnx(
        repository, data, "--onnx", str(source), "--name", "ae", "--scale", scale.value
    )
    assert published.exit_code == 0, published.output
    images = random_images(37)
    np.save(tmp_path / "in.npy", images)
    env = {"AEQ_BROKER_URL": "", "AEQ_PROVIDERS": "cpu", "AEQ_MODEL_REPOSITORY": str(repository)}

    result = invoke("reconstruct", str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy"),
                    "--model", "ae", env=env)  # fmt: skip

    assert result.exit_code == 0, result.output
    reference = to_pixels(run_onnx(graph, to_graph(images, scale).reshape(-1, 1, 28, 28), 1), scale)
    output = np.load(tmp_path / "out.npy")
    assert output.shape == (37, 28, 28)
    assert np.abs(output.astype(int) - reference.astype(int)).max() <= 1


@pytest.mark.parametrize("verb", ["encode", "decode"])
def test_encode_and_decode_are_refused_up_front_without_an_encoder(tmp_path, files, data, verb):
    source = write(files, "ae.onnx", conv_autoencoder())
    repository = tmp_path / "repository"
    export_onnx(repository, data, "--onnx", str(source), "--name", "torch-ae")
    np.save(tmp_path / "in.npy", random_images(3))
    np.save(tmp_path / "codes.npy", np.zeros((3, 16), np.float32))
    given = tmp_path / ("in.npy" if verb == "encode" else "codes.npy")
    env = {"AEQ_BROKER_URL": "", "AEQ_MODEL_REPOSITORY": str(repository)}

    result = invoke(
        verb, str(given), "-o", str(tmp_path / "out.npy"), "--model", "torch-ae", env=env
    )

    graph = "encoder" if verb == "encode" else "decoder"
    assert_one_line_refusal(
        result, f"torch-ae@1 has no {graph} graph", "serves denoise, reconstruct, score", verb
    )
    with pytest.raises(UsageError, match="has no encoder graph"):
        aeq.encode(random_images(2), model="torch-ae", repository=repository, broker_url="")


def test_a_worker_fails_an_encode_chunk_for_a_model_without_encoder(redis_client, tmp_path):
    repository = ModelRepository(tmp_path / "repository")
    publish_raw(repository, "ae", conv_autoencoder(), [1, 1, 28, 28], PixelScale.UNIT)
    settings = Settings(model_repository=repository.root, providers=(CPU_PROVIDER,))
    store = JobStore(redis_client, 600)
    context = WorkerContext(settings, store, repository, Engine(CPU_ONLY), "test-worker")
    images = random_images(2)
    # What a client bypassing the up-front check (or an older one) would queue.
    job = store.create(JobSpec(Operation.ENCODE, "ae", 1, 2, 2, 0))
    store.put_chunk(job, 0, encode_array(images), ["a", "b"])
    store.end_submission(job, 1)
    message = ChunkMessage.for_array(job, 0, Operation.ENCODE, "ae", 1, images).to_wire()

    summary = process_chunk(context, message)

    assert summary["state"] == "failed"
    assert summary["reason"] == (
        "ae@1 has no encoder graph (published without one): it serves denoise, reconstruct, "
        "score, not encode"
    )
    assert store.status(job, 0).outcome is ChunkOutcome.FAILED


# -- refusals ------------------------------------------------------------------------------------


def _refusal_cases(files: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (arguments after 'export', fragments of the one error line)."""
    good = write(files, "ae.onnx", conv_autoencoder())
    text = files / "notes.onnx"
    text.write_text("not a model\n")
    bad = {
        "rgb": reshaping(["N", 3, 28, 28], ["N", 3, 28, 28]),
        "size": reshaping(["N", 1, 32, 32], ["N", 1, 32, 32]),
        "output": reshaping(["N", 784], ["N", 10]),
        "float16": reshaping(["N", 784], ["N", 784], in_type=TensorProto.FLOAT16),
        "uint8": reshaping(["N", 784], ["N", 784], out_type=TensorProto.UINT8),
        "nan": reshaping(["N", 784], ["N", 784], nan=True),
    }
    path = {name: str(write(files, f"{name}.onnx", data)) for name, data in bad.items()}
    path["two"] = str(write(files, "two.onnx", two_inputs()))
    path["broken"] = str(write(files, "broken.onnx", broken()))
    path["fixed"] = str(write(files, "fixed.onnx", fixed_reshape("N", 16)))
    lost = write_with_weights_beside(files, "lost.onnx", conv_autoencoder(), "lost.onnx.data")
    (files / "lost.onnx.data").unlink()
    path["lost"] = str(lost)
    path["away"] = str(write_with_weights_beside(files, "away.onnx", conv_autoencoder(), "../w"))
    path["custom"] = str(write(files, "custom.onnx", custom_op()))
    path["enc"] = str(write(files, "enc.onnx", encoder(code_dims=(4, 2, 2))))
    path["dec"] = str(write(files, "dec.onnx", decoder(code_dims=(8, 4))))
    served = "aeq serves 28x28 gray models"
    # A name nothing is published under: each case is refused for its own fault.
    onnx, name = ["--onnx", str(good)], ["--name", "new-model"]
    return {
        "missing file": (["--onnx", str(files / "nope.onnx"), *name], ["nope.onnx does not exist"]),
        "not onnx": (["--onnx", str(text), *name], ["notes.onnx is not an ONNX model"]),
        "fails checker": (["--onnx", path["broken"], *name], ["broken.onnx fails onnx.checker"]),
        "weights missing": (["--onnx", path["lost"], *name], ["lost.onnx.data beside it, which"]),
        "weights elsewhere": (["--onnx", path["away"], *name], ["'../w', outside its own folder"]),
        "three channels": (["--onnx", path["rgb"], *name], ["'x' [N, 3, 28, 28]", served]),
        "another size": (["--onnx", path["size"], *name], ["[N, 1, 32, 32]", served]),
        "output not an image": (["--onnx", path["output"], *name], ["'y' [N, 10]", served]),
        "float16 input": (["--onnx", path["float16"], *name], ["'x' is float16", "float32"]),
        "uint8 output": (["--onnx", path["uint8"], *name], ["'y' is uint8", "float32"]),
        "several inputs": (["--onnx", path["two"], *name], ["2 inputs ('a' [N, 784]", served]),
        "NaN outputs": (["--onnx", path["nan"], *name], ["nan.onnx gives NaN or infinite"]),
        "unknown operator": (["--onnx", path["custom"], *name], ["does not load in ONNX Runtime"]),
        "codes that do not fit": (
            [*onnx, *name, "--encoder", path["enc"], "--decoder", path["dec"]],
            ["enc.onnx makes codes of 16 values", "dec.onnx decodes 32"],
        ),
        "batch not really open": (["--onnx", path["fixed"], *name], ["batch of 3 MNIST"]),
        "encoder alone": ([*onnx, *name, "--encoder", str(good)], ["--encoder and --decoder go"]),
        "bad scale": ([*onnx, *name, "--scale", "0-2"], ["'0-2' is not one of"]),
        "default name": ([*onnx, "--name", "conv"], ["'conv' is the name of the default conv"]),
        "not a name": ([*onnx, "--name", "../x"], ["model name '../x'"]),
        "no name": (onnx, ["--onnx FILE needs --name NAME"]),
        "with a model": (["conv", *onnx, *name], ["MODEL 'conv' does not go with it"]),
        "name alone": (name, ["--name: only with --onnx FILE"]),
        "nothing": ([], ["missing argument 'model'"]),
    }


REFUSALS = [
    "missing file", "not onnx", "fails checker", "weights missing", "weights elsewhere",
    "three channels", "another size",
    "output not an image", "float16 input", "uint8 output", "several inputs", "NaN outputs",
    "unknown operator", "codes that do not fit",
    "batch not really open", "encoder alone", "bad scale", "default name", "not a name",
    "no name", "with a model", "name alone", "nothing",
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS)
def test_each_bad_input_is_one_line_exit_2_and_nothing_published(tmp_path, files, data, case):
    repository = tmp_path / "repository"
    publish_tiny(ModelRepository(repository), "conv", published_as="mine")
    before = snapshot(repository)
    args, fragments = _refusal_cases(files)[case]

    result = export_onnx(repository, data, *args)

    assert_one_line_refusal(result, *fragments)
    assert snapshot(repository) == before


def test_a_model_aeq_trained_is_not_replaced_by_an_upload_unless_other_data(tmp_path, files, data):
    repository = tmp_path / "repository"
    publish_tiny(ModelRepository(repository), "conv", published_as="mine")
    before = snapshot(repository)
    args = ["--onnx", str(write(files, "ae.onnx", conv_autoencoder())), "--name", "mine"]

    refused = export_onnx(repository, data, *args)
    forced = export_onnx(repository, data, *args, "--other-data")

    assert_one_line_refusal(refused, "mine@1", "is a conv model aeq trained", "--other-data")
    assert before.items() <= snapshot(repository).items()
    assert forced.exit_code == 0, forced.output
    assert ModelRepository(repository).get("mine").config["architecture"] == "onnx"


def test_an_upload_of_the_same_kind_is_the_next_version_another_kind_is_not(tmp_path, files, data):
    repository = tmp_path / "repository"
    autoencoder = ["--onnx", str(write(files, "ae.onnx", conv_autoencoder()))]
    halves = ["--encoder", str(write(files, "enc.onnx", encoder()))]
    halves += ["--decoder", str(write(files, "dec.onnx", decoder()))]
    assert export_onnx(repository, data, *autoencoder, "--name", "ae").exit_code == 0

    again = export_onnx(repository, data, *autoencoder, "--name", "ae")
    other_kind = export_onnx(repository, data, *autoencoder, *halves, "--name", "ae")

    assert again.exit_code == 0 and ModelRepository(repository).versions("ae") == [1, 2]
    assert_one_line_refusal(
        other_kind, "ae@2", "is an ONNX model without encoder and decoder", "this is an ONNX "
    )


def test_aeq_export_of_a_trained_model_does_not_replace_an_upload(tmp_path, files, data):
    from aeq.core.catalog import MODELS

    repository = tmp_path / "repository"
    source = write(files, "ae.onnx", conv_autoencoder())
    export_onnx(repository, data, "--onnx", str(source), "--name", "mine")
    trained = TrainedModel(
        "mine", MODELS["conv"], tmp_path, {"data_source": "IDX folder /x", "collapsed": False}
    )
    with pytest.raises(UsageError, match="mine@1 .* is an ONNX model made elsewhere"):
        refuse_other_data(trained, ModelRepository(repository))


# -- what is imported where ----------------------------------------------------------------------

_EXPORT_SCRIPT = textwrap.dedent(
    """
    import sys
    import cli
    sys.argv = ["aeq", "export", "--onnx", {source!r}, "--name", "ae",
                "--repository", {repository!r}, "--data", {data!r}]
    try:
        cli.app()
    except SystemExit as stop:
        assert not stop.code, stop.code
    heavy = sorted({{"tensorflow", "keras", "tf2onnx"}} & {{m.split(".")[0] for m in sys.modules}})
    print("HEAVY:", heavy)
    """
)

_WORKER_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import worker.app, worker.tasks, worker.processing
    from aeq.core.catalog import Operation
    from aeq.core.settings import Settings
    from aeq.repository import ModelRepository
    from worker.inference import Engine

    version = ModelRepository({repository!r}).get("ae")
    engine = Engine(Settings(providers=("CPUExecutionProvider",)))
    result = engine.run(version, Operation.RECONSTRUCT, np.zeros((3, 28, 28), np.uint8))
    assert result.array.shape == (3, 28, 28)
    print("ONNX:", sorted(m for m in sys.modules if m.split(".")[0] == "onnx"))
    """
)


def _run_script(script: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_export_onnx_never_imports_tensorflow_and_the_worker_never_imports_onnx(
    tmp_path, files, data
):
    source, repository = write(files, "ae.onnx", conv_autoencoder()), tmp_path / "repository"
    names = {"source": str(source), "repository": str(repository), "data": str(data)}

    exported = _run_script(_EXPORT_SCRIPT.format(**names))
    served = _run_script(_WORKER_SCRIPT.format(**names))

    assert "HEAVY: []" in exported, exported[-2000:]
    assert "ONNX: []" in served, served[-2000:]
