"""The published models, run through the service's own inference path.

Every image goes through ``worker.inference.Engine.run``, the code path workers, local mode and
the benchmarks share: uint8 pixels in, the sha256-checked ONNX graph in ONNX Runtime, uint8
pixels (or float32 codes) out. The report therefore measures exactly what a user of the service
gets back, 8-bit rounding included. Only ONNX Runtime is loaded, never TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aeq.core.catalog import Operation, model_spec
from aeq.core.settings import Settings
from aeq.repository import ModelRepository, ModelVersion
from worker.inference import Engine

# Images per Engine.run call: the denoising net's activations (32 x 28 x 28 floats per image)
# stay around 100 MB at this size, and both cores stay busy.
CHUNK_IMAGES = 1000
# uint8 pixels run from 0 to 255.
PIXEL_MAX = 255.0


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] as the uint8 pixels a user would store (rounded, clipped)."""
    return np.rint(np.clip(images, 0.0, 1.0) * PIXEL_MAX).astype(np.uint8)


def quantized(images: np.ndarray) -> np.ndarray:
    """Float images rounded to the 256 levels an 8-bit image file holds, as float32 in [0, 1]."""
    return to_pixels(images).astype(np.float32) / PIXEL_MAX


@dataclass
class ServedModel:
    """One published model version and the engine that runs it.

    Attributes:
        name: catalogue name (``vanilla``…).
        version: the repository entry it was loaded from.
        engine: the inference engine (one ONNX Runtime session per graph, made on first use).
        providers: execution providers that ran each operation, as reported by the engine.
    """

    name: str
    version: ModelVersion
    engine: Engine
    providers: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        """``model@version``."""
        return self.version.label

    @property
    def config(self) -> Mapping[str, Any]:
        """The version's ``config.json``."""
        return self.version.config

    @property
    def code_dim(self) -> int:
        """Length of the flat code vector."""
        return self.version.code_dim

    @property
    def noisy_input(self) -> bool:
        """Whether the model was trained on noisy inputs (the denoising model)."""
        return bool(self.config.get("noisy_input", model_spec(self.name).noisy_input))

    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Reconstruct float images in [0, 1] (sent as uint8); returns float32 (N, 28, 28)."""
        pixels = self._run(Operation.RECONSTRUCT, to_pixels(images))
        return pixels.astype(np.float32) / PIXEL_MAX

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Encode float images in [0, 1] (sent as uint8); returns float32 (N, code_dim)."""
        return self._run(Operation.ENCODE, to_pixels(images))

    def _run(self, op: Operation, items: np.ndarray) -> np.ndarray:
        items = items.reshape(len(items), 28, 28)
        parts = []
        for start in range(0, len(items), CHUNK_IMAGES):
            result = self.engine.run(self.version, op, items[start : start + CHUNK_IMAGES])
            self.providers.add(result.provider)
            parts.append(result.array)
        return np.concatenate(parts)


def load(
    repository: ModelRepository, name: str, settings: Settings, engine: Engine | None = None
) -> ServedModel:
    """Look up a published model; its graphs load (sha256-checked) on first use.

    Args:
        repository: the model repository.
        name: catalogue name.
        settings: supplies the execution providers (``AEQ_PROVIDERS``) and thread count.
        engine: share one engine between models (default: a new one for this model).

    Raises:
        ModelNotFoundError: the model is not published.
        IntegrityError: a graph's bytes do not match their recorded sha256.
    """
    published = repository.get(name)
    engine = engine if engine is not None else Engine(settings)
    # Load (and sha256-check) the graphs now, so a tampered model fails before any measuring.
    for op in (Operation.RECONSTRUCT, Operation.ENCODE):
        engine.graph(published, op.graph)
    return ServedModel(name, published, engine)
