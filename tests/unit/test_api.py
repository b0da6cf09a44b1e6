"""The Python API: arrays and paths in, arrays out, with exactly the CLI's input checks.

Local mode (in-process ONNX Runtime) on the tiny real ONNX models of ``worker_support``; the
queued path's ``Client``/``Job`` against a real redis-server, chunks run by ``process_chunk``
(what the Celery task calls). tests/integration/test_api.py runs it all against real workers.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
from input_support import digits, save_png, write_idx
from typer.testing import CliRunner
from worker_support import pop_next_message, random_images, tiny_repository

import aeq
import cli
from aeq.client.views import status_dict
from aeq.core import errors
from aeq.core.catalog import MODELS, Operation
from aeq.core.settings import Settings
from aeq.files.memory import ArrayWriter
from aeq.queue.jobs import JobState, JobStore
from worker.inference import CPU_PROVIDER, Engine
from worker.processing import WorkerContext, process_chunk

COUNT = 13


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return tiny_repository(tmp_path_factory.mktemp("models") / "repository")


@pytest.fixture(autouse=True)
def local_environment(monkeypatch, repository):
    """A user's shell without a broker, with the tiny repository as the default one."""
    monkeypatch.delenv("AEQ_BROKER_URL", raising=False)
    monkeypatch.delenv("AEQ_RESULT_BACKEND", raising=False)
    monkeypatch.setenv("AEQ_MODEL_REPOSITORY", str(repository.root))
    monkeypatch.setenv("AEQ_PROVIDERS", "cpu")


@pytest.fixture(scope="module")
def images():
    return random_images(COUNT, seed=4)


def engine_output(repository, model: str, op: Operation, items: np.ndarray) -> np.ndarray:
    """What the CLI's local mode and the workers compute for these uint8 items."""
    return Engine(Settings(providers=(CPU_PROVIDER,))).run(repository.get(model), op, items).array


# -- arrays: what is accepted ----------------------------------------------------------------


def test_denoise_a_uint8_array_is_the_engines_output(repository, images):
    result = aeq.denoise(images)
    assert result.dtype == np.uint8 and result.shape == (COUNT, 28, 28)
    expected = engine_output(repository, "denoising", Operation.DENOISE, images)
    np.testing.assert_array_equal(result, expected)


def test_floats_in_0_1_are_scaled_like_the_cli_not_sent_as_near_black(repository, images):
    """The reported fault: floats in [0, 1] through the internals came back near-black."""
    as_floats = images.astype(np.float32) / 255.0
    result = aeq.reconstruct(as_floats)
    np.testing.assert_array_equal(result, aeq.reconstruct(images))
    black = engine_output(repository, "conv", Operation.RECONSTRUCT, as_floats.astype(np.uint8))
    assert not np.array_equal(result, black)


@pytest.mark.parametrize(
    "layout",
    [
        lambda x: x.reshape(len(x), 784),
        lambda x: x[..., None],
        lambda x: x[:, None],
        lambda x: x.astype(np.int64),
        lambda x: x.astype(np.float64) / 255.0,
        lambda x: np.asfortranarray(x),
        lambda x: list(x),
    ],
    ids=["Nx784", "NxHxWx1", "Nx1xHxW", "int64", "float64", "fortran", "list-of-images"],
)
def test_every_layout_the_cli_reads_gives_the_same_result(images, layout):
    np.testing.assert_array_equal(aeq.denoise(layout(images)), aeq.denoise(images))


def test_chunking_does_not_change_results(images):
    np.testing.assert_array_equal(aeq.denoise(images, chunk_size=3), aeq.denoise(images))


def test_encode_returns_float32_codes_and_decode_takes_them_back(repository, images):
    codes = aeq.encode(images, "vanilla")
    assert codes.dtype == np.float32 and codes.shape == (COUNT, MODELS["vanilla"].code_dim)
    np.testing.assert_array_equal(
        codes, engine_output(repository, "vanilla", Operation.ENCODE, images)
    )
    decoded = aeq.decode(codes, model="vanilla")
    assert decoded.dtype == np.uint8 and decoded.shape == (COUNT, 28, 28)
    np.testing.assert_array_equal(
        decoded, engine_output(repository, "vanilla", Operation.DECODE, codes)
    )


def test_resize_resizes_arrays_as_it_does_npy_files(tmp_path, images):
    large = np.kron(images, np.ones((2, 2), np.uint8))
    np.save(tmp_path / "large.npy", large)
    from_array = aeq.denoise(large, resize=True)
    np.testing.assert_array_equal(from_array, aeq.denoise(tmp_path / "large.npy", resize=True))


# -- arrays: what is refused, exactly as the CLI refuses the same array in a .npy --------------


