"""Jobs end to end: real redis-server, real ``aeq worker`` processes, the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    assert_same_pixels,
    noisy,
    psnr,
    read_codes,
    read_png_folder,
    reference_run,
    to_pixels,
)

from aeq.core.catalog import MODELS, Graph

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

DENOISE_ITEMS = 2000


def test_denoise_2000_noisy_digits_through_two_workers(service, mnist, tmp_path):
    clean = mnist.test_images[:DENOISE_ITEMS]
    inputs = noisy(clean)
    np.save(tmp_path / "noisy.npy", inputs)
    service.start_worker("one")
    service.start_worker("two")

    result = service.aeq(
        "denoise", str(tmp_path / "noisy.npy"), "-o", str(tmp_path / "out"), "--chunk-size", "100"
    )

    assert result.returncode == 0, result.stderr
    names, images = read_png_folder(tmp_path / "out")
    assert len(names) == DENOISE_ITEMS and images.shape == clean.shape
    assert psnr(images, clean) > psnr(inputs, clean) + 1.0
    # The worker's pixels are exactly what a plain in-process session gives.
    expected = to_pixels(reference_run(service.repository, "denoising", Graph.AUTOENCODER, inputs))
    assert_same_pixels(images, expected)
    job = _job_id(service)
    status = json.loads(service.aeq("status", job, "--json").stdout)
    assert status["state"] == "done" and status["items"]["done"] == DENOISE_ITEMS
    assert status["chunks"]["done"] == 20 and status["providers"] == ["CPUExecutionProvider"]
    assert status["workers"] == ["one@test", "two@test"]
    assert status["collected_at"] is not None


def test_encode_matches_in_process_onnx_runtime(service, mnist, tmp_path):
    images = mnist.test_images[:300]
    np.save(tmp_path / "digits.npy", images)
    service.start_worker("one")

    result = service.aeq(
        "encode", str(tmp_path / "digits.npy"), "-o", str(tmp_path / "codes.npy"),
        "--chunk-size", "128",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    codes, meta = read_codes(tmp_path / "codes.npy")
    assert codes.shape == (300, MODELS["multilayer"].code_dim) and codes.dtype == np.float32
    expected = reference_run(service.repository, "multilayer", Graph.ENCODER, images)
    np.testing.assert_allclose(codes, expected, rtol=0, atol=1e-5)
    assert (meta["model"], meta["version"], len(meta["names"])) == ("multilayer", 1, 300)


def test_decode_round_trip(service, mnist, tmp_path):
    images = mnist.test_images[:200]
    np.save(tmp_path / "digits.npy", images)
    service.start_worker("one")
    codes = tmp_path / "codes.npy"
    assert service.aeq("encode", str(tmp_path / "digits.npy"), "-o", str(codes)).returncode == 0

    result = service.aeq("decode", str(codes), "-o", str(tmp_path / "decoded.npy"))

    assert result.returncode == 0, result.stderr
    decoded = np.load(tmp_path / "decoded.npy", allow_pickle=False)
    # decode(encode(x)) is the autoencoder's output, up to float rounding at a .5 pixel boundary.
    through = to_pixels(reference_run(service.repository, "multilayer", Graph.AUTOENCODER, images))
    assert decoded.shape == (200, 28, 28)
    assert_same_pixels(decoded, through)
    assert psnr(decoded, images) > 12.0


def test_no_wait_then_status_and_results_from_other_processes(service, mnist, tmp_path):
    np.save(tmp_path / "digits.npy", mnist.test_images[:500])
    service.start_worker("one")

    queued = service.aeq(
        "reconstruct", str(tmp_path / "digits.npy"), "--no-wait", "--chunk-size", "100"
    )
    assert queued.returncode == 0, queued.stderr
    job = queued.stdout.strip()
    assert len(job) == 12 and f"aeq results {job}" in queued.stderr
    listed = service.aeq("jobs")
    assert job in listed.stdout and "reconstruct" in listed.stdout

    collected = service.aeq("results", job, "-o", str(tmp_path / "out.npz"))

    assert collected.returncode == 0, collected.stderr
    with np.load(tmp_path / "out.npz", allow_pickle=False) as archive:
        assert archive["images"].shape == (500, 28, 28)
    status = service.aeq("status", job)
    assert status.returncode == 0
    assert "done" in status.stdout and "conv@1" in status.stdout
    assert "CPUExecutionProvider" in status.stdout
    again = service.aeq("results", job, "-o", str(tmp_path / "again.npz"))
    assert again.returncode != 0 and "collected and deleted" in again.stderr
    assert not (tmp_path / "again.npz").exists()


def test_results_with_keep_can_be_collected_twice(service, mnist, tmp_path):
    np.save(tmp_path / "digits.npy", mnist.test_images[:64])
    service.start_worker("one")
    job = service.aeq("denoise", str(tmp_path / "digits.npy"), "--no-wait").stdout.strip()

    first = service.aeq("results", job, "-o", str(tmp_path / "a.npy"), "--keep")
    second = service.aeq("results", job, "-o", str(tmp_path / "b.npy"))

    assert first.returncode == 0 and second.returncode == 0, second.stderr
    a = np.load(tmp_path / "a.npy")
    np.testing.assert_array_equal(a, np.load(tmp_path / "b.npy"))


def test_local_mode_end_to_end(service, mnist, tmp_path):
    images = noisy(mnist.test_images[:150], seed=4)
    np.save(tmp_path / "noisy.npy", images)
    env = {"AEQ_BROKER_URL": ""}

    result = service.aeq(
        "denoise", str(tmp_path / "noisy.npy"), "-o", str(tmp_path / "out"), env=env
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.count("local mode") == 1
    _, out = read_png_folder(tmp_path / "out")
    expected = to_pixels(reference_run(service.repository, "denoising", Graph.AUTOENCODER, images))
    assert_same_pixels(out, expected)
    # Nothing went through Redis.
    assert service.aeq("jobs").stderr.strip() == "no jobs in the result store"


def _job_id(service) -> str:
    listed = json.loads(service.aeq("jobs", "--json").stdout)
    assert len(listed) == 1
    return listed[0]["job"]


def test_prefork_worker_serves_and_answers_the_healthcheck(service, mnist, tmp_path):
    np.save(tmp_path / "digits.npy", mnist.test_images[:400])
    worker = service.start_worker("pool", "--concurrency", "2")

    result = service.aeq(
        "reconstruct", str(tmp_path / "digits.npy"), "-o", str(tmp_path / "out.npy"),
        "--chunk-size", "50",
    )  # fmt: skip
    ping = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", "inspect", "ping",
         "-d", "pool@test", "--timeout", "10"],
        capture_output=True, text=True, env=service.env, cwd=ROOT, timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "prefork" in worker.text() and "concurrency: 2" in worker.text()
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
    # The children made their sessions after the fork, with the thread count the fixture set.
    assert "1 intra-op threads" in worker.text()


def test_results_default_to_the_output_given_at_submission(service, mnist, tmp_path):
    np.save(tmp_path / "digits.npy", mnist.test_images[:32])
    service.start_worker("one")
    queued = service.aeq("denoise", "digits.npy", "-o", "later.npy", "--no-wait", cwd=tmp_path)
    job = queued.stdout.strip()

    collected = service.aeq("results", job)  # from another folder: the path was made absolute

    assert collected.returncode == 0, collected.stderr
    assert np.load(tmp_path / "later.npy").shape == (32, 28, 28)
