"""``aeq score`` through a real redis-server and real ``aeq worker`` processes.

The scores are computed in the workers, next to inference: what comes back through Redis is 12
bytes an item, and it equals what local mode computes in this process with the workers' provider
and thread count. Calibration, ``--top``, ``aeq results`` and ``aeq.score`` ride on the same job.
The conv model is copied into a repository of the test's own, as calibrating writes into it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest
from helpers import wait_for

import aeq
from aeq.core.catalog import SCORE_METRICS
from aeq.repository import ModelRepository

pytestmark = pytest.mark.integration

ITEMS = 600
CHUNK = 100


@pytest.fixture
def repository(service, tmp_path):
    """A repository holding the service's conv model alone, for this test to calibrate."""
    copy = tmp_path / "repository"
    shutil.copytree(service.repository / "conv", copy / "conv")
    return copy


@pytest.fixture
def inputs(mnist, tmp_path):
    path = tmp_path / "digits.npy"
    np.save(path, mnist.test_images[:ITEMS])
    return path


def score(service, repository, *args, local=False):
    env = {"AEQ_MODEL_REPOSITORY": str(repository), "AEQ_THREADS": "1"}
    if local:
        env["AEQ_BROKER_URL"] = ""
    result = service.aeq("score", *args, "--chunk-size", str(CHUNK), env=env)
    assert result.returncode == 0, result.stderr
    return result


def rows(path):
    return list(csv.DictReader(path.open()))


def test_scores_come_from_the_workers_and_equal_local_mode(service, repository, inputs, tmp_path):
    for name in ("one", "two"):
        service.start_worker(name, env={"AEQ_MODEL_REPOSITORY": str(repository)})

    queued = score(service, repository, str(inputs), "-o", str(tmp_path / "q.csv"), "--top", "6")
    score(service, repository, str(inputs), "-o", str(tmp_path / "l.csv"), local=True)

    assert rows(tmp_path / "q.csv") == rows(tmp_path / "l.csv")
    first = rows(tmp_path / "q.csv")[0]
    assert first["rank"] == "1" and first["model"] == "conv@1"
    assert len(rows(tmp_path / "q.csv")) == ITEMS
    assert "scored 600 items with conv@1 (job " in queued.stderr
    assert (tmp_path / "q-top.png").is_file()
    jobs = json.loads(service.aeq("jobs", "--json").stdout)
    assert [(job["op"], job["state"], job["items"]["done"]) for job in jobs] == [
        ("score", "done", ITEMS)
    ]
    assert jobs[0]["workers"] and set(jobs[0]["workers"]) <= {"one@test", "two@test"}


def test_a_score_job_keeps_twelve_bytes_an_item_in_redis(service, repository, inputs, tmp_path):
    service.start_worker("one", env={"AEQ_MODEL_REPOSITORY": str(repository)})
    queued = score(service, repository, str(inputs), "--no-wait")
    job = queued.stdout.strip()

    def done():
        status = json.loads(service.aeq("status", job, "--json").stdout)
        return status["state"] == "done"

    wait_for(done, 120, "the score job")
    client = aeq.Client(service.url)._jobs.store.client
    sizes = [client.strlen(f"aeq:job:{{{job}}}:out:{chunk}") for chunk in range(ITEMS // CHUNK)]
    assert sizes == [CHUNK * len(SCORE_METRICS) * 4] * (ITEMS // CHUNK)

    collected = service.aeq("results", job, "-o", str(tmp_path / "r.json"))
    assert collected.returncode == 0, collected.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["count"] == ITEMS and data["model"] == "conv" and len(data["items"]) == ITEMS
    score(service, repository, str(inputs), "-o", str(tmp_path / "l.json"), local=True)
    assert data["items"] == json.loads((tmp_path / "l.json").read_text())["items"]


def test_calibrate_then_count_the_items_past_it(service, repository, mnist, tmp_path, monkeypatch):
    service.start_worker("one", env={"AEQ_MODEL_REPOSITORY": str(repository)})
    clean = tmp_path / "clean.npy"
    np.save(clean, mnist.test_images[:300])

    calibrated = score(service, repository, "--calibrate", str(clean))
    assert "calibrated conv@1 on 300 known-good items" in calibrated.stderr
    recorded = ModelRepository(repository).get("conv").calibration()
    assert recorded is not None and recorded.items == 300 and recorded.source == str(clean)

    # The same items again: 1% of 300 are above their own 99th percentile.
    again = score(service, repository, str(clean), "-o", str(tmp_path / "s.json"))
    assert "3 over p99 " in again.stderr
    exceeding = json.loads((tmp_path / "s.json").read_text())["exceeding"]
    assert {entry["percentile"]: entry["items"] for entry in exceeding}[99.0] == 3

    # The Python API, queued, sees the same scores and the calibration.
    for name in list(os.environ):
        if name.startswith("AEQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AEQ_PROVIDERS", "cpu")
    monkeypatch.setenv("AEQ_THREADS", "1")
    scores = aeq.score(
        mnist.test_images[:300], broker_url=service.url, repository=repository, chunk_size=CHUNK
    )
    assert scores.above(99.0).sum() == 3
    local = aeq.score(mnist.test_images[:300], broker_url="", repository=repository)
    np.testing.assert_array_equal(scores.scores, local.scores)
