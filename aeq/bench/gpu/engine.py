"""Engine throughput on each provider: every model of the repository, batch 1 to 4096.

Run in a child process (``python -m aeq.bench.gpu.engine SPEC RESULT``, see ``stages.run_child``).
Each provider gets the worker's own engine (``worker.inference.Engine``: its session options;
CUDA with ``require_gpu``, so a silent fall back to the CPU fails instead of being measured), and
per model and batch four paths through the same session, measured round-robin with
``aeq.bench.timing.compare``:

- ``session``: ``InferenceSession.run`` on float32 host arrays, what ``Engine`` calls;
- ``io_binding_host``: the input bound from host memory, the output into a buffer ONNX Runtime
  keeps on the device, copied back each call (what a worker could do: it gets and returns bytes);
- ``io_binding_device``: input and output stay on the device, no copies: the compute alone;
- ``engine_run``: ``Engine.run`` on uint8 pixels, the worker's whole path for one chunk (pixel
  conversion, slices of ``MAX_SESSION_BATCH``, uint8 output).

The time for each (model, batch) group is planned from the stage's budget and each path's first
call, and a group that no longer fits is left out and listed, never run past the deadline.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aeq.bench.engine import ort_path
from aeq.bench.gpu.stages import child_main, write_json
from aeq.bench.models import BenchModel, repository_models
from aeq.bench.service import operation
from aeq.bench.timing import Plan, Rate, compare
from aeq.core.catalog import Operation
from aeq.core.settings import load_settings
from aeq.repository import ModelVersion

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
SHORT_NAMES = {CPU: "cpu", CUDA: "cuda"}
DEVICES = {CPU: "cpu", CUDA: "cuda"}
PATHS = ("session", "io_binding_host", "io_binding_device", "engine_run")
REPEATS = 3
SETTLE_S = 0.02
MIN_REPEAT_FLOOR_S = 0.01
# Of a group's planned time, the share left for the first calls and the unforeseen.
GROUP_HEADROOM = 0.8
PARITY_BATCH = 64
# A group with less time than this is left out rather than measured in a hurry.
MIN_GROUP_S = 0.2
RANDOM_SEED = 0


@dataclass
class BoundRun:
    """One ``run_with_iobinding`` call with its buffers bound once, reused every call.

    Attributes:
        session: the session.
        binding: its IO binding (input and output bound).
        output: the output buffer, an ``OrtValue`` on the provider's device.
        inputs: what the input was bound from (kept alive while the binding uses it).
        copy_back: copy the output to host memory each call (else only wait for it).
    """

    session: Any
    binding: Any
    output: Any
    inputs: Any
    copy_back: bool

    def __call__(self) -> np.ndarray | None:
        self.session.run_with_iobinding(self.binding)
        if self.copy_back:
            return np.asarray(self.binding.copy_outputs_to_cpu()[0])
        self.binding.synchronize_outputs()
        return None

    def result(self) -> np.ndarray:
        """The output buffer's content, copied to host memory."""
        return np.asarray(self.output.numpy())


def bind(session: Any, inputs: np.ndarray, device: str, inputs_on_device: bool) -> BoundRun:
    """Bind ``inputs`` (copied to ``device`` once, or read from host memory every call) and an
    output buffer on ``device`` (``cpu`` or ``cuda``) to ``session``."""
    import onnxruntime as ort

    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    one = ort_path(session)(inputs[:1])  # the output's shape, whatever the graph's dims say
    output = ort.OrtValue.ortvalue_from_shape_and_type(
        (len(inputs), *one.shape[1:]), np.float32, device, 0
    )
    binding = session.io_binding()
    if inputs_on_device:
        source: Any = ort.OrtValue.ortvalue_from_numpy(inputs, device, 0)
        binding.bind_ortvalue_input(input_name, source)
    else:
        source = inputs
        binding.bind_cpu_input(input_name, inputs)
    binding.bind_ortvalue_output(output_name, output)
    return BoundRun(session, binding, output, source, copy_back=not inputs_on_device)


def engine_for(provider: str) -> Any:
    """The worker's engine on ``provider`` as one process that has the host to itself."""
    from worker.inference import Engine

    providers = (CUDA, CPU) if provider == CUDA else (CPU,)
    settings = load_settings().with_overrides(providers=providers)
    return Engine(settings, concurrency=1, require_gpu=provider == CUDA)


def paths(
    engine: Any, version: ModelVersion, op: Operation, pixels: np.ndarray, device: str
) -> dict[str, Callable[[], object]]:
    """The four paths of one provider through one session, on ``pixels`` (uint8 images)."""
    from worker.inference import to_graph_input

    loaded = engine.graph(version, op.graph)
    floats = to_graph_input(op, pixels, loaded.input_dims)
    run = ort_path(loaded.session)
    return {
        "session": lambda: run(floats),
        "io_binding_host": bind(loaded.session, floats, device, inputs_on_device=False),
        "io_binding_device": bind(loaded.session, floats, device, inputs_on_device=True),
        "engine_run": lambda: engine.run(version, op, pixels),
    }


