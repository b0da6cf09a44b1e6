"""The machine a benchmark ran on: CPU, cores, clock, theoretical peak, load and library versions.

The peak is arithmetic, not a measurement: usable cores x clock x single-precision FLOPs per cycle
per core, where FLOPs per cycle come from the vector width and the number of FMA pipes of the CPU
family (an FMA is two FLOPs). ``cpu_peak`` returns the figures and the sentence that shows the
arithmetic, so a reader can check it against the CPU's data sheet.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
# Distributions whose versions a report records (importlib.metadata names).
LIBRARIES = (
    "onnxruntime-gpu",
    "onnxruntime",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "tf2onnx",
    "onnx",
    "numpy",
    "celery",
    "kombu",
    "redis",
    "msgpack",
)
_AMD_ZEN4_FAMILY = 0x19
_AMD_ZEN5_FAMILY = 0x1A
_AMD_ZEN_FAMILY = 0x17
_AMD_ZEN2_FIRST_MODEL = 0x30
_GIT_TIMEOUT_S = 5.0
# A float32 matrix product big enough for OpenBLAS to run at its best on every core.
SGEMM_SIZE = 2048
SGEMM_REPEATS = 7


@dataclass(frozen=True)
class CpuPeak:
    """Theoretical single-precision peak of the cores this process may use.

    Attributes:
        cores: usable cores (CPU affinity).
        clock_ghz: the clock used for the arithmetic.
        clock_source: where the clock came from (``lscpu max MHz``, ``/proc/cpuinfo``).
        flops_per_cycle: FP32 FLOPs per cycle per core (FMA counted as 2).
        vector: the instruction set the figure assumes, with its FMA pipes.
        gflops: cores x clock x flops_per_cycle.
        arithmetic: the sentence that shows it.
    """

    cores: int
    clock_ghz: float
    clock_source: str
    flops_per_cycle: int
    vector: str
    gflops: float
    arithmetic: str


def cpuinfo_fields(text: str | None = None) -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (empty off Linux)."""
    if text is None:
        try:
            text = CPUINFO.read_text()
        except OSError:
            return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def lscpu_fields() -> dict[str, str]:
    """``lscpu``'s ``key: value`` lines (empty if lscpu is missing)."""
    binary = shutil.which("lscpu")
    if binary is None:
        return {}
    try:
        text = subprocess.run([binary], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in text.splitlines())
    }


def flops_per_cycle(vendor: str, family: int, model: int, flags: set[str]) -> tuple[int, str]:
    """FP32 FLOPs per cycle per core and the vector unit that gives them.

    AMD Zen 4 runs AVX-512 on its two 256-bit FMA pipes (a 512-bit op takes both), so it peaks
    like AVX2; Zen 5 server parts have full 512-bit pipes. Intel cores with AVX-512 are assumed
    to have two 512-bit FMA units (Xeon Gold/Platinum; some parts have one).
    """
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family == _AMD_ZEN4_FAMILY:
            return 32, "AVX-512 on 2 x 256-bit FMA pipes (Zen 4): 2 pipes x 8 lanes x 2"
        if vendor == "AuthenticAMD" and family >= _AMD_ZEN5_FAMILY:
            return 64, "AVX-512, 2 x 512-bit FMA pipes (Zen 5): 2 pipes x 16 lanes x 2"
        return 64, "AVX-512, 2 x 512-bit FMA units: 2 units x 16 lanes x 2"
    if "avx2" in flags and "fma" in flags:
        if vendor == "AuthenticAMD" and family == _AMD_ZEN_FAMILY and model < _AMD_ZEN2_FIRST_MODEL:
            return 16, "AVX2 FMA on 2 x 128-bit pipes (Zen 1): 2 pipes x 4 lanes x 2"
        return 32, "AVX2 FMA, 2 x 256-bit FMA units: 2 units x 8 lanes x 2"
    if "avx" in flags:
        return 16, "AVX without FMA: one 8-lane add + one 8-lane multiply"
    return 8, "SSE: one 4-lane add + one 4-lane multiply"


def usable_cores() -> int:
    """The cores this process may run on (CPU affinity, container cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def clock_ghz(lscpu: dict[str, str], cpuinfo: dict[str, str]) -> tuple[float, str]:
    """The clock for the peak: lscpu's max MHz where the kernel knows it, else /proc/cpuinfo."""
    for key, source in (("CPU max MHz", "lscpu CPU max MHz"), ("CPU MHz", "lscpu CPU MHz")):
        if lscpu.get(key):
            return float(lscpu[key]) / 1000.0, source
    if cpuinfo.get("cpu MHz"):
        return float(cpuinfo["cpu MHz"]) / 1000.0, "/proc/cpuinfo cpu MHz (no boost clock known)"
    return 0.0, "unknown"


