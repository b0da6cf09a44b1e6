"""ONNX Runtime inference on a chunk: the one code path local mode, workers and benchmarks share.

One ``InferenceSession`` per (model, version, graph) and process, created on first use, which in a
worker is after the fork (ORT sessions, CUDA ones above all, do not survive a fork). Model bytes
come from the repository only after their sha256 matched.

ONNX Runtime falls back to the CPU silently when the CUDA provider cannot load, so every session's
providers are read back with ``get_providers()``, logged once, and reported with every result.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aeq.core.catalog import IMAGE_SIDE, Graph, Operation
from aeq.core.errors import ProviderError
from aeq.core.pixel_scale import DEFAULT_PIXEL_SCALE, PixelScale
from aeq.core.settings import Settings
from aeq.repository import ModelVersion

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
# Device nodes the NVIDIA driver creates (also inside containers given a GPU).
_NVIDIA_DEVICES = (Path("/dev/nvidiactl"), Path("/dev/nvidia0"), Path("/proc/driver/nvidia"))
# ONNX Runtime's pool threads spin after a parallel section, waiting for the next one. On a host
# whose cores are shared (other workers, Redis, the client) they burn the cores the rest need:
# a 2-thread session without spinning ran 1.1-2.0x faster with one core busy elsewhere, in 7 of
# 8 model runs (docs/BENCHMARKS.md). One-thread sessions have no pool, so nothing to turn off.
ALLOW_SPINNING_KEY = "session.intra_op.allow_spinning"
# Items per ``InferenceSession.run`` call. ONNX Runtime's CPU arena keeps the largest activation
# buffers a process has needed for the rest of its life, so a chunk is fed in slices of at most
# this many: a worker's memory then stays what this batch needs whatever ``--chunk-size`` users
# pick (denoising: 3.1 GB after one 4096-image call). Larger calls are no faster once the batch
# is in the hundreds (docs/BENCHMARKS.md, step 2).
MAX_SESSION_BATCH = 512


@dataclass(frozen=True)
class ChunkResult:
    """What inference made of one chunk.

    Attributes:
        array: uint8 images (n, 28, 28) or float32 codes (n, code_dim).
        provider: the execution provider that ran the graph.
        seconds: wall time of the conversion and the ``run`` call.
    """

    array: np.ndarray
    provider: str
    seconds: float


@dataclass(frozen=True)
class LoadedGraph:
    """An ONNX Runtime session with what ``Engine.run`` needs to feed it."""

    session: onnxruntime.InferenceSession
    input_name: str
    output_name: str
    input_dims: tuple[int, ...]  # one item's shape, batch excluded
    provider: str
    pixel_scale: PixelScale = DEFAULT_PIXEL_SCALE
    # The graph's first input dim where it is a number (ONNX models made elsewhere: PyTorch
    # exports batch 1 unless told otherwise): every run call feeds exactly this many items.
    fixed_batch: int | None = None


def nvidia_device_visible() -> bool:
    """True when an NVIDIA driver is visible here (or where this cannot be told: not Linux)."""
    if not sys.platform.startswith("linux"):
        return True
    return any(path.exists() for path in _NVIDIA_DEVICES)


def gpu_expected(providers: tuple[str, ...]) -> bool:
    """True when sessions will try a GPU: CUDA (or TensorRT) is asked for and a driver is visible.

    A guess made without loading CUDA (that happens in the worker's children, after the fork);
    the providers really in use are still read back from every session.
    """
    wants_gpu = CUDA_PROVIDER in providers or TENSORRT_PROVIDER in providers
    return wants_gpu and nvidia_device_visible()


def cpu_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota.

    A container limited with ``cpus: 2`` still sees every host core in its affinity mask; only the
    cgroup's ``cpu.max`` tells, so several replicas on one host do not oversubscribe it.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota(CGROUP_CPU_MAX)
    return max(1, min(cores, quota)) if quota else cores


def cgroup_cpu_quota(path: Path) -> int | None:
    """Whole CPUs allowed by a cgroup v2 ``cpu.max`` file (``"200000 100000"`` -> 2), if limited."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def threads_per_process(settings: Settings, concurrency: int) -> int:
    """ONNX Runtime intra-op threads so ``concurrency`` processes do not oversubscribe cores."""
    if settings.threads_per_process:
        return settings.threads_per_process
    return max(1, cpu_cores() // max(1, concurrency))


class Engine:
    """This process's ONNX Runtime sessions, created lazily and kept for the process's life."""

    def __init__(self, settings: Settings, concurrency: int = 1, require_gpu: bool = False) -> None:
        self.providers = settings.providers
        self.threads = threads_per_process(settings, concurrency)
        self.require_gpu = require_gpu
        self._sessions: dict[tuple[str, Graph, str], LoadedGraph] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._announced = False

    def graph(self, version: ModelVersion, graph: Graph) -> LoadedGraph:
        """The session for one graph of one model version, created on first use."""
        # Keyed by folder and recorded hash, not model@version: one process may read two
        # repositories that both hold e.g. vanilla@1, and a version folder may be republished.
        recorded_sha256 = str(version.config.get("sha256", {}).get(version.graph(graph).file))
        key = (str(version.path.resolve()), graph, recorded_sha256)
        if self._pid != os.getpid():  # inherited through a fork: never reuse the parent's
            self._sessions.clear()
            self._pid = os.getpid()
        loaded = self._sessions.get(key)
        if loaded is None:
            with self._lock:
                loaded = self._sessions.get(key) or self._load(version, graph)
                self._sessions[key] = loaded
        return loaded

    def run(self, version: ModelVersion, op: Operation, items: np.ndarray) -> ChunkResult:
        """Run ``op`` on a chunk of items (uint8 images or float32 codes)."""
        loaded = self.graph(version, op.graph)
        started = time.perf_counter()
        batch = loaded.fixed_batch or MAX_SESSION_BATCH
        parts = [
            self._run_batch(loaded, op, items[start : start + batch])
            for start in range(0, len(items), batch)
        ]
        array = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return ChunkResult(array, loaded.provider, time.perf_counter() - started)

    @staticmethod
    def _run_batch(loaded: LoadedGraph, op: Operation, items: np.ndarray) -> np.ndarray:
        count = len(items)
        scale = loaded.pixel_scale
        feed = to_graph_input(op, pad_to_batch(items, loaded.fixed_batch), loaded.input_dims, scale)
        (output,) = loaded.session.run([loaded.output_name], {loaded.input_name: feed})
        return from_graph_output(op, output[:count], count, scale)

    def _load(self, version: ModelVersion, graph: Graph) -> LoadedGraph:
        import onnxruntime as ort

        info = version.graph(graph)
        model_bytes = version.read_verified(graph)
        session = ort.InferenceSession(
            model_bytes, self._session_options(), providers=self._requested(ort)
        )
        in_use = session.get_providers()
        provider = in_use[0] if in_use else CPU_PROVIDER
        self._announce(version, graph, in_use)
        if self.require_gpu and provider != CUDA_PROVIDER:
            raise ProviderError(
                f"{version.label} {graph.value}: running on {provider}, not CUDA (--require-gpu)"
            )
        # Later sessions ask only for what loaded, so a missing CUDA library is reported once.
        self.providers = tuple(in_use) or (CPU_PROVIDER,)
        return LoadedGraph(
            session,
            info.input.name,
            info.output.name,
            info.input.dims[1:],
            provider,
            version.pixel_scale,
            info.input.fixed_batch,
        )

    def _requested(self, ort: Any) -> list[str]:
        available = set(ort.get_available_providers())
        if CUDA_PROVIDER in self.providers and not nvidia_device_visible():
            # onnxruntime-gpu lists CUDA as available on any host; asking for it without a GPU
            # only prints a page of loader errors before falling back. The session's providers
            # are still read back, so this shortcut cannot hide a fallback.
            available.discard(CUDA_PROVIDER)
            available.discard(TENSORRT_PROVIDER)
        requested = [name for name in self.providers if name in available]
        return requested or [CPU_PROVIDER]

    def _session_options(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if self.threads > 1:
            options.add_session_config_entry(ALLOW_SPINNING_KEY, "0")
        return options

    def _announce(self, version: ModelVersion, graph: Graph, in_use: list[str]) -> None:
        level = logging.INFO
        if CUDA_PROVIDER in self.providers and CUDA_PROVIDER not in in_use:
            level = logging.WARNING
        if not self._announced or level == logging.WARNING:
            logger.log(
                level,
                "ONNX Runtime %s %s: providers in use %s (requested %s), %d intra-op threads",
                version.label,
                graph.value,
                in_use,
                list(self.providers),
                self.threads,
            )
        self._announced = True


def pad_to_batch(items: np.ndarray, batch: int | None) -> np.ndarray:
    """``items`` filled up with zeros to ``batch`` items (a graph with a fixed batch size takes
    no fewer); as they are when the batch is open or already full."""
    if batch is None or len(items) == batch:
        return items
    padded = np.zeros((batch, *items.shape[1:]), dtype=items.dtype)
    padded[: len(items)] = items
    return padded


def to_graph_input(
    op: Operation,
    items: np.ndarray,
    input_dims: tuple[int, ...],
    scale: PixelScale = DEFAULT_PIXEL_SCALE,
) -> np.ndarray:
    """Turn a chunk into the graph's input: pixels to float32 in the graph's ``scale`` (0-1:
    x / 255), reshaped; codes as-is.

    One pass over the data for 0-1 and 0-255: the multiply writes the float32 result directly.
    """
    count = len(items)
    shape = (count, *(d if d > 0 else -1 for d in input_dims))
    if op is Operation.DECODE:
        return np.ascontiguousarray(items, dtype=np.float32).reshape(shape)
    step = np.float32(scale.per_grey_level)
    values = np.multiply(items.reshape(shape), step, dtype=np.float32)
    if scale.low:
        values += np.float32(scale.low)
    return values


def from_graph_output(
    op: Operation, output: np.ndarray, count: int, scale: PixelScale = DEFAULT_PIXEL_SCALE
) -> np.ndarray:
    """Turn the graph's output back into what the client stores.

    Images become uint8 ``round((clip(x, low, high) - low) * 255 / (high - low))`` of shape
    (n, 28, 28) (0-1: ``round(clip(x, 0, 1) * 255)``), computed in place on ONNX Runtime's
    output buffer; codes stay float32, flattened to (n, code_dim).
    """
    if op is Operation.ENCODE:
        return np.ascontiguousarray(output, dtype=np.float32).reshape(count, -1)
    pixels = output.reshape(count, IMAGE_SIDE, IMAGE_SIDE)
    np.clip(pixels, scale.low, scale.high, out=pixels)
    if scale.low:
        pixels -= scale.low
    pixels *= scale.grey_levels_per_unit
    np.rint(pixels, out=pixels)
    return pixels.astype(np.uint8)


_process_engine: Engine | None = None


def process_engine(settings: Settings, concurrency: int = 1, require_gpu: bool = False) -> Engine:
    """This process's engine, made on first call (in a worker: in the child, after the fork)."""
    global _process_engine
    if _process_engine is None or _process_engine._pid != os.getpid():
        _process_engine = Engine(settings, concurrency, require_gpu)
    return _process_engine
