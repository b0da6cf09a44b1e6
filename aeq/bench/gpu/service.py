"""The queued service against the engine on the same provider, per chunk size (a child process).

Run as ``python -m aeq.bench.gpu.service SPEC RESULT`` in the service's environment (its
``AEQ_BROKER_URL``). Per model, in the order given (the one ``aeq denoise`` uses first), and per
chunk size: the worker's engine runs the items chunk by chunk in this process (the ceiling,
``aeq.bench.service.InProcess``, here on the worker's provider), then the same items go through
Redis and the worker as one job (``aeq.bench.jobs.run_job``, the CLI's own calls); their ratio
says what the per-chunk transport costs. A pair that would not finish before the deadline is
left out and listed.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from aeq.bench.gpu.engine import engine_for
from aeq.bench.gpu.stages import child_main, write_json
from aeq.bench.jobs import run_job
from aeq.bench.models import BenchModel, repository_models
from aeq.bench.service import InProcess, best_chunk_size, operation
from aeq.core.settings import load_settings

# The service is "near the engine" at this ratio (issue 14: which chunk size gets there).
NEAR_ENGINE_RATIO = 0.9
WARMUP_ITEMS = 1024
WARMUP_CHUNK_SIZE = 512
RANDOM_SEED = 2
# A pair is started only if this many times the last pair's seconds are left.
NEXT_PAIR_MARGIN = 1.3


def smallest_near_engine(sweep: dict[str, dict[str, Any]]) -> int | None:
    """The smallest chunk size whose service/engine ratio reaches ``NEAR_ENGINE_RATIO``."""
    sizes = sorted(int(size) for size in sweep)
    reached = [
        size for size in sizes if sweep[str(size)]["ratio_vs_in_process"] >= NEAR_ENGINE_RATIO
    ]
    return reached[0] if reached else None


class ServiceRun:
    """The sweep and its result file, written after every pair."""

    def __init__(self, spec: dict[str, Any], result_path: Path) -> None:
        self.spec, self.result_path = spec, result_path
        self.deadline = float(spec["deadline"])
        self.settings = load_settings()
        self.engine = engine_for(spec["provider"])
        folder = Path(spec["folder"])
        self.input_path, self.output_path = folder / "service-in.npy", folder / "service-out.npy"
        items = np.random.default_rng(RANDOM_SEED).integers(
            0, 256, (int(spec["items"]), 28, 28), dtype=np.uint8
        )
        np.save(self.input_path, items, allow_pickle=False)
        self.items = items
        self.warmup_path = folder / "service-warmup.npy"
        np.save(self.warmup_path, items[:WARMUP_ITEMS], allow_pickle=False)
        self.pair_s = 0.0
        self.result: dict[str, Any] = {
            "provider": spec["provider"],
            "items": len(items),
            "chunk_sizes": list(spec["chunk_sizes"]),
            "repeats": int(spec["repeats"]),
            "near_engine_ratio": NEAR_ENGINE_RATIO,
            "models": {},
            "not_measured": [],
        }

    def fits(self) -> bool:
        return time.time() + self.pair_s * NEXT_PAIR_MARGIN < self.deadline

    def model(self, model: BenchModel) -> None:
        if not self.fits():
            self.result["not_measured"].append(model.version.label)
            return
        # Sessions made and kernels picked in the worker and here before anything is timed.
        run_job(self.settings, operation(model), model.version, self.warmup_path,
                self.output_path, WARMUP_CHUNK_SIZE)  # fmt: skip
        found: dict[str, Any] = {"operation": operation(model).value, "chunk_sweep": {}}
        self.result["models"][model.name] = found
        for size in self.spec["chunk_sizes"]:
            if not self.fits():
                self.result["not_measured"].append(f"{model.version.label} chunk {size}")
                continue
            found["chunk_sweep"][str(size)] = self.pair(model, int(size))
            found["smallest_chunk_near_engine"] = smallest_near_engine(found["chunk_sweep"])
            write_json(self.result_path, self.result)

    def pair(self, model: BenchModel, size: int) -> dict[str, Any]:
        """The engine's pass, then the job, ``repeats`` times; medians, ratio, output checked."""
        started = time.time()
        ceiling = InProcess(model, self.items, size, engine=self.engine)
        expected = ceiling.run()
        engine_rates, service_rates, runs = [], [], []
        for _ in range(int(self.spec["repeats"])):
            engine_rates.append(ceiling.sample())
            run = run_job(self.settings, operation(model), model.version, self.input_path,
                          self.output_path, size)  # fmt: skip
            service_rates.append(run.images_per_s)
            runs.append(run)
        written = np.load(self.output_path, allow_pickle=False)
        self.pair_s = time.time() - started
        service, engine = statistics.median(service_rates), statistics.median(engine_rates)
        return {
            "service_images_per_s": service,
            "in_process_images_per_s": engine,
            "ratio_vs_in_process": service / engine,
            "service_samples": service_rates,
            "in_process_samples": engine_rates,
            "chunks": runs[-1].chunks,
            "workers": runs[-1].workers,
            "client_phases_s": runs[-1].phases,
            "inference_s": runs[-1].inference_s,
            "max_pixel_diff_vs_in_process": int(np.abs(written.astype(int) - expected).max()),
        }


def measure(spec: dict[str, Any], result_path: Path) -> None:
    """The child's work: the chunk sweep for each model, in order, within the deadline."""
    run = ServiceRun(spec, result_path)
    write_json(result_path, run.result)
    models = repository_models(Path(spec["repository"]))
    for name in spec["models"]:
        run.model(models[name])
    run.result["best_chunk_size"] = best_chunk_size(run.result["models"])
    write_json(result_path, run.result)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], measure))