def bad_arrays() -> dict[str, tuple[np.ndarray, str]]:
    """Arrays the CLI refuses, and the words of the error the API must give."""
    good = random_images(6).astype(np.float32) / 255
    above, below, nan, inf = good.copy(), good.copy(), good.copy(), good.copy()
    above[4, 3, 3] = 1.5
    below[2, 0, 0] = -0.01
    nan[3, 9, 9] = np.nan
    inf[1, 1, 1] = np.inf
    wide = random_images(6).astype(np.int32)
    wide[5, 0, 0] = 256
    return {
        "float-above-1": (above, r"values from 0 to 1\.5 \(first bad in item 4\).*\[0, 1\]"),
        "float-below-0": (below, r"first bad in item 2"),
        "nan": (nan, r"NaN or infinite values \(first in item 3\)"),
        "inf": (inf, r"NaN or infinite values \(first in item 1\)"),
        "int-above-255": (wide, r"first bad in item 5.*0-255"),
        "one-image": (good[0], r"shape \(28, 28\).*images\[None\]"),
        "27x27": (good[:, :27, :27], r"27x27 images, not 28x28 \(pass resize=True"),
        "3-channels": (np.zeros((2, 28, 28, 3), np.uint8), r"shape \(2, 28, 28, 3\)"),
        "codes": (np.zeros((4, 64), np.float32), r"codes\? decode them"),
        "empty": (np.zeros((0, 28, 28), np.uint8), r"holds no images"),
        "bool": (np.zeros((2, 28, 28), bool), r"dtype bool"),
        "complex": (np.zeros((2, 28, 28), complex), r"dtype complex128"),
        "strings": (np.array([["a"] * 28] * 28), r"dtype <U1"),
    }


@pytest.mark.parametrize("case", list(bad_arrays()))
def test_bad_arrays_are_refused_with_one_clear_input_error(case):
    array, words = bad_arrays()[case]
    with pytest.raises(aeq.InputError, match=words):
        aeq.denoise(array)


@pytest.mark.parametrize("case", list(bad_arrays()))
def test_the_cli_refuses_the_same_arrays_saved_as_npy(tmp_path, case):
    array, _ = bad_arrays()[case]
    np.save(tmp_path / "bad.npy", array)
    output = tmp_path / "out.npy"
    result = CliRunner().invoke(cli.app, ["denoise", str(tmp_path / "bad.npy"), "-o", str(output)])
    assert result.exit_code == 2 and not output.exists(), result.output
    with pytest.raises(aeq.InputError):
        aeq.denoise(tmp_path / "bad.npy")


def test_ragged_lists_and_other_objects_are_input_errors():
    with pytest.raises(aeq.InputError, match="cannot read the input as an array"):
        aeq.denoise([np.zeros((28, 28)), np.zeros((27, 28))])
    with pytest.raises(aeq.InputError, match="dtype object"):
        aeq.denoise(np.array([object(), object()]))
    with pytest.raises(aeq.InputError, match="no input given"):
        aeq.denoise([])


def test_codes_arrays_get_the_codes_file_checks(images):
    codes = aeq.encode(images, "vanilla")
    codes[7, 3] = np.nan
    with pytest.raises(aeq.InputError, match=r"NaN or infinite values \(first in code 7\)"):
        aeq.decode(codes, model="vanilla")
    with pytest.raises(aeq.InputError, match="float array"):
        aeq.decode(np.zeros((3, 64), np.int64), model="vanilla")
    with pytest.raises(aeq.InputError, match="float array"):
        aeq.decode(np.zeros((3, 8, 8), np.float32), model="vanilla")


def test_decode_of_an_array_needs_the_model_and_its_code_length(images):
    codes = aeq.encode(images)
    with pytest.raises(aeq.UsageError, match=r"pass model=.*'multilayer'"):
        aeq.decode(codes)
    with pytest.raises(aeq.UsageError, match=r"64-d, conv@1 decodes 128-d"):
        aeq.decode(codes, model="conv")


# -- paths -----------------------------------------------------------------------------------


def test_paths_are_read_as_the_cli_reads_them(tmp_path, images):
    np.save(tmp_path / "digits.npy", images)
    write_idx(tmp_path / "digits-idx3-ubyte.gz", images)
    expected = aeq.denoise(images)
    for inputs in (
        str(tmp_path / "digits.npy"),
        tmp_path / "digits.npy",
        [tmp_path / "digits.npy"],
        (str(tmp_path / "digits-idx3-ubyte.gz"),),
    ):
        np.testing.assert_array_equal(aeq.denoise(inputs), expected)
    both = aeq.denoise([tmp_path / "digits.npy", tmp_path / "digits-idx3-ubyte.gz"])
    np.testing.assert_array_equal(both, np.concatenate([expected, expected]))


