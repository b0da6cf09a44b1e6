"""What the host has: a GPU and its driver, ONNX Runtime's build and providers, CUDA libraries.

A GPU is "found" when ``nvidia-smi`` lists one. Without that the check says ``no GPU found
(REASON)`` in one line and skips the CUDA stages. With a GPU, a CPU-only ONNX Runtime or CUDA
libraries that do not load are failures, not reasons to skip: that is what the check is for.

``onnxruntime-gpu`` does not find the CUDA libraries of the ``nvidia-*`` wheels by itself on
Linux (it has no RPATH to them), so ``scripts/gpu-check.sh`` puts their ``lib`` folders on
``LD_LIBRARY_PATH`` before anything starts (``python -m aeq.bench.gpu.host cuda-library-path``).
The loader reads that variable once, at a process's start, which is why the shell sets it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NVIDIA_SMI_TIMEOUT_S = 20.0
_GPU_QUERY = ("name", "driver_version", "memory.total", "uuid")


@dataclass(frozen=True)
class GpuFinding:
    """What ``nvidia-smi`` says about this host.

    Attributes:
        found: at least one GPU is listed.
        reason: why none was found (empty when one was).
        gpus: one mapping per GPU: name, driver_version, memory.total (MiB), uuid.
        summary: nvidia-smi's own table (driver and CUDA version), for the report.
    """

    found: bool
    reason: str = ""
    gpus: list[dict[str, str]] = field(default_factory=list)
    summary: str = ""

    def line(self) -> str:
        """One line for people: the GPU and driver, or ``no GPU found (REASON)``."""
        if not self.found:
            return f"no GPU found ({self.reason})"
        first = self.gpus[0]
        return (
            f"{len(self.gpus)} GPU(s): {first['name']}, driver {first['driver_version']}, "
            f"{first['memory.total']} MiB"
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def find_gpu() -> GpuFinding:
    """Ask ``nvidia-smi`` for the GPUs; say why none was found if none was."""
    from worker.inference import nvidia_device_visible

    smi = shutil.which("nvidia-smi")
    if smi is None:
        nodes = "" if nvidia_device_visible() else " and no NVIDIA device nodes in /dev"
        return GpuFinding(False, f"nvidia-smi is not on PATH{nodes}")
    query = [smi, f"--query-gpu={','.join(_GPU_QUERY)}", "--format=csv,noheader,nounits"]
    try:
        listed = subprocess.run(query, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return GpuFinding(False, f"nvidia-smi did not answer in {NVIDIA_SMI_TIMEOUT_S:.0f} s")
    if listed.returncode != 0:
        said = (listed.stderr + listed.stdout).strip().splitlines() or ["no output"]
        return GpuFinding(False, f"nvidia-smi exited with {listed.returncode}: {said[-1]}")
    gpus = [
        dict(zip(_GPU_QUERY, (part.strip() for part in line.split(",")), strict=False))
        for line in listed.stdout.splitlines()
        if line.strip()
    ]
    if not gpus:
        return GpuFinding(False, "nvidia-smi lists no GPU")
    try:
        table = subprocess.run([smi], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S)
        summary = table.stdout.strip()
    except subprocess.TimeoutExpired:
        summary = f"(nvidia-smi's table did not come in {NVIDIA_SMI_TIMEOUT_S:.0f} s)"
    return GpuFinding(True, gpus=gpus, summary=summary)


def onnxruntime_facts() -> dict[str, Any]:
    """ONNX Runtime's version, build, the providers it offers and where it was imported from.

    Importing ONNX Runtime and listing its providers initialises no CUDA; only a session does.
    """
    import onnxruntime as ort

    return {
        "version": ort.__version__,
        "device": ort.get_device(),
        "available_providers": list(ort.get_available_providers()),
        "module": str(Path(ort.__file__).parent),
    }


def cuda_library_dirs() -> list[Path]:
    """The ``lib`` folders of the installed ``nvidia-*`` wheels that hold shared libraries.

    CUDA 13's wheels share one ``nvidia/cu13/lib``; cuDNN keeps ``nvidia/cudnn/lib``; CUDA 12's
    have one folder per component (``nvidia/cublas/lib``, ...). All are ``nvidia/*/lib``.
    """
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for root in spec.submodule_search_locations:
        for folder in sorted(Path(root).glob("*/lib")):
            if any(folder.glob("*.so*")):
                found.append(folder)
    return found


def main(argv: list[str]) -> int:
    """``python -m aeq.bench.gpu.host cuda-library-path``: the folders, ``:``-separated."""
    if argv != ["cuda-library-path"]:
        print("usage: python -m aeq.bench.gpu.host cuda-library-path", file=sys.stderr)
        return 2
    print(os.pathsep.join(str(folder) for folder in cuda_library_dirs()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
