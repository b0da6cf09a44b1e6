"""Section 2, service overhead: a job through Redis + workers against ONNX Runtime in-process.

Per model, the same uint8 ``.npy`` goes

- through the service: ``aeq.bench.jobs.run_job`` (the CLI's own calls) to real ``aeq worker``
  processes (``aeq worker`` with its defaults, then the other layouts), output written to a
  ``.npy``;
- through ONNX Runtime in this process: ``worker.inference.Engine`` (the worker's session and
  pixel conversion) over the in-memory array in chunks of the default chunk size: the ceiling,
  measured once right before each service job, so both sides of a ratio see the same load;
- through local mode (``aeq.client.local.run_local``: the same file input and output, no Redis);
- through the real CLI as a subprocess once, so the interpreter start a user pays is on record.

Then the chunk-size sweep (1 worker), and where the time of a 1-worker job goes: the client's
phases (timed from outside, ``aeq.bench.jobs``) and the workers' (Celery's per-task times from their
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

from aeq.bench.cluster import Cluster, task_seconds
from aeq.bench.jobs import JobRun, run_job, worker_split
from aeq.bench.models import BenchModel
from aeq.bench.timing import Plan, Rate, compare
from aeq.core.catalog import Operation
from aeq.core.settings import Settings, load_settings
from aeq.private_service import WorkerProcess, aeq_executable
from aeq.queue.protocol import DEFAULT_CHUNK_SIZE

WARMUP_CHUNKS = 8
WARMUP_CHUNK_SIZE = 32
CLI_TIMEOUT_S = 300.0


def operation(model: BenchModel) -> Operation:
    """What a user runs the model for: denoise for the denoising model, else reconstruct."""
    return Operation.DENOISE if model.spec.noisy_input else Operation.RECONSTRUCT


def in_process_settings() -> Settings:
    from worker.inference import CPU_PROVIDER

    return load_settings().with_overrides(providers=(CPU_PROVIDER,))


@dataclass
class InProcess:
    """The ceiling: the worker's engine (``worker.inference.Engine``: its session options and
    pixel conversion) over the in-memory array in this process, chunk by chunk."""

    model: BenchModel
    items: np.ndarray
    chunk_size: int = DEFAULT_CHUNK_SIZE
    engine: Any = None

    def __post_init__(self) -> None:
        from worker.inference import Engine

        if self.engine is None:  # the GPU check passes a CUDA engine
            self.engine = Engine(in_process_settings())

    def run(self) -> np.ndarray:
        op, version, size = operation(self.model), self.model.version, self.chunk_size
        return np.concatenate(
            [
                self.engine.run(version, op, self.items[start : start + size]).array
                for start in range(0, len(self.items), size)
            ]
        )

    def sample(self) -> float:
        """One pass over the items; images per second."""
        started = time.perf_counter()
        self.run()
        return len(self.items) / (time.perf_counter() - started)


def local_mode(model: BenchModel, input_path: Path, output: Path, plan: Plan) -> Rate:
    """``aeq`` local mode's own path: open the file, ``run_local``, write and commit the .npy."""
    from aeq.client import views
    from aeq.client.client import Submission
    from aeq.client.local import run_local
    from aeq.files.inputs import open_images
    from worker.inference import Engine

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
    tasks = [s for w in cluster.workers for s in task_seconds(w, offsets[w.name])]
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


def workers_rss_mib(cluster: Cluster) -> float:
    """Resident memory of every worker process (children included), MiB."""
    import psutil

    total = 0
    for worker in cluster.workers:
        process = psutil.Process(worker.process.pid)
        members = [process, *process.children(recursive=True)]
        total += sum(member.memory_info().rss for member in members)
    return total / 2**20


