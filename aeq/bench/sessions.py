"""ONNX Runtime session configurations the engine benchmark sweeps.

A configuration is one point in the space of CPU session options that matter for these graphs:
graph optimisation level, intra-op threads, execution mode, memory pattern planning and whether
idle intra-op threads spin. ``OrtConfig()`` is ONNX Runtime's own default session; the sweep
varies one option at a time around it, then tries the best value of each option together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

LEVELS = ("disable", "basic", "extended", "all")
MODES = ("sequential", "parallel")
# ONNX Runtime's session config key for spin-waiting intra-op threads ("1" by default).
SPINNING_KEY = "session.intra_op.allow_spinning"
CPU_PROVIDERS = ["CPUExecutionProvider"]


@dataclass(frozen=True)
class OrtConfig:
    """CPU session options; the defaults are ONNX Runtime's own.

    Attributes:
        level: graph optimisation level (``disable``, ``basic``, ``extended``, ``all``).
        threads: intra-op threads (0: ONNX Runtime's choice, one per physical core).
        mode: ``sequential`` or ``parallel`` execution of independent nodes.
        mem_pattern: plan buffers from the first run's allocation pattern.
        spinning: idle intra-op threads spin-wait for work instead of sleeping.
    """

    level: str = "all"
    threads: int = 0
    mode: str = "sequential"
    mem_pattern: bool = True
    spinning: bool = True

    def label(self) -> str:
        """A short name listing what differs from the default (``default`` if nothing)."""
        base = OrtConfig()
        changed = [
            f"{key}={value}" for key, value in asdict(self).items() if value != getattr(base, key)
        ]
        return ", ".join(changed) or "default"

    def session_options(self) -> Any:
        """The ``onnxruntime.SessionOptions`` for this configuration."""
        import onnxruntime as ort

        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[self.level]
        options.intra_op_num_threads = self.threads
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL
            if self.mode == "parallel"
            else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.enable_mem_pattern = self.mem_pattern
        options.add_session_config_entry(SPINNING_KEY, "1" if self.spinning else "0")
        return options

    def session(self, model_bytes: bytes) -> Any:
        """A CPU ``InferenceSession`` for ``model_bytes`` with these options."""
        import onnxruntime as ort

        return ort.InferenceSession(model_bytes, self.session_options(), providers=CPU_PROVIDERS)


def one_factor_configs(cores: int) -> dict[str, list[OrtConfig]]:
    """Every option's alternative values around the default, by option name."""
    base = OrtConfig()
    return {
        "level": [replace(base, level=level) for level in LEVELS if level != base.level],
        "threads": [replace(base, threads=count) for count in range(1, cores + 1)],
        "mode": [replace(base, mode=mode) for mode in MODES if mode != base.mode],
        "mem_pattern": [replace(base, mem_pattern=not base.mem_pattern)],
        "spinning": [replace(base, spinning=not base.spinning)],
    }


def combine_best(medians: Mapping[OrtConfig, float], cores: int) -> OrtConfig:
    """The default with every option set to its best value in a one-factor sweep."""
    base = OrtConfig()
    best = base
    for option, alternatives in one_factor_configs(cores).items():
        candidates = [base, *alternatives]
        winner = max(candidates, key=lambda config: medians.get(config, 0.0))
        best = replace(best, **{option: getattr(winner, option)})
    return best
