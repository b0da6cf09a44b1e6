"""ONNX Runtime inference on chunks, with small real graphs in a real model repository."""

from __future__ import annotations

import os

import numpy as np
import pytest
from worker_support import expected, publish_tiny, random_images, tiny_repository

from aeq.core.catalog import MODELS, Graph, Operation
from aeq.core.errors import IntegrityError, ProviderError
from aeq.core.settings import Settings
from aeq.repository import ModelRepository
from worker import inference
from worker.inference import CPU_PROVIDER, Engine, from_graph_output, to_graph_input

CPU_ONLY = Settings(providers=(CPU_PROVIDER,))


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return tiny_repository(tmp_path_factory.mktemp("models") / "repository")


@pytest.fixture(scope="module")
def engine():
    return Engine(CPU_ONLY)


def codes_for(name: str, count: int) -> np.ndarray:
    return np.random.default_rng(3).random((count, MODELS[name].code_dim), dtype=np.float32)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("op", [Operation.DENOISE, Operation.RECONSTRUCT])
def test_image_operations_return_rounded_uint8_images(repository, engine, name, op):
    images = random_images(17)
    result = engine.run(repository.get(name), op, images)
    assert result.array.dtype == np.uint8 and result.array.shape == (17, 28, 28)
    want = expected(MODELS[name], Graph.AUTOENCODER, images / 255.0).reshape(17, 28, 28)
    # float32 inference vs float64 reference: a value on a .5 boundary may round either way.
    assert np.abs(result.array.astype(int) - np.rint(want * 255)).max() <= 1
    assert result.provider == CPU_PROVIDER


@pytest.mark.parametrize("name", list(MODELS))
def test_encode_returns_flat_float32_codes(repository, engine, name):
    images = random_images(9)
    result = engine.run(repository.get(name), Operation.ENCODE, images)
    assert result.array.dtype == np.float32
    assert result.array.shape == (9, MODELS[name].code_dim)
    np.testing.assert_allclose(
        result.array, expected(MODELS[name], Graph.ENCODER, images / 255.0), atol=1e-5
    )


@pytest.mark.parametrize("name", list(MODELS))
def test_decode_turns_codes_into_images(repository, engine, name):
    codes = codes_for(name, 6)
    result = engine.run(repository.get(name), Operation.DECODE, codes)
    assert result.array.dtype == np.uint8 and result.array.shape == (6, 28, 28)
    want = expected(MODELS[name], Graph.DECODER, codes).reshape(6, 28, 28)
    assert np.abs(result.array.astype(int) - np.rint(want * 255)).max() <= 1


def test_pixels_are_scaled_to_unit_floats_in_the_graphs_layout():
    images = np.array([[[0, 255] * 14] * 28], np.uint8)
    flat = to_graph_input(Operation.DENOISE, images, (784,))
    grid = to_graph_input(Operation.DENOISE, images, (28, 28, 1))
    assert flat.shape == (1, 784) and grid.shape == (1, 28, 28, 1)
    assert flat.dtype == np.float32 and set(np.unique(flat)) == {0.0, 1.0}


def test_outputs_are_clipped_and_rounded():
    raw = np.array([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 0.5, 1.0, 7.0] + [0.0] * 777, np.float32)
    pixels = from_graph_output(Operation.DENOISE, raw.reshape(1, 784), 1).reshape(-1)
    assert list(pixels[:7]) == [0, 0, 0, 1, 128, 255, 255]


def test_one_session_per_model_version_and_graph(repository):
    engine = Engine(CPU_ONLY)
    version = repository.get("vanilla")
    first = engine.graph(version, Graph.AUTOENCODER)
    engine.run(version, Operation.DENOISE, random_images(2))
    engine.run(version, Operation.RECONSTRUCT, random_images(2))
    assert engine.graph(version, Graph.AUTOENCODER) is first
    assert engine.graph(version, Graph.ENCODER) is not first


def test_the_same_model_version_in_two_repositories_gets_two_sessions(repository, tmp_path):
    other = ModelRepository(tmp_path / "other")
    publish_tiny(other, "vanilla", seed=7)
    engine = Engine(CPU_ONLY)
    images = random_images(3)
    ours = engine.run(repository.get("vanilla"), Operation.RECONSTRUCT, images).array
    theirs = engine.run(other.get("vanilla"), Operation.RECONSTRUCT, images).array
    assert repository.get("vanilla").label == other.get("vanilla").label == "vanilla@1"
    assert not np.array_equal(ours, theirs)


