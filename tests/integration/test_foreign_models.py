"""ONNX models made elsewhere, published with ``aeq export --onnx`` and served by real workers.

PyTorch-style graphs (``input.1`` -> ``output_0``, NCHW, batch fixed at 1; built with
``onnx.helper``, tests/unit/foreign_support.py) go through the real pipeline: the installed
``aeq export --onnx`` publishes them into a repository of this test's own, a real ``aeq worker``
serves them from a real redis-server, and ``aeq reconstruct``/``encode``/``decode`` run as a
user runs them. Each output is compared with ONNX Runtime's own result on the same images,
converted by the same pixel-scale rule (in float64 here, not with the worker's code).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Service, running_service
from helpers import read_codes

from aeq.core.pixel_scale import PixelScale
from tests.unit.foreign_support import (
    conv_autoencoder,
    decoder,
    encoder,
    run_onnx,
    to_graph,
    to_pixels,
    write,
)

pytestmark = pytest.mark.integration

ITEMS = 300
CHUNK = 128  # 3 chunks, the last one short: a fixed-batch graph runs every piece of it


@pytest.fixture
def foreign(redis_server, mnist, tmp_path) -> Iterator[Service]:
    """A private Redis and a repository of this test's own, for ``aeq export --onnx`` to fill
    (no model aeq trained is needed)."""
    yield from running_service(redis_server, tmp_path / "repository", tmp_path)


def publish(service: Service, mnist, *args: str) -> None:
    result = service.aeq("export", *args, "--data", str(mnist.data_arg))
    assert result.returncode == 0, result.stderr


def run_job(service: Service, *args: str):
    result = service.aeq(*args, "--chunk-size", str(CHUNK))
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize(
    ("batch", "scale"), [(1, PixelScale.UNIT), (1, PixelScale.SYMMETRIC)], ids=["0-1", "-1-1"]
)
def test_reconstruct_through_workers_equals_onnx_runtime(foreign, mnist, tmp_path, batch, scale):
    graph = conv_autoencoder(batch, scale)
    source = write(tmp_path, "ae.onnx", graph)
    publish(foreign, mnist, "--onnx", str(source), "--name", "torch-ae", "--scale", scale.value)
    foreign.start_worker("one")
    images = mnist.test_images[:ITEMS]
    np.save(tmp_path / "in.npy", images)

    run_job(foreign, "reconstruct", str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy"),
            "--model", "torch-ae")  # fmt: skip

    reference = run_onnx(graph, to_graph(images, scale).reshape(-1, 1, 28, 28), batch)
    output = np.load(tmp_path / "out.npy")
    assert output.shape == (ITEMS, 28, 28)
    assert np.abs(output.astype(int) - to_pixels(reference, scale).astype(int)).max() <= 1
    [job] = json.loads(foreign.aeq("jobs", "--json").stdout)
    assert (job["model"], job["version"], job["state"]) == ("torch-ae", 1, "done")
    assert job["items"]["done"] == ITEMS and job["chunks"]["done"] == 3


def test_encode_and_decode_through_workers_and_refusals_up_front(foreign, mnist, tmp_path):
    graphs = {"ae": conv_autoencoder(1), "enc": encoder(batch=1), "dec": decoder(batch="batch")}
    paths = {name: str(write(tmp_path, f"{name}.onnx", data)) for name, data in graphs.items()}
    publish(foreign, mnist, "--onnx", paths["ae"], "--encoder", paths["enc"],
            "--decoder", paths["dec"], "--name", "pair")  # fmt: skip
    publish(foreign, mnist, "--onnx", paths["ae"], "--name", "alone")
    foreign.start_worker("one")
    images = mnist.test_images[:ITEMS]
    np.save(tmp_path / "in.npy", images)
    codes_path, decoded_path = tmp_path / "codes.npy", tmp_path / "decoded.npy"

    run_job(foreign, "encode", str(tmp_path / "in.npy"), "-o", str(codes_path), "--model", "pair")
    run_job(foreign, "decode", str(codes_path), "-o", str(decoded_path))
    refused = foreign.aeq("encode", str(tmp_path / "in.npy"), "-o", str(tmp_path / "no.npy"),
                          "--model", "alone")  # fmt: skip

    feed = to_graph(images, PixelScale.UNIT).reshape(-1, 1, 28, 28)
    expected_codes = run_onnx(graphs["enc"], feed, 1).reshape(ITEMS, 16)
    codes, meta = read_codes(codes_path)
    assert codes.shape == (ITEMS, 16) and (meta["model"], meta["version"]) == ("pair", 1)
    np.testing.assert_allclose(codes, expected_codes, atol=1e-5)
    expected_images = to_pixels(
        run_onnx(graphs["dec"], codes.reshape(-1, 4, 2, 2)), PixelScale.UNIT
    )
    decoded = np.load(decoded_path)
    assert np.abs(decoded.astype(int) - expected_images.astype(int)).max() <= 1
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.splitlines() == [
        "error: alone@1 has no encoder graph (published without one): it serves denoise, "
        "reconstruct, score, not encode"
    ]
    jobs = json.loads(foreign.aeq("jobs", "--json").stdout)
    assert sorted((job["op"], job["state"]) for job in jobs) == [
        ("decode", "done"),
        ("encode", "done"),
    ]  # the refused encode never reached Redis
    assert not Path(tmp_path / "no.npy").exists()