def test_a_folder_is_read_in_sorted_order_and_read_images_names_each_result(tmp_path):
    pixels = digits(5)
    for index in (3, 0, 4, 1, 2):
        save_png(tmp_path / "digits" / str(index % 2) / f"d{index}.png", pixels[index])
    (tmp_path / "digits" / "notes.txt").write_text("not an image")

    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\).*notes.txt"):
        read = aeq.read_images(tmp_path / "digits")
    with pytest.warns(UserWarning):
        result = aeq.denoise(tmp_path / "digits")

    assert read.names == ["0_d0", "0_d2", "0_d4", "1_d1", "1_d3"]
    array, names = read
    np.testing.assert_array_equal(array, pixels[[0, 2, 4, 1, 3]])
    np.testing.assert_array_equal(result, aeq.denoise(array))
    assert names is read.names


def test_read_images_of_an_array_gives_the_pixels_the_verbs_send(images):
    read = aeq.read_images(images.astype(np.float64) / 255)
    np.testing.assert_array_equal(read.array, images)
    assert read.names[:2] == ["images_00000", "images_00001"]


def test_a_bad_file_is_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(aeq.InputError, match="bad.png is corrupt or truncated"):
        aeq.denoise(tmp_path / "bad.png")
    with pytest.raises(aeq.InputError, match="does not exist"):
        aeq.encode(str(tmp_path / "missing.npy"))


def test_decode_of_a_codes_file_uses_the_model_it_names(tmp_path, images):
    np.save(tmp_path / "digits.npy", images)
    result = CliRunner().invoke(
        cli.app,
        [
            "encode",
            str(tmp_path / "digits.npy"),
            "--model",
            "sparse",
            "-o",
            str(tmp_path / "c.npz"),
        ],
    )
    assert result.exit_code == 0, result.output
    decoded = aeq.decode(tmp_path / "c.npz")
    codes = aeq.encode(images, "sparse")
    np.testing.assert_array_equal(decoded, aeq.decode(codes, "sparse"))
    with pytest.raises(aeq.InputError, match="one codes file"):
        aeq.decode([tmp_path / "c.npz", tmp_path / "c.npz"])


# -- arguments -------------------------------------------------------------------------------


def test_bad_arguments_are_aeq_errors(images):
    with pytest.raises(aeq.UsageError, match=r"chunk_size must be in 1\.\.4096"):
        aeq.denoise(images, chunk_size=0)
    with pytest.raises(aeq.UsageError, match=r"chunk_size must be in 1\.\.4096"):
        aeq.encode(images, chunk_size=4097)
    with pytest.raises(aeq.ModelNotFoundError, match="model 'nope' is not in .*; published: "):
        aeq.denoise(images, "nope")
    with pytest.raises(aeq.ModelNotFoundError, match="no version 7"):
        aeq.denoise(images, version=7)


def test_repository_argument_overrides_the_environment(monkeypatch, repository, tmp_path, images):
    monkeypatch.setenv("AEQ_MODEL_REPOSITORY", str(tmp_path / "elsewhere"))
    with pytest.raises(aeq.ModelNotFoundError, match="no models published"):
        aeq.denoise(images)
    assert aeq.denoise(images, repository=repository.root).shape == (COUNT, 28, 28)