def test_a_tampered_graph_is_refused(tmp_path):
    repository = tiny_repository(tmp_path / "repository")
    version = repository.get("vanilla")
    path = version.path / "autoencoder.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IntegrityError, match="sha256"):
        Engine(CPU_ONLY).run(version, Operation.DENOISE, random_images(1))


def test_cuda_requested_falls_back_to_cpu_and_says_so(repository, caplog):
    engine = Engine(Settings(providers=("CUDAExecutionProvider", CPU_PROVIDER)))
    with caplog.at_level("INFO", logger="worker.inference"):
        result = engine.run(repository.get("vanilla"), Operation.DENOISE, random_images(1))
    # This machine has no GPU: the provider actually used is read back, not assumed.
    assert result.provider == CPU_PROVIDER
    assert "providers in use ['CPUExecutionProvider']" in caplog.text


def test_require_gpu_refuses_a_cpu_session(repository):
    engine = Engine(Settings(providers=("CUDAExecutionProvider", CPU_PROVIDER)), require_gpu=True)
    with pytest.raises(ProviderError, match="not CUDA"):
        engine.run(repository.get("vanilla"), Operation.DENOISE, random_images(1))


def test_threads_split_the_cores_between_processes(monkeypatch):
    monkeypatch.setattr(inference, "cpu_cores", lambda: 8)
    assert inference.threads_per_process(Settings(), 1) == 8
    assert inference.threads_per_process(Settings(), 3) == 2
    assert inference.threads_per_process(Settings(), 16) == 1
    assert inference.threads_per_process(Settings(threads_per_process=5), 4) == 5


def test_no_session_is_made_at_import_or_engine_creation(repository):
    engine = Engine(CPU_ONLY)
    assert engine._sessions == {}
    assert engine._pid == os.getpid()


@pytest.mark.parametrize(
    ("cpu_max", "expected_cpus"),
    [("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000", 1)],
)
def test_a_cgroup_cpu_quota_is_read_as_whole_cpus(tmp_path, cpu_max, expected_cpus):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert inference.cgroup_cpu_quota(path) == expected_cpus


def test_a_container_cpu_quota_caps_the_cores(tmp_path, monkeypatch):
    quota_file = tmp_path / "cpu.max"
    quota_file.write_text("100000 100000\n")
    monkeypatch.setattr(inference, "CGROUP_CPU_MAX", quota_file)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert inference.cpu_cores() == 1


def test_pool_threads_do_not_spin_when_a_session_has_several():
    threaded = Engine(Settings(providers=(CPU_PROVIDER,), threads_per_process=2))._session_options()
    assert threaded.intra_op_num_threads == 2
    assert threaded.get_session_config_entry(inference.ALLOW_SPINNING_KEY) == "0"
    single = Engine(Settings(providers=(CPU_PROVIDER,), threads_per_process=1))._session_options()
    assert single.intra_op_num_threads == 1
    with pytest.raises(RuntimeError):  # never set: a one-thread session has no pool to spin
        single.get_session_config_entry(inference.ALLOW_SPINNING_KEY)


@pytest.mark.parametrize(
    ("providers", "nvidia", "expected_gpu"),
    [
        (("CUDAExecutionProvider", CPU_PROVIDER), True, True),
        (("CUDAExecutionProvider", CPU_PROVIDER), False, False),
        (("TensorrtExecutionProvider", CPU_PROVIDER), True, True),
        ((CPU_PROVIDER,), True, False),
    ],
)
def test_a_gpu_is_expected_only_when_asked_for_and_a_driver_is_there(
    monkeypatch, providers, nvidia, expected_gpu
):
    monkeypatch.setattr(inference, "nvidia_device_visible", lambda: nvidia)
    assert inference.gpu_expected(providers) is expected_gpu


@pytest.mark.parametrize(
    ("name", "op"),
    [
        ("conv", Operation.RECONSTRUCT),
        ("denoising", Operation.DENOISE),
        ("vanilla", Operation.ENCODE),
    ],
)
def test_a_chunk_is_fed_in_slices_with_the_same_outputs_as_one_call(
    repository, monkeypatch, name, op
):
    version, items = repository.get(name), random_images(10)
    whole = Engine(CPU_ONLY).run(version, op, items).array
    calls = []
    engine = Engine(CPU_ONLY)
    run_batch = engine._run_batch
    monkeypatch.setattr(engine, "_run_batch", lambda *a: calls.append(len(a[2])) or run_batch(*a))
    monkeypatch.setattr(inference, "MAX_SESSION_BATCH", 4)
    sliced = engine.run(version, op, items).array
    assert calls == [4, 4, 2]
    assert sliced.dtype == whole.dtype and sliced.shape == whole.shape
    np.testing.assert_array_equal(sliced, whole)
