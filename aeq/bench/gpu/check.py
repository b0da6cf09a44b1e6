"""The GPU check's stages in order, within one time budget, and its command line.

``python -m aeq.bench.gpu OUT --work DIR --budget-s S`` (``scripts/gpu-check.sh`` runs it after
preparing the interpreter). The stages, each recorded as passed, failed or skipped:

    install              the shell's offline install (recorded from its arguments)
    driver               nvidia-smi: the GPUs and the driver, or "no GPU found (REASON)"
    onnxruntime          ONNX Runtime's version, build and available providers
    cuda_provider        a real session asks for CUDA and reads back the providers in use
    repository           the given model repository, else tiny stand-ins built here
    redis                a redis-server of our own on a free port
    require_gpu_refusal  no GPU: 'aeq worker --require-gpu' exits non-zero with one line
    worker               'aeq worker' (with --require-gpu where a GPU was found) is ready
    queued_job           one job through the real CLI, collected and compared to the CPU engine
    job_on_cuda          'aeq status JOB --json' lists CUDAExecutionProvider
    engine_cpu           engine throughput on the CPU provider (every model, batch 1 to 4096)
    engine_cuda          the same on CUDA, IO binding included
    service              the queued service against the engine, per chunk size

Without a GPU the CUDA stages are skipped with the reason; with one, anything that keeps CUDA
from running is a failure. The check passes when no stage failed. SIGTERM (the shell's
``timeout``) stops the workers and Redis and still writes the report.
"""

from __future__ import annotations

import argparse
import platform
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aeq.bench.gpu import host
from aeq.bench.gpu import report as gpu_report
from aeq.bench.gpu.engine import CPU, CUDA, PATHS, SHORT_NAMES
from aeq.bench.gpu.queued import PrivateService, queued_job, refusal, start_redis
from aeq.bench.gpu.stages import (
    Budget,
    Outcome,
    StageFailed,
    StageResult,
    StageSkipped,
    Status,
    one_line,
    run_child,
    run_stage,
    say,
)

DEFAULT_BUDGET_S = 360.0
BATCHES = (1, 64, 1024, 4096)
CHUNK_SIZES = (512, 1024, 2048, 4096)
# Items per queued job in the service sweep, and repeats of each pair: the GPU's engine is fast
# enough that small jobs would time little but the job's fixed costs.
SERVICE_ITEMS = {True: 65536, False: 4096}
SERVICE_REPEATS = {True: 2, False: 1}
PROBE_CAP_S = 120.0
WORKER_CAP_S = 120.0
REFUSAL_CAP_S = 60.0
JOB_CAP_S = 90.0
# Of the time left for measuring, the engine's share when the service is measured as well.
ENGINE_SHARE = 0.5
DEFAULT_MODEL = "denoising"  # what 'aeq denoise' runs; measured first
STAGE_NAMES = (
    "install", "driver", "onnxruntime", "cuda_provider", "repository", "redis",
    "require_gpu_refusal", "worker", "queued_job", "job_on_cuda", "engine_cpu", "engine_cuda",
    "service",
)  # fmt: skip


