"""Liveness with real workers: the client says when no worker consumes the queue (at the start
and when the workers vanish mid-job) and when one comes; ``aeq status``/``aeq jobs`` list the
live workers; ``aeq worker`` refuses a repository without models."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import numpy as np

from aeq.private_service import start_worker
from aeq.queue.workers import HEARTBEAT_TTL_S

# What the issue asks: the notice within 5 s.
NOTICE_WITHIN_S = 5.0
NO_WORKER = "no worker is consuming queue 'aeq'"
VANISHED = "the worker(s) stopped"


class Lines:
    """A process's stderr, read as it comes, each line with the time it arrived."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line))

    def wait_for(self, text: str, timeout_s: float) -> float:
        """When the first line holding ``text`` arrived (AssertionError after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for arrived, line in list(self.lines):
                if text in line:
                    return arrived
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} in {timeout_s} s: {self.text()[-2000:]}")

    def text(self) -> str:
        return "".join(line for _, line in self.lines)

    def finish(self, timeout_s: float = 120.0) -> int:
        code = self.process.wait(timeout=timeout_s)
        self._thread.join(timeout=5)
        return code


def test_no_worker_is_said_within_5_s_then_a_worker_comes_and_the_job_completes(
    service, mnist, tmp_path
):
    np.save(tmp_path / "digits.npy", mnist.test_images[:20])
    client = Lines(
        service.popen(
            "reconstruct", str(tmp_path / "digits.npy"), "-o", str(tmp_path / "out.npy"),
            "--chunk-size", "10",
        )
    )  # fmt: skip
    # Timed from the job's creation (the interpreter's start on a loaded machine is not ours).
    queued = client.wait_for("queuing", 60)
    assert client.wait_for(NO_WORKER, 30) - queued <= NOTICE_WITHIN_S

    service.start_worker("late")
    assert client.finish() == 0, client.text()
    assert "worker late@test is consuming queue 'aeq'" in client.text()
    assert np.load(tmp_path / "out.npy").shape == (20, 28, 28)


def test_workers_vanishing_mid_job_is_said_within_5_s(service, mnist, tmp_path):
    np.save(tmp_path / "digits.npy", mnist.test_images[:1000])
    worker = service.start_worker("only", "--concurrency", "1")
    client = Lines(
        service.popen(
            "reconstruct", str(tmp_path / "digits.npy"), "-o", str(tmp_path / "out.npy"),
            "--chunk-size", "1",
        )
    )  # fmt: skip
    try:
        _wait_running(service)
        worker.kill()
        killed = time.monotonic()
        said = client.wait_for(VANISHED, NOTICE_WITHIN_S * 2)
        assert said - killed <= NOTICE_WITHIN_S, said - killed
        assert "only@test gone" in client.text() and NO_WORKER not in client.text()
        assert client.process.poll() is None  # it keeps waiting: the job is safe in Redis
    finally:
        client.process.terminate()
        client.finish(30)


def _wait_running(service) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = json.loads(service.aeq("jobs", "--json").stdout or "[]")
        if listed and listed[0]["items"]["done"] > 0:
            return
        time.sleep(0.2)
    raise AssertionError("the job never started")


def test_status_and_jobs_list_the_live_workers(service, mnist, tmp_path):
    np.save(tmp_path / "digits.npy", mnist.test_images[:4])
    worker = service.start_worker("alive")
    queued = service.aeq("reconstruct", str(tmp_path / "digits.npy"), "--no-wait")
    assert queued.returncode == 0, queued.stderr
    job = queued.stdout.strip()
    assert NO_WORKER not in queued.stderr

    status = json.loads(service.aeq("status", job, "--json").stdout)
    [live] = status["live_workers"]
    assert live["name"] == "alive@test" and live["queue"] == "aeq"
    assert live["pid"] == worker.process.pid and live["concurrency"] >= 1
    assert [w["name"] for w in json.loads(service.aeq("jobs", "--json").stdout)[0]["live_workers"]]
    assert "live workers: 1 (alive@test)" in service.aeq("jobs").stdout
    assert "1 (alive@test)" in service.aeq("status", job).stdout

    worker.stop()  # a warm shutdown leaves the list at once, no waiting for the heartbeat's TTL
    after = json.loads(service.aeq("status", job, "--json").stdout)
    assert after["live_workers"] == [], f"still listed (TTL {HEARTBEAT_TTL_S} s)"
    assert "live workers: none" in service.aeq("jobs").stdout
    second = service.aeq("reconstruct", str(tmp_path / "digits.npy"), "--no-wait")
    assert NO_WORKER in second.stderr


def test_the_worker_refuses_to_start_without_published_models(service, tmp_path):
    (tmp_path / "empty").mkdir()
    refused = service.aeq("worker", "--repository", "empty", cwd=tmp_path, timeout=60)
    assert refused.returncode != 0
    [line] = refused.stderr.strip().splitlines()
    assert f"{tmp_path.resolve() / 'empty'} publishes no models" in line


def test_the_worker_logs_its_repository_as_an_absolute_path(service, tmp_path):
    (tmp_path / "here").symlink_to(service.repository)
    args = ["--repository", "here", "--concurrency", "1"]
    worker = start_worker("relative@test", args, tmp_path, service.env, cwd=tmp_path)
    service.workers.append(worker)
    worker.wait_ready()
    assert f"model repository {service.repository.resolve()} (" in worker.text()
