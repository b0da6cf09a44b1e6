"""How long a 10-image denoise job takes alone and queued 3 s after a 200,000-image one.

    python scripts/fair-turns.py CHECKOUT FOLDER [REPOSITORY]

Runs CHECKOUT's aeq (on PYTHONPATH, so two commits can be compared with one venv) against a
private redis-server and one default ``aeq worker``, three rounds; prints each round and the
medians. REPOSITORY is a published model repository (default: ./model_repository).
docs/BENCHMARKS.md, "Fair turns", has the figures.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BIG_ITEMS = 200_000
SMALL_ITEMS = 10
HEAD_START_S = 3.0
ROUNDS = 3


def main() -> None:
    root, folder = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    repository = Path(sys.argv[3] if len(sys.argv) > 3 else "model_repository").resolve()
    folder.mkdir(parents=True)
    sys.path.insert(0, str(root))
    from aeq.private_service import RedisServer

    redis = RedisServer(folder / "redis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEQ_")}
    env.update(
        AEQ_BROKER_URL=redis.url,
        AEQ_MODEL_REPOSITORY=str(repository),
        AEQ_PROVIDERS="cpu",
        PYTHONPATH=str(root),
    )
    rng = np.random.default_rng(0)
    np.save(folder / "big.npy", rng.integers(0, 256, (BIG_ITEMS, 28, 28), dtype=np.uint8))
    np.save(folder / "small.npy", rng.integers(0, 256, (SMALL_ITEMS, 28, 28), dtype=np.uint8))

    def aeq(*args: str, **options) -> subprocess.Popen:
        code = f"import sys; sys.argv = ['aeq', *{list(args)!r}]; import cli; cli.app()"
        return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=root, **options)

    worker = aeq("worker", stdout=subprocess.DEVNULL, stderr=open(folder / "worker.log", "w"))
    try:
        time.sleep(8)  # the worker's start

        def small(tag: str) -> float:
            started = time.perf_counter()
            out = str(folder / f"small-{tag}.npy")
            job = aeq("denoise", str(folder / "small.npy"), "-o", out, stderr=subprocess.PIPE)
            _, stderr = job.communicate()
            assert job.returncode == 0, stderr
            return time.perf_counter() - started

        alone, behind = [], []
        for i in range(ROUNDS):
            alone.append(small(f"alone{i}"))
            big_out = str(folder / f"big{i}.npy")
            big = aeq("denoise", str(folder / "big.npy"), "-o", big_out, stderr=subprocess.DEVNULL)
            time.sleep(HEAD_START_S)
            behind.append(small(f"behind{i}"))
            waited = time.perf_counter()
            big.wait()
            print(
                f"round {i}: alone {alone[-1]:.2f} s, behind {behind[-1]:.2f} s, "
                f"the big job ended {time.perf_counter() - waited:.1f} s after",
                flush=True,
            )
        print(
            f"median: alone {statistics.median(alone):.2f} s, "
            f"behind the big job {statistics.median(behind):.2f} s"
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        finally:
            worker.kill()
            redis.stop()


if __name__ == "__main__":
    main()