def test_an_empty_broker_url_runs_locally_even_when_one_is_set(monkeypatch, repository, images):
    monkeypatch.setenv("AEQ_BROKER_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(aeq.BrokerError, match="cannot reach Redis"):
        aeq.denoise(images)
    np.testing.assert_array_equal(
        aeq.denoise(images, broker_url=""),
        engine_output(repository, "denoising", Operation.DENOISE, images),
    )


def test_models_lists_what_aeq_models_lists(repository):
    listed = aeq.models()
    assert [summary.model for summary in listed] == sorted(MODELS)
    cli_json = CliRunner().invoke(cli.app, ["models", "--json"])
    assert [summary.to_json() for summary in listed] == json.loads(cli_json.stdout)


def test_models_of_a_missing_repository_is_an_error(tmp_path):
    with pytest.raises(aeq.UsageError, match="no model repository at"):
        aeq.models(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    assert aeq.models(tmp_path / "empty") == []


# -- the package -----------------------------------------------------------------------------


def test_every_aeq_error_is_exported_from_the_package():
    classes = {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.AeqError)
    }
    for name, value in classes.items():
        assert getattr(aeq, name) is value and name in aeq.__all__


def test_all_names_what_the_package_holds():
    for name in aeq.__all__:
        assert getattr(aeq, name) is not None
    for verb in ("denoise", "reconstruct", "encode", "decode", "models", "Client"):
        assert verb in aeq.__all__


def test_version_comes_from_the_package_metadata():
    assert aeq.__version__ == importlib.metadata.version("aeq")


def test_array_writer_refuses_overlaps_and_reports_missing_items():
    writer = ArrayWriter.for_job(Operation.ENCODE, 5, 4)
    writer.write(2, ["c", "d"], np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        writer.write(3, ["x"], np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="float32"):
        writer.write(0, ["x"], np.ones((1, 4), np.float64))
    with pytest.raises(aeq.JobError, match=r"3 of 5 items never arrived \(first missing: item 0"):
        writer.result()


# -- queued: Client and Job against a real Redis, chunks run inline -----------------------------


@pytest.fixture
def client(redis_server, redis_client):
    return aeq.Client(redis_server.url)


def run_queued_chunks(redis_client, repository) -> None:
    """Do a worker's part: run every queued chunk message with ``process_chunk``."""
    import base64

    import msgpack

    settings = Settings(providers=(CPU_PROVIDER,), model_repository=repository.root)
    context = WorkerContext(
        settings, JobStore(redis_client, 600), repository, Engine(settings), "inline@test"
    )
    while (raw := pop_next_message(redis_client)) is not None:
        envelope = json.loads(raw)
        process_chunk(context, msgpack.unpackb(base64.b64decode(envelope["body"]))[1])


def test_a_submitted_job_reports_its_status_and_returns_the_local_result(
    client, redis_client, repository, images
):
    job = client.submit("denoise", images, chunk_size=5)
    status = job.status()
    assert status.state is JobState.QUEUED and not status.finished
    assert (status.items.total, status.chunks.total, status.chunks.queued) == (COUNT, 3, 3)

    run_queued_chunks(redis_client, repository)
    status = job.status()

    assert status.state is JobState.DONE and status.finished
    assert status.workers == ["inline@test"] and status.providers == [CPU_PROVIDER]
    assert status.to_dict() == status_dict(client._jobs.record(job.id))
    result = job.results()
    np.testing.assert_array_equal(result, aeq.denoise(images))
    assert job.results() is result  # kept: the job's data is gone from Redis
    assert client._jobs.store.is_deleted(job.id) and job.status().collected_at is not None


def test_the_typed_status_has_the_fields_of_aeq_status_json(client, redis_client, repository):
    job = client.submit(Operation.ENCODE, random_images(4), "vanilla")
    run_queued_chunks(redis_client, repository)
    env = {"AEQ_BROKER_URL": client.settings.broker_url}
    printed = CliRunner().invoke(cli.app, ["status", job.id, "--json"], env=env).stdout
    assert json.loads(json.dumps(job.status().to_dict())) == json.loads(printed)


def test_a_job_can_be_reattached_by_id_and_cancelled(client, redis_server, images):
    job = client.submit("reconstruct", images, chunk_size=4)
    again = aeq.Client(redis_server.url).job(job.id)
    assert again.id == job.id and again.status().op is Operation.RECONSTRUCT
    assert again.cancel() == 4
    assert job.status().state is JobState.CANCELLED
    with pytest.raises(aeq.JobError, match="was cancelled"):
        job.results()
    with pytest.raises(aeq.JobError, match="nothing to cancel"):
        job.cancel()


def test_client_errors(redis_server, redis_client, client, images):
    with pytest.raises(aeq.UsageError, match="no broker"):
        aeq.Client()
    with pytest.raises(aeq.JobNotFoundError):
        client.job("0123456789ab")
    with pytest.raises(aeq.UsageError, match="unknown operation 'blur'"):
        client.submit("blur", images)
    floats = np.full((COUNT, 28, 28), 0.5)
    floats[2, 5, 5] = 2.0
    with pytest.raises(aeq.InputError, match="first bad in item 2"):
        client.submit("denoise", floats)
    assert redis_client.llen("aeq") == 0 and not client._jobs.store.recent(5)


def test_interrupting_a_queued_call_cancels_its_job(
    monkeypatch, redis_server, redis_client, images
):
    """Nobody holds the id of a job a blocking call queued: stopping the call must not leave it
    running for the workers."""
    from aeq.client.client import JobClient

    follow = JobClient.follow

    def interrupted(self, job, writer, state=None, on_progress=None, block=True):
        if block:
            raise KeyboardInterrupt
        return follow(self, job, writer, state, on_progress, block)

    monkeypatch.setattr(JobClient, "follow", interrupted)
    with pytest.raises(KeyboardInterrupt):
        aeq.denoise(images, broker_url=redis_server.url, chunk_size=5)
    (record,) = JobStore(redis_client, 600).recent(5)
    assert record.state is JobState.CANCELLED and redis_client.llen("aeq") == 3


def test_import_aeq_loads_the_api_on_first_use_only():
    script = (
        "import sys, aeq\n"
        "print('numpy' in sys.modules, 'aeq.api' in sys.modules)\n"
        "from aeq import *\n"
        "print(denoise is aeq.denoise, Client is aeq.api.Client, 'score' in dir(aeq))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["False False", "True True True"]
