"""Streaming jobs: a waiting client stores each finished chunk for good and lets Redis go of it,
so Redis holds a window of a job, not the job; killed, the same command with --resume goes on."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from helpers import assert_same_pixels, reference_run, to_pixels, wait_for

from aeq.client.client import NOTE_BATCH_CHUNKS
from aeq.core.catalog import Graph
from aeq.files.resume import CHUNKS_FILE, ResumePoint

pytestmark = pytest.mark.integration

CHUNK = 256
CHUNKS = 160


def noted_chunks(point: ResumePoint) -> int:
    """Complete lines in the notes, read without touching the file (the client appends)."""
    path = point.folder / CHUNKS_FILE
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.fixture
def many(mnist, tmp_path):
    images = np.resize(mnist.test_images, (CHUNKS * CHUNK, 28, 28))
    np.save(tmp_path / "in.npy", images)
    return images


def test_a_killed_client_resumes_where_its_output_stopped(service, many, redis_server, tmp_path):
    out = tmp_path / "out.npy"
    point = ResumePoint(out)
    client = redis_server.client()
    service.start_worker("one", "--concurrency", "1")
    args = ("denoise", str(tmp_path / "in.npy"), "-o", str(out))
    first = service.popen(*args, "--chunk-size", str(CHUNK))
    try:
        wait_for(lambda: noted_chunks(point) >= 12, 120, "a dozen chunks stored")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
    job = point.job().job
    stored = [chunk.chunk for chunk in point.stored()]
    assert 12 <= len(stored) < CHUNKS
    # What the client stored for good has left Redis, but for the last batch noted, which the
    # kill may have caught between its note and its delete.
    last_batch = stored[-NOTE_BATCH_CHUNKS:]
    assert not any(
        client.exists(f"aeq:job:{{{job}}}:out:{chunk}")
        for chunk in stored
        if chunk not in last_batch
    )

    # Nobody but that client (or its --resume) can collect a streamed job.
    other = service.aeq("results", job, "-o", str(tmp_path / "other.npy"))
    assert other.returncode == 1, other.stderr
    assert "--resume" in other.stderr and len(other.stderr.strip().splitlines()) == 1

    # --chunk-size is the job's, whatever is given again.
    resumed = service.aeq(*args, "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"job {job}: resuming, {len(stored) * CHUNK:,} of" in resumed.stderr

    expected = to_pixels(reference_run(service.repository, "denoising", Graph.AUTOENCODER, many))
    assert_same_pixels(np.load(out), expected)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []
    record = client.hgetall(f"aeq:job:{{{job}}}")
    assert int(record[b"done"]) == CHUNKS and int(record[b"items_done"]) == CHUNKS * CHUNK


def test_a_new_job_will_not_take_the_place_of_an_unfinished_one(service, many, tmp_path):
    out = tmp_path / "out.npy"
    point = ResumePoint(out)
    point.prepare()
    (point.folder / "job.json").write_text(
        '{"format": "aeq-resume", "job": "0123456789ab", "op": "denoise", "model": "denoising",'
        ' "version": 1, "total": 5, "chunk_size": 512}'
    )
    refused = service.aeq("denoise", str(tmp_path / "in.npy"), "-o", str(out))
    assert refused.returncode == 2, refused.stderr
    assert "unfinished job (0123456789ab)" in refused.stderr and "--resume" in refused.stderr
    other = service.aeq("reconstruct", str(tmp_path / "in.npy"), "-o", str(out), "--resume")
    assert other.returncode == 2 and "resume it with the command that started it" in other.stderr


def test_redis_holds_a_window_of_a_streamed_job(service, many, redis_server, tmp_path):
    """Sampled during the job: Redis grows by a few chunks, not by the job's 80 MB."""
    client = redis_server.client()
    service.start_worker("one")
    baseline = int(client.info("memory")["used_memory"])
    peak = baseline
    running = threading.Event()
    running.set()

    named = False

    def sample() -> None:
        nonlocal peak, named
        while running.is_set():
            peak = max(peak, int(client.info("memory")["used_memory"]))
            named = named or bool(client.keys("aeq:job:*:names"))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        done = service.aeq(
            "denoise", str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy"),
            "--chunk-size", str(CHUNK), timeout=300,
        )  # fmt: skip
    finally:
        running.clear()
        sampler.join()
    assert done.returncode == 0, done.stderr
    job_bytes = 2 * many.nbytes  # inputs and outputs, had they all stayed until collected
    window_bytes = 2 * 16 * CHUNK * many[0].nbytes  # 16 chunks of each: far above the window
    grown = (peak - baseline) / 2**20
    print(f"Redis grew by {grown:.1f} MiB for a {job_bytes / 2**20:.0f} MiB job")
    assert peak - baseline < window_bytes < job_bytes / 4
    assert not named  # its client writes the item names itself: none went to Redis