class Check:
    """One run of the check: its stages' results, the private service, the report."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.options = options
        self.budget = Budget(options.budget_s, options.started_at or time.time())
        self.work = Path(options.work)
        self.stages: dict[str, StageResult] = {}
        self.gpu = host.GpuFinding(False, "not looked for yet")
        self.cuda_usable = False
        self.repository: Path | None = None
        self.models: dict[str, Any] = {}
        self.service: PrivateService | None = None
        self.measured: dict[str, dict[str, Any]] = {}

    # -- running ---------------------------------------------------------------------------

    def record(self, result: StageResult) -> StageResult:
        self.stages[result.name] = result
        return result

    def stage(self, name: str, function: Any) -> StageResult:
        return self.record(run_stage(name, function))

    def skip(self, name: str, reason: str, announce: bool = True) -> None:
        result = StageResult(name, Status.SKIPPED, 0.0, reason)
        if announce:
            say(result.line())
        self.record(result)

    def run(self) -> None:
        """Every stage in order; a stage whose prerequisite failed is skipped, saying which."""
        self.record_install()
        self.stage_driver()
        self.stage("onnxruntime", self.onnxruntime)
        self.cuda_stage("cuda_provider", self.cuda_provider)
        self.stage("repository", self.prepare_repository)
        if self.passed("repository"):
            self.stage("redis", self.start_redis)
        else:
            self.skip("redis", "needs a model repository")
        self.service_stages()
        self.measure()

    def passed(self, name: str) -> bool:
        return name in self.stages and self.stages[name].status is Status.PASSED

    def cuda_stage(self, name: str, function: Any) -> None:
        """A stage that needs a GPU: skipped with the reason where none was found."""
        if self.gpu.found:
            self.stage(name, function)
        else:  # the driver line said it once; report.json keeps the reason per stage
            self.skip(name, self.gpu.line(), announce=False)

    def record_install(self) -> None:
        status = Status(self.options.install_status)
        detail = self.options.install_detail or "no --wheels given: nothing installed"
        self.record(StageResult("install", status, self.options.install_seconds, detail))
        say(self.stages["install"].line())

    def stage_driver(self) -> None:
        """nvidia-smi; the one line that says whether a GPU was found."""
        started = time.perf_counter()
        self.gpu = host.find_gpu()
        status = Status.PASSED if self.gpu.found else Status.SKIPPED
        seconds = time.perf_counter() - started
        self.record(StageResult("driver", status, seconds, self.gpu.line(), self.gpu.to_json()))
        if self.gpu.found:
            say(f"gpu-check: GPU: {self.gpu.line()}")
        else:
            say(
                f"gpu-check: {self.gpu.line()}: the CUDA stages are skipped, "
                "the rest runs on the CPU"
            )

    def service_stages(self) -> None:
        """The refusal or the GPU worker, the queued job and CUDA in its status."""
        if not self.passed("redis"):
            for name in ("require_gpu_refusal", "worker", "queued_job"):
                self.skip(name, "needs redis-server (see the redis stage)")
            self.cuda_stage("job_on_cuda", self.job_on_cuda)
            return
        if self.gpu.found:
            self.skip(
                "require_gpu_refusal", "a GPU was found: the worker must start with --require-gpu"
            )
        else:
            self.stage("require_gpu_refusal", self.refuse)
        self.stage("worker", self.start_worker)
        if self.passed("worker"):
            self.stage("queued_job", self.queued_job)
        else:
            self.skip("queued_job", "needs the worker")
        self.cuda_stage("job_on_cuda", self.job_on_cuda)

    def measure(self) -> None:
        """The engine on each provider, then the service, sharing the time that is left."""
        if not self.passed("repository"):
            for name in ("engine_cpu", "engine_cuda", "service"):
                self.skip(name, "needs a model repository")
            return
        service = self.passed("worker")
        share = ENGINE_SHARE if service else 1.0
        self.engine_stages(self.budget.share_s(share))
        if service:
            self.stage("service", self.service_sweep)
        else:
            self.skip("service", "needs the worker")

    # -- stages ----------------------------------------------------------------------------

    def onnxruntime(self) -> Outcome:
        facts = host.onnxruntime_facts()
        line = (
            f"onnxruntime {facts['version']} ({facts['device']} build): "
            f"{', '.join(facts['available_providers'])}"
        )
        if self.gpu.found and CUDA not in facts["available_providers"]:
            raise StageFailed(
                f"{line}: no {CUDA} (the CPU build; give --wheels with onnxruntime-gpu)", facts
            )
        return Outcome(line, facts)

    def cuda_provider(self) -> Outcome:
        from worker.provider_probe import probe

        self.budget.require(self.budget.timeout_s(PROBE_CAP_S), "the provider probe")
        in_use = probe((CUDA, CPU))  # a subprocess with its own timeout (PROBE_TIMEOUT_S)
        data = {"requested": [CUDA, CPU], "in_use": in_use}
        if not in_use or in_use[0] != CUDA:
            raise StageFailed(
                f"a session asked for CUDA runs on {in_use[0] if in_use else 'nothing'}: the "
                "CUDA or cuDNN libraries did not load (see the CUDA libraries in report.md)",
                data,
            )
        self.cuda_usable = True
        return Outcome(f"a real session reads back {', '.join(in_use)}", data)

    def prepare_repository(self) -> Outcome:
        from aeq.bench.models import repository_models

        if self.options.repository:
            root, stand_ins = Path(self.options.repository), False
        else:
            root, stand_ins = self.work / "repository", True
            self.build_stand_ins(root)
        self.models = repository_models(root)
        if not self.models:
            raise StageFailed(f"no catalogued model is published in {root}")
        self.repository = root
        names = ", ".join(model.version.label for model in self.models.values())
        note = " (tiny stand-ins built here: their speed says nothing about the real models)"
        data = {"path": str(root), "models": list(self.models), "stand_ins": stand_ins}
        return Outcome(f"{root}: {names}{note if stand_ins else ''}", data)

    @staticmethod
    def build_stand_ins(root: Path) -> None:
        try:
            from aeq.bench.tiny_models import tiny_repository
        except ImportError as error:
            raise StageFailed(
                f"no --repository given and the stand-ins need onnx ({error}): give --repository"
            ) from None
        tiny_repository(root)

    def start_redis(self) -> Outcome:
        assert self.repository is not None
        redis = start_redis(self.work / "redis")
        self.service = PrivateService(self.work, self.repository, redis)
        return Outcome(f"redis-server on port {redis.port}", {"url": redis.url})

    def refuse(self) -> Outcome:
        assert self.service is not None
        timeout = self.budget.require(self.budget.timeout_s(REFUSAL_CAP_S), "the refusal")
        return refusal(self.service, timeout)

    def start_worker(self) -> Outcome:
        assert self.service is not None
        timeout = self.budget.require(self.budget.timeout_s(WORKER_CAP_S), "the worker")
        worker = self.service.start_worker(self.gpu.found, timeout)
        flag = " --require-gpu" if self.gpu.found else ""
        started = [line for line in worker.text().splitlines() if line.startswith("aeq worker:")]
        detail = started[0] if started else f"aeq worker{flag} is ready"
        return Outcome(detail, {"command": f"aeq worker{flag}", "log": worker.log.name})

    def queued_job(self) -> Outcome:
        assert self.service is not None
        timeout = self.budget.require(self.budget.timeout_s(JOB_CAP_S), "the queued job")
        return queued_job(self.service, self.models[self.first_model()], timeout)

    def job_on_cuda(self) -> Outcome:
        job = self.stages.get("queued_job")
        if job is None or job.status is not Status.PASSED:
            raise StageSkipped("needs a queued job that passed")
        providers = job.data["aeq_status"]["providers"]
        if CUDA not in providers:
            raise StageFailed(f"aeq status lists {', '.join(providers) or 'no provider'}, not CUDA")
        return Outcome(f"aeq status {job.data['job']} --json lists {', '.join(providers)}")

    def engine_stages(self, seconds: float) -> None:
        """One child measures every provider round-robin; one stage per provider reports it."""
        providers = [CPU, CUDA] if self.cuda_usable else [CPU]
        run = run_stage("engine", lambda: self.engine_child(providers, seconds))
        self.record(self.provider_result("engine_cpu", CPU, run))
        if not self.gpu.found:
            self.skip("engine_cuda", self.gpu.line(), announce=False)
        elif not self.cuda_usable:
            failed = StageResult("engine_cuda", Status.FAILED, 0.0, "CUDA does not run here")
            say(failed.line())
            self.record(failed)
        else:
            self.record(self.provider_result("engine_cuda", CUDA, run))

    def engine_child(self, providers: list[str], seconds: float) -> Outcome:
        timeout = self.budget.require(seconds, "the engine measurement")
        spec = {
            "repository": str(self.repository),
            "models": self.ordered_models(),
            "batches": list(self.options.batches),
            "providers": providers,
            "deadline": time.time() + timeout * 0.9,
        }
        measured = run_child("aeq.bench.gpu.engine", spec, self.work, timeout, self.child_env())
        self.measured["engine"] = measured
        groups = sum(len(model["rates"]) for model in measured["models"].values())
        left = len(measured["not_measured"])
        return Outcome(f"{groups} (model, batch) groups measured, {left} left out for time")

    def provider_result(self, name: str, provider: str, run: StageResult) -> StageResult:
        """A provider's share of the engine measurement: its fastest path at the largest batch."""
        if run.status is Status.FAILED:
            failed = StageResult(name, Status.FAILED, run.seconds, run.detail)
            say(failed.line())
            return failed
        measured, short, seconds = self.measured["engine"], SHORT_NAMES[provider], run.seconds
        best: list[str] = []
        for model_name, model in measured["models"].items():
            batches = [
                batch for batch in model["rates"] if f"{short}/session" in model["rates"][batch]
            ]
            if batches:
                rates = model["rates"][batches[-1]]
                fastest = max(rates[f"{short}/{path}"]["median"] for path in PATHS)
                best.append(f"{model_name} {fastest:,.0f}/s at {batches[-1]}")
        left = measured["not_measured"]
        if not best:
            line = "nothing measured" + (" (timed out)" if measured.get("timed_out") else "")
            result = StageResult(name, Status.FAILED, seconds, line)
        else:
            detail = "fastest path: " + "; ".join(best)
            detail += f" (partial: left out for time: {', '.join(left)})" if left else ""
            result = StageResult(name, Status.PASSED, seconds, detail)
        say(result.line())
        return result

    def service_sweep(self) -> Outcome:
        timeout = self.budget.require(
            self.budget.timeout_s(self.budget.remaining_s()), "the service"
        )
        assert self.service is not None
        gpu = self.cuda_usable
        spec = {
            "repository": str(self.repository),
            "models": self.ordered_models(),
            "chunk_sizes": list(self.options.chunk_sizes),
            "items": self.options.service_items or SERVICE_ITEMS[gpu],
            "repeats": SERVICE_REPEATS[gpu],
            "provider": CUDA if gpu else CPU,
            "folder": str(self.work),
            "deadline": time.time() + timeout * 0.9,
        }
        measured = run_child("aeq.bench.gpu.service", spec, self.work, timeout, self.service.env)
        self.measured["service"] = measured
        return self.service_outcome(measured)

    @staticmethod
    def service_outcome(measured: dict[str, Any]) -> Outcome:
        cells = sum(len(model["chunk_sweep"]) for model in measured["models"].values())
        if not cells:
            raise StageFailed(
                "no job measured" + (" (timed out)" if measured.get("timed_out") else "")
            )
        reached = {
            name: model.get("smallest_chunk_near_engine")
            for name, model in measured["models"].items()
        }
        near = "; ".join(f"{name} {size or 'none'}" for name, size in reached.items())
        left = measured["not_measured"]
        detail = (
            f"{cells} jobs on {measured['provider']}; smallest chunk at "
            f"{measured['near_engine_ratio']}x the engine: {near}"
        )
        detail += f" (partial: left out for time: {', '.join(left)})" if left else ""
        return Outcome(detail)

    # -- helpers ---------------------------------------------------------------------------

    def first_model(self) -> str:
        return DEFAULT_MODEL if DEFAULT_MODEL in self.models else next(iter(self.models))

    def ordered_models(self) -> list[str]:
        first = self.first_model()
        return [first, *(name for name in self.models if name != first)]

    def child_env(self) -> dict[str, str]:
        """The measuring children's environment: the user's, with aeq's variables cleared."""
        from aeq.private_service import service_env

        assert self.repository is not None
        return service_env(self.repository)

    def stop(self, why: str) -> None:
        """Stop the private service, keep the workers' logs, and record the stages not run."""
        for name in STAGE_NAMES:
            if name not in self.stages:
                self.record(StageResult(name, Status.FAILED, 0.0, f"not run: {why}"))
        if self.service is not None:
            self.service.stop()
            for worker in self.service.workers:
                copy = Path(self.options.out) / worker.log.name
                copy.write_bytes(worker.log.read_bytes())
            self.service = None

    def report(self) -> dict[str, Any]:
        from aeq.bench.machine import cpuinfo_fields, git_revision, library_versions, usable_cores

        stages = {name: result.to_json() for name, result in self.stages.items()}
        cpu = cpuinfo_fields()
        return {
            "report_version": gpu_report.REPORT_VERSION,
            "started_at": datetime.fromtimestamp(self.budget.started, UTC).isoformat(
                timespec="seconds"
            ),
            "seconds": round(self.budget.elapsed_s(), 1),
            "budget_s": self.budget.total_s,
            "verdict": gpu_report.verdict(stages),
            "gpu": {**self.gpu.to_json(), "line": self.gpu.line()},
            "host": {
                "cpu_model": cpu.get("model name") or platform.processor(),
                "usable_cores": usable_cores(),
                "memory_gib": _memory_gib(),
                "platform": platform.platform(),
                "python": sys.executable,
                "libraries": library_versions(),
                "git": git_revision(Path.cwd()),
                "cuda_library_dirs": [str(folder) for folder in host.cuda_library_dirs()],
            },
            "stages": stages,
            **self.measured,
        }