@dataclass
class ServiceBench:
    """Section 2 in steps, so the suite can share its 1-worker phase with sections 3 and 4.

    ``prepare`` writes the input and measures local mode; then ``measure`` once per worker layout
    while that layout's workers run (the first layout also runs the chunk sweep and the CLI);
    then ``summary``. Every service job is paired with an in-process pass run just before it,
    so a burst of load from elsewhere hits both sides of a ratio.
    """

    models: dict[str, BenchModel]
    folder: Path
    items: int
    repeats: int
    chunk_sizes: tuple[int, ...]
    input_path: Path = field(init=False)
    ceilings: dict[str, InProcess] = field(default_factory=dict)
    local: dict[str, Rate] = field(default_factory=dict)
    layouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: dict[str, dict[str, Any]] = field(default_factory=dict)
    cli: dict[str, float] = field(default_factory=dict)

    def prepare(self, images: Any, plan: Plan) -> ServiceBench:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.input_path = images.save(self.folder / "service-input.npy", self.items)
        items = np.load(self.input_path, allow_pickle=False)
        for name, model in self.models.items():
            self.ceilings[name] = InProcess(model, items)
            self.ceilings[name].run()  # session creation and first-run allocations
            output = self.folder / f"local-{name}.npy"
            self.local[name] = local_mode(model, self.input_path, output, plan)
        return self

    def paired(self, cluster: Cluster, name: str, chunk_size: int, output: Path) -> dict:
        """An in-process pass, then the same items as a job; both rates."""
        ceiling = self.ceilings[name].sample()
        run, split = timed_job(cluster, self.models[name], self.input_path, output, chunk_size)
        return {"in_process": ceiling, "run": run, "split": split}

    def measure(self, cluster: Cluster, layout: str) -> None:
        """Measure with the running workers (warmed up), named ``layout`` in the report."""
        results = {}
        for name in self.models:
            output = self.folder / f"service-{name}.npy"
            pairs = [
                self.paired(cluster, name, DEFAULT_CHUNK_SIZE, output) for _ in range(self.repeats)
            ]
            results[name] = _layout_result(pairs, output, self.ceilings[name].run())
        self.layouts[layout] = results
        if len(self.layouts) == 1:
            self._sweep_chunks(cluster)
            for name, model in self.models.items():
                output = self.folder / "cli-out.npy"
                self.cli[name] = cli_seconds(cluster, model, self.input_path, output)

    def _sweep_chunks(self, cluster: Cluster) -> None:
        """One paired job per chunk size and model; the workers' memory after each."""
        for name in self.models:
            self.sweep[name] = {}
            for size in self.chunk_sizes:
                pair = self.paired(cluster, name, size, self.folder / "sweep.npy")
                self.sweep[name][str(size)] = {
                    **_run_json(pair["run"], pair["split"]),
                    "in_process": pair["in_process"],
                    "ratio_vs_in_process": pair["run"].images_per_s / pair["in_process"],
                    "worker_rss_mib_after": workers_rss_mib(cluster),
                }

    def summary(self) -> dict[str, Any]:
        """The section's results."""
        per_model = {}
        for name in self.models:
            per_model[name] = {
                "in_process": Rate(
                    tuple(v for r in self.layouts.values() for v in r[name]["in_process_samples"])
                ).to_json(),
                "local_mode": self.local[name].to_json(),
                "layouts": {layout: found[name] for layout, found in self.layouts.items()},
                "chunk_sweep": self.sweep.get(name, {}),
                "cli_seconds": self.cli.get(name),
                "cli_images_per_s": self.items / self.cli[name] if name in self.cli else None,
            }
        return {
            "items": self.items,
            "default_chunk_size": DEFAULT_CHUNK_SIZE,
            "repeats": self.repeats,
            "layouts": list(self.layouts),
            "chunk_sizes": list(self.chunk_sizes),
            "best_chunk_size": best_chunk_size(per_model),
            "models": per_model,
        }


def _layout_result(pairs: list[dict], output: Path, expected: np.ndarray) -> dict[str, Any]:
    """Median job of a layout, its ratio to the paired in-process passes, output checked."""
    run, split = _median_run([(pair["run"], pair["split"]) for pair in pairs])
    service = Rate(tuple(pair["run"].images_per_s for pair in pairs))
    ceiling = Rate(tuple(pair["in_process"] for pair in pairs))
    written = np.load(output, allow_pickle=False)
    return {
        **_run_json(run, split),
        "images_per_s": service.median,
        "samples_images_per_s": list(service.samples),
        "in_process_samples": list(ceiling.samples),
        "ratio_vs_in_process": service.median / ceiling.median,
        "max_pixel_diff_vs_in_process": int(np.abs(written.astype(int) - expected).max()),
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
