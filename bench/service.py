"""Section 2, service overhead: a job through Redis + workers against ONNX Runtime in-process.

Per model, the same uint8 ``.npy`` goes

- through the service: ``bench.jobs.run_job`` (the CLI's own calls) to real ``aeq worker``
  processes (1 worker, then the 2-worker layouts), output written to a ``.npy``;
- through ONNX Runtime in this process: ``worker.inference.Engine`` (the worker's session and
  pixel conversion) over the in-memory array in chunks of the default chunk size: the ceiling;
- through local mode (``worker.local.run_local``: the same file input and output, no Redis);
- through the real CLI as a subprocess once, so the interpreter start a user pays is on record.

Then the chunk-size sweep (1 worker), and where the time of a 1-worker job goes: the client's
phases (timed from outside, ``bench.jobs``) and the workers' (Celery's per-task times from their
logs, the inference seconds the chunk statuses record, and the idle rest).
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.cluster import Cluster, WorkerProcess, aeq_executable
from bench.jobs import JobRun, run_job, worker_split
from bench.models import BenchModel
from bench.timing import Plan, Rate, compare
from common.catalog import Operation
from common.settings import Settings, load_settings
from worker.protocol import DEFAULT_CHUNK_SIZE

WARMUP_CHUNKS = 8
WARMUP_CHUNK_SIZE = 32
CLI_TIMEOUT_S = 300.0


def operation(model: BenchModel) -> Operation:
    """What a user runs the model for: denoise for the denoising model, else reconstruct."""
    return Operation.DENOISE if model.spec.noisy_input else Operation.RECONSTRUCT


def in_process_settings() -> Settings:
    from worker.inference import CPU_PROVIDER

    return load_settings().with_overrides(providers=(CPU_PROVIDER,))


def in_process(
    model: BenchModel, items: np.ndarray, chunk_size: int, plan: Plan
) -> tuple[Rate, np.ndarray]:
    """ONNX Runtime in this process (the worker's engine) over ``items``; rate and output."""
    from worker.inference import Engine

    engine = Engine(in_process_settings())
    op = operation(model)

    def job() -> list[np.ndarray]:
        return [
            engine.run(model.version, op, items[start : start + chunk_size]).array
            for start in range(0, len(items), chunk_size)
        ]

    rate = compare({"in_process": job}, len(items), plan)["in_process"]
    return rate, np.concatenate(job())


def local_mode(model: BenchModel, input_path: Path, output: Path, plan: Plan) -> Rate:
    """``aeq`` local mode's own path: open the file, ``run_local``, write and commit the .npy."""
    from worker import views
    from worker.client import Submission
    from worker.inference import Engine
    from worker.inputs import open_images
    from worker.local import run_local

    engine = Engine(in_process_settings())

    def job() -> None:
        source = open_images([input_path])
        submission = Submission(operation(model), model.version, source, DEFAULT_CHUNK_SIZE)
        with views.open_output(output, submission, True) as writer:
            run_local(submission, writer, engine)
            writer.commit()

    count = int(np.load(input_path, mmap_mode="r").shape[0])
    return compare({"local": job}, count, plan)["local"]


def cli_seconds(cluster: Cluster, model: BenchModel, input_path: Path, output: Path) -> float:
    """Wall time of the real command, interpreter start included."""
    command = [aeq_executable(), operation(model).value, str(input_path), "-o", str(output)]
    command += ["--model", model.name, "--overwrite"]
    started = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, env=cluster.env, timeout=CLI_TIMEOUT_S
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return seconds


def timed_job(
    cluster: Cluster, model: BenchModel, input_path: Path, output: Path, chunk_size: int
) -> tuple[JobRun, dict[str, float]]:
    """One job through the service, with the workers' time split from their logs."""
    offsets = {worker.name: worker.log_size() for worker in cluster.workers}
    settings = load_settings(cluster.env)
    run = run_job(settings, operation(model), model.version, input_path, output, chunk_size)
    tasks = [s for w in cluster.workers for s in w.task_seconds(offsets[w.name])]
    return run, worker_split(run, tasks, worker_processes(cluster.workers))


def worker_processes(workers: list[WorkerProcess]) -> int:
    """Processes that run tasks: a prefork worker's children, else the worker itself."""
    import psutil

    total = 0
    for worker in workers:
        children = psutil.Process(worker.process.pid).children()
        total += len(children) or 1
    return total


def warm_up(cluster: Cluster, models: dict[str, BenchModel], images: Any, folder: Path) -> None:
    """One small job per model so every worker process has its sessions loaded."""
    path = images.save(folder / "warmup.npy", WARMUP_CHUNKS * WARMUP_CHUNK_SIZE)
    settings = load_settings(cluster.env)
    for model in models.values():
        out = folder / "warmup-out.npy"
        run_job(settings, operation(model), model.version, path, out, WARMUP_CHUNK_SIZE)


def _median_run(runs: list[tuple[JobRun, dict[str, float]]]) -> tuple[JobRun, dict[str, float]]:
    ordered = sorted(runs, key=lambda pair: pair[0].images_per_s)
    return ordered[len(ordered) // 2]


def _run_json(run: JobRun, split: dict[str, float]) -> dict[str, Any]:
    return {
        "images_per_s": run.images_per_s,
        "seconds": run.seconds,
        "chunks": run.chunks,
        "workers": run.workers,
        "client_phases_s": run.phases,
        "worker_split_s": split,
    }


def measure_layout(
    cluster: Cluster,
    models: dict[str, BenchModel],
    input_path: Path,
    folder: Path,
    repeats: int,
) -> dict[str, Any]:
    """Every model's job at the default chunk size, ``repeats`` times; the median run."""
    results = {}
    for name, model in models.items():
        output = folder / f"service-{name}.npy"
        runs = [
            timed_job(cluster, model, input_path, output, DEFAULT_CHUNK_SIZE)
            for _ in range(repeats)
        ]
        run, split = _median_run(runs)
        results[name] = {
            **_run_json(run, split),
            "samples_images_per_s": [r.images_per_s for r, _ in runs],
            "output": output,
        }
    return results


def chunk_sweep(
    cluster: Cluster,
    models: dict[str, BenchModel],
    input_path: Path,
    folder: Path,
    chunk_sizes: tuple[int, ...],
) -> dict[str, dict[str, Any]]:
    """1-worker throughput per chunk size and model (one job each)."""
    sweep: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        sweep[name] = {}
        for size in chunk_sizes:
            run, split = timed_job(cluster, model, input_path, folder / "sweep.npy", size)
            sweep[name][str(size)] = _run_json(run, split)
    return sweep


def references(
    models: dict[str, BenchModel], input_path: Path, folder: Path, plan: Plan
) -> dict[str, dict[str, Any]]:
    """In-process ONNX Runtime and local mode per model (rates and the reference outputs)."""
    items = np.load(input_path, allow_pickle=False)
    found = {}
    for name, model in models.items():
        rate, output = in_process(model, items, DEFAULT_CHUNK_SIZE, plan)
        local = local_mode(model, input_path, folder / f"local-{name}.npy", plan)
        found[name] = {"in_process": rate, "local_mode": local, "output": output}
    return found


@dataclass
class ServiceBench:
    """Section 2 in steps, so the suite can share its 1-worker phase with sections 3 and 4.

    Create it (writes the input, measures the in-process references), call ``measure`` once per
    worker layout while that layout's workers run (the first layout also runs the chunk sweep and
    the CLI), then ``summary``.
    """

    models: dict[str, BenchModel]
    folder: Path
    items: int
    repeats: int
    chunk_sizes: tuple[int, ...]
    input_path: Path = field(init=False)
    refs: dict[str, dict[str, Any]] = field(init=False)
    layouts: dict[str, Any] = field(default_factory=dict)
    sweep: dict[str, Any] = field(default_factory=dict)
    cli: dict[str, float] = field(default_factory=dict)

    def prepare(self, images: Any, plan: Plan) -> ServiceBench:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.input_path = images.save(self.folder / "service-input.npy", self.items)
        self.refs = references(self.models, self.input_path, self.folder, plan)
        return self

    def measure(self, cluster: Cluster, layout: str) -> None:
        """Measure with the running workers (warmed up), named ``layout`` in the report."""
        self.layouts[layout] = measure_layout(
            cluster, self.models, self.input_path, self.folder, self.repeats
        )
        if len(self.layouts) == 1:
            self.sweep = chunk_sweep(
                cluster, self.models, self.input_path, self.folder, self.chunk_sizes
            )
            for name, model in self.models.items():
                output = self.folder / "cli-out.npy"
                self.cli[name] = cli_seconds(cluster, model, self.input_path, output)

    def summary(self) -> dict[str, Any]:
        return _summarise(self)


def _summarise(bench: ServiceBench) -> dict[str, Any]:
    per_model = {}
    refs, sweep, cli = bench.refs, bench.sweep, bench.cli
    for name in bench.models:
        reference = refs[name]["in_process"].median
        by_layout = {}
        for layout, results in bench.layouts.items():
            result = dict(results[name])
            written = np.load(result.pop("output"), allow_pickle=False)
            diff = np.abs(written.astype(int) - refs[name]["output"].astype(int)).max()
            result["max_pixel_diff_vs_in_process"] = int(diff)
            result["ratio_vs_in_process"] = result["images_per_s"] / reference
            by_layout[layout] = result
        for result in sweep.get(name, {}).values():
            result["ratio_vs_in_process"] = result["images_per_s"] / reference
        per_model[name] = {
            "in_process": refs[name]["in_process"].to_json(),
            "local_mode": refs[name]["local_mode"].to_json(),
            "layouts": by_layout,
            "chunk_sweep": sweep.get(name, {}),
            "cli_seconds": cli.get(name),
            "cli_images_per_s": bench.items / cli[name] if name in cli else None,
        }
    return {
        "items": bench.items,
        "default_chunk_size": DEFAULT_CHUNK_SIZE,
        "repeats": bench.repeats,
        "layouts": list(bench.layouts),
        "chunk_sizes": list(bench.chunk_sizes),
        "best_chunk_size": best_chunk_size(per_model),
        "models": per_model,
    }


def best_chunk_size(per_model: dict[str, Any]) -> dict[str, Any]:
    """The chunk size with the best geometric-mean ratio over the models, and that mean."""
    sizes = {size for result in per_model.values() for size in result["chunk_sweep"]}
    scores = {}
    for size in sizes:
        ratios = [
            result["chunk_sweep"][size]["ratio_vs_in_process"]
            for result in per_model.values()
            if size in result["chunk_sweep"]
        ]
        scores[size] = statistics.geometric_mean(ratios)
    if not scores:
        return {}
    best = max(scores, key=lambda size: scores[size])
    return {"chunk_size": int(best), "geomean_ratio": scores[best], "by_size": scores}
