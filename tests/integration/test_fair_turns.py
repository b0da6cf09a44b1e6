"""Jobs side by side: a waiting client queues its job a window at a time, so a small job
submitted behind a big one takes its turn between the big job's chunks instead of after them."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import wait_for

pytestmark = pytest.mark.integration

CHUNK = 256
BIG_CHUNKS = 80


def job_record(client, job: str) -> dict[bytes, bytes]:
    return client.hgetall(f"aeq:job:{{{job}}}")


def test_a_small_job_behind_a_big_one_waits_for_a_window_not_the_backlog(
    service, mnist, redis_server, tmp_path
):
    """Strict FIFO (before) started the small job only once the big job's last chunk was taken:
    61 of the big job's 80 chunks finished while it waited (AEQ_WINDOW_CHUNKS=1000). Now 3 or 4
    do."""
    big = np.resize(mnist.test_images, (BIG_CHUNKS * CHUNK, 28, 28))
    np.save(tmp_path / "big.npy", big)
    np.save(tmp_path / "small.npy", mnist.test_images[:10])
    service.start_worker("only", "--concurrency", "1")
    client = redis_server.client()
    big_process = service.popen(
        "denoise",
        str(tmp_path / "big.npy"),
        "-o",
        str(tmp_path / "big-out.npy"),
        "--chunk-size",
        str(CHUNK),
    )
    processes = [big_process]
    try:
        (big_job,) = wait_for(lambda: jobs(client), 30, "the big job")
        done = lambda: int(job_record(client, big_job).get(b"done", 0))  # noqa: E731
        wait_for(lambda: done() >= 2, 60, "the big job's first chunks")
        most_queued = max(client.llen("aeq") for _ in range(50))
        processes.append(
            service.popen("denoise", str(tmp_path / "small.npy"), "-o", str(tmp_path / "s.npy"))
        )
        small_job = wait_for(lambda: jobs(client) - {big_job}, 30, "the small job").pop()
        queued = lambda: job_record(client, small_job).get(b"queued") == b"1"  # noqa: E731
        wait_for(queued, 30, "the small job's one chunk queued")
        big_done_before = done()
        wait_for(lambda: job_record(client, small_job).get(b"finished_at"), 120, "the small job")
        big_done_meanwhile = done() - big_done_before
        outcomes = [process.communicate(timeout=600) for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [process.returncode for process in processes] == [0, 0], outcomes
    assert most_queued <= 4  # one worker process: the smallest window
    print(f"big job's chunks done while the small one waited: {big_done_meanwhile}")
    # Behind at most the window's 4 chunks (plus the polling's 50 ms), not the backlog.
    assert big_done_meanwhile <= 8, (big_done_before, big_done_meanwhile)
    assert big_done_before + big_done_meanwhile < BIG_CHUNKS - 8
    assert np.load(tmp_path / "big-out.npy").shape == big.shape
    assert np.load(tmp_path / "s.npy").shape == (10, 28, 28)


def jobs(client) -> set[str]:
    return {job.decode() for job in client.zrange("aeq:jobs", 0, -1)}