def cpu_peak(
    lscpu: dict[str, str] | None = None,
    cpuinfo: dict[str, str] | None = None,
    cores: int | None = None,
) -> CpuPeak:
    """This machine's theoretical FP32 peak, with the arithmetic spelled out."""
    lscpu = lscpu_fields() if lscpu is None else lscpu
    cpuinfo = cpuinfo_fields() if cpuinfo is None else cpuinfo
    cores = usable_cores() if cores is None else cores
    flags = set((cpuinfo.get("flags") or lscpu.get("Flags", "")).split())
    vendor = cpuinfo.get("vendor_id") or lscpu.get("Vendor ID", "")
    family = int(cpuinfo.get("cpu family") or lscpu.get("CPU family") or 0)
    model = int(cpuinfo.get("model") or lscpu.get("Model") or 0)
    per_cycle, vector = flops_per_cycle(vendor, family, model, flags)
    ghz, source = clock_ghz(lscpu, cpuinfo)
    gflops = cores * ghz * per_cycle
    arithmetic = (
        f"{cores} cores x {ghz:.3f} GHz ({source}) x {per_cycle} FP32 FLOP/cycle "
        f"({vector}) = {gflops:.1f} GFLOP/s"
    )
    return CpuPeak(cores, ghz, source, per_cycle, vector, gflops, arithmetic)


def sgemm_gflops(quick: bool = False) -> dict[str, Any]:
    """The best GFLOP/s NumPy's BLAS reaches on a float32 matrix product, all cores.

    Under a hypervisor ``/proc/cpuinfo`` shows the nominal (TSC) clock, not the boost clock the
    cores run at, so the nominal peak can be beaten; this measured figure is the practical
    ceiling the achieved GFLOP/s are compared with too.
    """
    import numpy as np

    size = SGEMM_SIZE // 2 if quick else SGEMM_SIZE
    rng = np.random.default_rng(0)
    left = rng.random((size, size), dtype=np.float32)
    right = rng.random((size, size), dtype=np.float32)
    left @ right
    best = 0.0
    for _ in range(2 if quick else SGEMM_REPEATS):
        started = time.perf_counter()
        left @ right
        best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return {"gflops": best, "size": size, "what": f"best float32 {size}x{size} matmul (NumPy BLAS)"}


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries on the measured path."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    redis_server = shutil.which("redis-server")
    if redis_server:
        try:
            text = subprocess.run(
                [redis_server, "--version"], capture_output=True, text=True, check=True
            ).stdout
            versions["redis-server"] = text.split("v=")[1].split()[0] if "v=" in text else text
        except (OSError, subprocess.CalledProcessError, IndexError):
            pass
    return versions


def git_revision(root: Path) -> str:
    """``HEAD``'s short hash, with ``+dirty`` when tracked files differ (empty outside git)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=_GIT_TIMEOUT_S,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "diff", "--quiet", "HEAD", "--"],
            capture_output=True, timeout=_GIT_TIMEOUT_S,
        ).returncode  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}+dirty" if dirty else head


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (empty where the platform has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # pragma: no cover - not Unix
        return []


def describe(root: Path) -> dict[str, Any]:
    """Everything a report says about the machine, the software and the command."""
    lscpu = lscpu_fields()
    cpuinfo = cpuinfo_fields()
    peak = cpu_peak(lscpu, cpuinfo)
    return {
        "cpu_model": cpuinfo.get("model name") or lscpu.get("Model name") or platform.processor(),
        "cpu_family_model": f"{cpuinfo.get('cpu family', '?')}/{cpuinfo.get('model', '?')}",
        "logical_cpus": os.cpu_count(),
        "usable_cores": peak.cores,
        "threads_per_core": lscpu.get("Thread(s) per core", ""),
        "hypervisor": lscpu.get("Hypervisor vendor", ""),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "peak": asdict(peak),
        "libraries": library_versions(),
        "git": git_revision(root),
        "command": " ".join(["aeq", *sys.argv[1:]]),
    }


def _memory_gib() -> float:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dev dependency
        return 0.0
    return round(psutil.virtual_memory().total / 2**30, 1)
