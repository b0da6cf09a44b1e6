"""The whole benchmark: which sections, how big, in what order, and the results they return.

Order matters on a shared 2-core machine: the in-process engine sections run before any worker
exists, and the service sections share one phase with one warm worker (section 2's 1-worker
measurements, then latency, then memory) before the 2-worker layouts get their turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from aeq.bench import engine, flops, latency, machine, memory, scale
from aeq.bench.cluster import LAYOUTS, Cluster
from aeq.bench.data import load_images
from aeq.bench.models import BenchModel, prepare_models
from aeq.bench.service import ServiceBench, warm_up
from aeq.bench.timing import Plan
from aeq.core.catalog import MODELS
from aeq.core.settings import load_settings

SECTIONS = ("engine", "service", "latency", "memory", "flops", "scale")
SERVICE_SECTIONS = ("service", "latency", "memory")
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and repeats of every section (``FULL`` and ``QUICK`` below)."""

    models: tuple[str, ...]
    sections: tuple[str, ...]
    batches: tuple[int, ...]
    sweep_batches: tuple[int, ...]
    engine_plan: Plan
    service_items: int
    service_repeats: int
    reference_plan: Plan
    layouts: tuple[str, ...]
    chunk_sizes: tuple[int, ...]
    latency_jobs: int
    latency_cli_runs: int
    memory_sizes: tuple[int, ...]
    memory_model: str
    scale: scale.ScaleSizes
    quick: bool = False
    repository: Path | None = None


FULL = BenchConfig(
    models=tuple(MODELS),
    sections=SECTIONS,
    batches=(1, 64, 1024),
    sweep_batches=(1, 1024),
    engine_plan=Plan(repeats=5, min_repeat_s=0.3, warmup_calls=3),
    service_items=20_000,
    service_repeats=3,
    reference_plan=Plan(repeats=5, min_repeat_s=0.5, warmup_calls=1),
    layouts=tuple(LAYOUTS),
    chunk_sizes=(64, 128, 256, 512, 1024, 2048, 4096),
    latency_jobs=100,
    latency_cli_runs=10,
    memory_sizes=(10_000, 100_000),
    memory_model="vanilla",
    scale=scale.ScaleSizes(
        big_items=1_000_000,
        transport_items=1_000_000,
        throughput_items=200_000,
        fair_items=50_000,
        fair_small_items=10,
        rounds=3,
        maxmemory_mb=256,
    ),
)
QUICK = replace(
    FULL,
    models=("vanilla",),
    batches=(1, 64),
    sweep_batches=(64,),
    engine_plan=Plan(repeats=2, min_repeat_s=0.02, warmup_calls=1, settle_s=0.01),
    service_items=2_000,
    service_repeats=1,
    reference_plan=Plan(repeats=2, min_repeat_s=0.02, warmup_calls=1, settle_s=0.01),
    layouts=("1 worker", "1 worker (solo)"),
    chunk_sizes=(256, 1024),
    latency_jobs=10,
    latency_cli_runs=1,
    memory_sizes=(1_000, 4_000),
    scale=replace(
        FULL.scale,
        big_items=4_000,
        transport_items=4_000,
        throughput_items=2_000,
        fair_items=2_000,
        rounds=1,
    ),
    quick=True,
)


Progress = Callable[[str], None]


def _service_phase(
    config: BenchConfig,
    models: dict[str, BenchModel],
    images: Any,
    folder: Path,
    results: dict[str, Any],
    progress: Progress,
) -> None:
    """Sections 2-4 against one private redis-server and real workers."""
    repository = config.repository or folder / "repository"
    cluster = Cluster.start(folder / "service", repository)
    try:
        service = None
        if "service" in config.sections:
            progress("service: in-process references")
            service = ServiceBench(
                models, folder / "service", config.service_items, config.service_repeats,
                config.chunk_sizes,
            ).prepare(images, config.reference_plan)  # fmt: skip
        for index, layout in enumerate(config.layouts):
            if index > 0 and service is None:
                break
            cluster.start_workers(LAYOUTS[layout])
            warm_up(cluster, models, images, folder / "service")
            if index == 0:
                _one_worker_sections(config, cluster, models, images, folder, results, progress)
            if service is not None:
                progress(f"service: {layout}")
                service.measure(cluster, layout)
            cluster.stop_workers()
        if service is not None:
            results["service"] = service.summary()
    finally:
        cluster.stop()


def _one_worker_sections(
    config: BenchConfig,
    cluster: Cluster,
    models: dict[str, BenchModel],
    images: Any,
    folder: Path,
    results: dict[str, Any],
    progress: Progress,
) -> None:
    """Memory first (the worker has run only the warm-up), then latency."""
    if "memory" in config.sections:
        model = models.get(config.memory_model) or next(iter(models.values()))
        sizes = config.memory_sizes
        progress(f"memory: {', '.join(f'{size:,}' for size in sizes)}-image jobs")
        results["memory"] = memory.run(cluster, model, images, folder / "memory", sizes)
    if "latency" in config.sections:
        jobs, runs = config.latency_jobs, config.latency_cli_runs
        progress(f"latency: {jobs} one-image jobs per model")
        results["latency"] = latency.run(cluster, models, images, folder / "latency", jobs, runs)


def run_suite(
    config: BenchConfig, folder: Path, progress: Progress = lambda line: None
) -> dict[str, Any]:
    """Run the configured sections; return the report's data (machine, config, results)."""
    started = time.time()
    settings = load_settings()
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": machine.describe(ROOT),
        "config": {**asdict(config), "repository": str(config.repository or "")},
        "load_average": {"start": machine.load_average()},
    }
    images = load_images(settings)
    report["inputs"] = images.source
    progress("preparing models")
    models = prepare_models(list(config.models), folder, config.repository)
    report["weights"] = {name: model.weights for name, model in models.items()}
    results: dict[str, Any] = {}
    peak = machine.cpu_peak()
    # Measured before and after the engine section; the best stands (other load only lowers it).
    sgemm = machine.sgemm_gflops(quick=config.quick) if "flops" in config.sections else {}
    if "engine" in config.sections:
        progress("engine: TensorFlow paths and ONNX Runtime sessions")
        results["engine"] = engine.run(
            models, images, config.batches, config.sweep_batches, config.engine_plan, peak.cores
        )
    report["load_average"]["after_engine"] = machine.load_average()
    if "flops" in config.sections:
        progress("flops: counting, and a float32 matrix product for the measured peak")
        sgemm = max(sgemm, machine.sgemm_gflops(quick=config.quick), key=lambda m: m["gflops"])
        results["flops"] = flops.run(
            models, images, peak, sgemm, results.get("engine"), config.engine_plan
        )
    if any(section in config.sections for section in SERVICE_SECTIONS):
        _service_phase(config, models, images, folder, results, progress)
    if "scale" in config.sections:
        progress("scale: jobs of any size through the CLI, Redis capped")
        repository = config.repository or folder / "repository"
        results["scale"] = scale.run(models, images, folder / "scale", repository, config.scale)
    report["load_average"]["end"] = machine.load_average()
    report["seconds"] = time.time() - started
    report["results"] = results
    return report
