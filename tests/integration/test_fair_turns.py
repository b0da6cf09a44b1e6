"""Jobs side by side: a small job submitted behind a big one takes the next free slot instead of
waiting for the big job's queued chunks, whether the big job's client waits (it queues a window
at a time) or not (--no-wait queues everything at once: its chunks past the first window wait on
the lowest priority list)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import wait_for

from aeq.queue.lost_messages import queue_lists
from aeq.queue.protocol import QUEUE

pytestmark = pytest.mark.integration

CHUNK = 256
BIG_CHUNKS = 80


def job_record(client, job: str) -> dict[bytes, bytes]:
    return client.hgetall(f"aeq:job:{{{job}}}")


def queued_messages(client) -> int:
    return sum(client.llen(name) for name in queue_lists(QUEUE))


@pytest.mark.parametrize("big_waits", [True, False], ids=["waiting", "no-wait"])
def test_a_small_job_behind_a_big_one_takes_the_next_free_slot(
    service, mnist, redis_server, tmp_path, big_waits
):
    """Strict FIFO (before the window) started the small job only once the big job's last chunk
    was taken: 61 of the big job's 80 chunks finished while it waited (AEQ_WINDOW_CHUNKS=1000);
    behind the window alone 3 or 4 did. Now the chunk that was running when it was queued does,
    and at most one more caught between the polls here."""
    big = np.resize(mnist.test_images, (BIG_CHUNKS * CHUNK, 28, 28))
    np.save(tmp_path / "big.npy", big)
    np.save(tmp_path / "small.npy", mnist.test_images[:10])
    service.start_worker("only", "--concurrency", "1")
    client = redis_server.client()
    how = ["-o", str(tmp_path / "big-out.npy")] if big_waits else ["--no-wait"]
    big_process = service.popen(
        "denoise", str(tmp_path / "big.npy"), *how, "--chunk-size", str(CHUNK)
    )
    processes = [big_process]
    try:
        (big_job,) = wait_for(lambda: jobs(client), 30, "the big job")
        done = lambda: int(job_record(client, big_job).get(b"done", 0))  # noqa: E731
        # Past its first window (4 chunks with one worker process): the rest are its backlog.
        wait_for(lambda: done() >= 4, 60, "the big job's first window")
        most_queued = max(queued_messages(client) for _ in range(50))
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
    print(f"big job's chunks done while the small one waited: {big_done_meanwhile}")
    assert big_done_meanwhile <= 2, (big_done_before, big_done_meanwhile)
    assert big_done_before + big_done_meanwhile < BIG_CHUNKS - 8
    assert np.load(tmp_path / "s.npy").shape == (10, 28, 28)
    if big_waits:
        assert most_queued <= 4  # one worker process: the smallest window
        assert np.load(tmp_path / "big-out.npy").shape == big.shape
    else:
        assert most_queued > 8  # --no-wait queued its whole job at once
        wait_for(lambda: done() == BIG_CHUNKS, 300, "the big job")


def jobs(client) -> set[str]:
    return {job.decode() for job in client.zrange("aeq:jobs", 0, -1)}
