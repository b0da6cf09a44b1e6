"""What the job commands report, against a real redis-server and a real ``aeq worker``.

``aeq jobs --json`` shows each job as ``aeq status --json`` does (it once showed no providers, no
workers and no inference time), ``aeq results --json`` the same fields plus the output, a job's
elapsed time runs from its submission, and ``--repository`` reaches both the submitting command
and the worker, over an ``AEQ_MODEL_REPOSITORY`` that points nowhere.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.integration

ITEMS = 64  # one chunk
# The job waits in the queue at least this long before a worker starts.
QUEUED_FOR_S = 2.0
DONE_TIMEOUT_S = 60.0


def wait_until_done(service, job: str) -> dict:
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while time.monotonic() < deadline:
        status = json.loads(service.aeq("status", job, "--json").stdout)
        if status["state"] == "done":
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job} not done after {DONE_TIMEOUT_S} s: {status}")


def test_jobs_results_and_status_report_the_same_job(service, mnist, tmp_path):
    np.save(tmp_path / "digits.npy", mnist.test_images[:ITEMS])
    nowhere = {"AEQ_MODEL_REPOSITORY": str(tmp_path / "nowhere")}
    repository = ["--repository", str(service.repository)]

    queued = service.aeq("denoise", str(tmp_path / "digits.npy"), "--no-wait", *repository,
                         env=nowhere)  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    job = queued.stdout.strip()
    time.sleep(QUEUED_FOR_S)
    service.start_worker("one", *repository, env=nowhere)
    status = wait_until_done(service, job)

    assert status["providers"] == ["CPUExecutionProvider"] and status["workers"] == ["one@test"]
    assert status["inference_seconds"] > 0
    # From submission to the end, queueing included (it read the one chunk's run, "0.00 s").
    assert status["seconds"] >= QUEUED_FOR_S
    [listed] = json.loads(service.aeq("jobs", "--json").stdout)
    assert listed == status

    collected = service.aeq("results", job, "-o", str(tmp_path / "out.npy"), "--json")

    assert collected.returncode == 0, collected.stderr
    report = json.loads(collected.stdout)
    assert report["output"] == str(tmp_path / "out.npy")
    assert report["collected_at"] is not None
    assert {key: value for key, value in report.items() if key not in ("output", "collected_at")} \
        == {key: value for key, value in status.items() if key != "collected_at"}  # fmt: skip
    assert np.load(tmp_path / "out.npy").shape == (ITEMS, 28, 28)