def first_calls(contenders: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Call each contender once (CUDA's first call on a shape also picks its kernels); seconds."""
    seconds = {}
    for name, call in contenders.items():
        started = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - started
    return seconds


def group_plan(group_s: float, first: dict[str, float]) -> Plan:
    """Repeats sized so the group's contenders share ``group_s`` (one call a repeat at least)."""
    spent = sum(first.values())
    per_repeat = (group_s * GROUP_HEADROOM - 2 * spent) / (REPEATS * len(first)) - SETTLE_S
    return Plan(
        repeats=REPEATS,
        min_repeat_s=max(MIN_REPEAT_FLOOR_S, per_repeat),
        warmup_calls=1,
        settle_s=SETTLE_S,
    )


def estimated_s(first: dict[str, float], plan: Plan) -> float:
    """How long ``compare`` will take at least: warm-up, then each repeat's time or one call."""
    return sum(
        call * plan.warmup_calls + plan.repeats * (max(plan.min_repeat_s, call) + plan.settle_s)
        for call in first.values()
    )


def ratios(rates: dict[str, Rate]) -> dict[str, float]:
    """CUDA over CPU on each path, and what IO binding changes on each provider."""
    median = {name: rate.median for name, rate in rates.items()}
    found: dict[str, float] = {}
    for path in PATHS:
        if f"cuda/{path}" in median and f"cpu/{path}" in median:
            found[f"cuda/cpu {path}"] = median[f"cuda/{path}"] / median[f"cpu/{path}"]
    for short in SHORT_NAMES.values():
        if f"{short}/session" in median:
            base = median[f"{short}/session"]
            for path in ("io_binding_host", "io_binding_device", "engine_run"):
                found[f"{short} {path}/session"] = median[f"{short}/{path}"] / base
    return found


def parity(
    engines: dict[str, Any], version: ModelVersion, op: Operation, pixels: np.ndarray
) -> float | None:
    """Largest |CUDA - CPU| of the graph's float output on the same images (None: one provider)."""
    if len(engines) < 2:
        return None
    from worker.inference import to_graph_input

    outputs = []
    for engine in engines.values():
        loaded = engine.graph(version, op.graph)
        floats = to_graph_input(op, pixels[:PARITY_BATCH], loaded.input_dims)
        outputs.append(ort_path(loaded.session)(floats))
    return float(np.abs(outputs[0] - outputs[1]).max())


@dataclass
class EngineRun:
    """The measurement and its result file, written after every group."""

    spec: dict[str, Any]
    result_path: Path

    def __post_init__(self) -> None:
        self.deadline = float(self.spec["deadline"])
        self.models = repository_models(Path(self.spec["repository"]))
        self.pixels = np.random.default_rng(RANDOM_SEED).integers(
            0, 256, (max(self.spec["batches"]), 28, 28), dtype=np.uint8
        )
        self.engines = {provider: engine_for(provider) for provider in self.spec["providers"]}
        self.groups_left = len(self.spec["models"]) * len(self.spec["batches"])
        self.result: dict[str, Any] = {
            "providers": list(self.spec["providers"]),
            "batches": list(self.spec["batches"]),
            "paths": list(PATHS),
            "repeats": REPEATS,
            "models": {},
            "not_measured": [],
        }

    def model(self, model: BenchModel) -> None:
        version, op = model.version, operation(model)
        sessions = {
            SHORT_NAMES[provider]: engine.graph(version, op.graph).session.get_providers()
            for provider, engine in self.engines.items()
        }
        found: dict[str, Any] = {
            "version": version.label,
            "operation": op.value,
            "sessions": sessions,
            "rates": {},
            "ratios": {},
            "plans": {},
            "max_abs_diff_cuda_vs_cpu": parity(self.engines, version, op, self.pixels),
        }
        self.result["models"][model.name] = found
        for batch in self.spec["batches"]:
            self.group(found, version, op, int(batch))

    def group(self, found: dict[str, Any], version: ModelVersion, op: Operation, batch: int):
        """Measure one (model, batch) group in its share of the time left, or leave it out."""
        label = f"{found['version']} batch {batch}"
        group_s = max(0.0, self.deadline - time.time()) / max(1, self.groups_left)
        self.groups_left -= 1
        if group_s < MIN_GROUP_S:
            self.result["not_measured"].append(label)
            return
        contenders = {
            f"{SHORT_NAMES[provider]}/{path}": call
            for provider, engine in self.engines.items()
            for path, call in paths(
                engine, version, op, self.pixels[:batch], DEVICES[provider]
            ).items()
        }
        first = first_calls(contenders)
        plan = group_plan(group_s, first)
        if time.time() + estimated_s(first, plan) > self.deadline:
            self.result["not_measured"].append(label)
            return
        rates = compare(contenders, batch, plan)
        found["rates"][str(batch)] = {name: rate.to_json() for name, rate in rates.items()}
        found["ratios"][str(batch)] = ratios(rates)
        found["plans"][str(batch)] = {
            "group_s": group_s,
            "min_repeat_s": plan.min_repeat_s,
            "first_call_s": first,
        }
        write_json(self.result_path, self.result)


def measure(spec: dict[str, Any], result_path: Path) -> None:
    """The child's work: every model, every batch, every provider; results after each group."""
    run = EngineRun(spec, result_path)
    write_json(result_path, run.result)
    for name in spec["models"]:
        run.model(run.models[name])
    write_json(result_path, run.result)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:], measure))