def _memory_gib() -> float:
    try:
        import psutil
    except ImportError:
        return 0.0
    return round(psutil.virtual_memory().total / 2**30, 1)


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(part) for part in text.split(",") if part.strip())
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers like 1,64,1024, got {text!r}")
    return sizes


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m aeq.bench.gpu", description=__doc__.split("\n")[0]
    )
    parser.add_argument("out", help="folder for report.json, report.md and the worker's log")
    parser.add_argument("--work", help="scratch folder (default: a new temporary one)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S)
    parser.add_argument("--started-at", type=float, help="when the check began (epoch seconds)")
    parser.add_argument("--repository", help="model repository (default: tiny stand-ins)")
    parser.add_argument("--install-status", default="skipped", choices=[s.value for s in Status])
    parser.add_argument("--install-seconds", type=float, default=0.0)
    parser.add_argument("--install-detail", default="")
    parser.add_argument("--batches", type=_sizes, default=BATCHES)
    parser.add_argument("--chunk-sizes", type=_sizes, default=CHUNK_SIZES)
    parser.add_argument("--service-items", type=int, help="images per service job")
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"gpu-check: stopped by signal {signum}: writing the report")


def main(argv: list[str]) -> int:
    """Run the check; 0 when no stage failed, 1 otherwise."""
    options = parse(argv)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aeq-gpu-check-") as scratch:
        options.work = options.work or scratch
        Path(options.work).mkdir(parents=True, exist_ok=True)
        check = Check(options)
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        why = "the check stopped before it"
        try:
            check.run()
        except SystemExit as stopped:
            why = str(stopped)
            say(why)
        except Exception as error:  # a fault of the check itself: still clean up and report
            traceback.print_exc()
            why = f"the check failed: {one_line(f'{type(error).__name__}: {error}')}"
            say(f"gpu-check: {why}")
        finally:
            check.stop(why)
            found = check.report()
            _, markdown_path = gpu_report.write(found, out)
    say(f"gpu-check: {gpu_report.summary_line(found)}; report: {markdown_path}")
    return 0 if found["verdict"] == "passed" else 1
