"""The published models, run the way the service runs them: ONNX Runtime on the repository's
sha256-checked graphs.

Only ONNX Runtime is imported (inside ``load``), never TensorFlow, so the report measures exactly
the bytes a worker would serve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.catalog import IMAGE_SIDE, IMAGE_TENSOR, Graph, model_spec
from export.repository import ModelRepository, ModelVersion

# Images per ONNX Runtime call: large enough to keep both cores busy, small enough that the
# denoising net's activations (32 x 28 x 28 floats per image) stay around 100 MB.
BATCH_SIZE = 1000
# The evaluation runs on the CPU on purpose: it is the reference measurement, and the
# CPU provider gives the same numbers on every machine.
PROVIDERS = ("CPUExecutionProvider",)


@dataclass
class ServedModel:
    """One published model version with ONNX Runtime sessions for its graphs.

    Attributes:
        name: catalogue name (``vanilla``…).
        version: the repository entry it was loaded from.
        input_dims: one image's shape at the graphs' input, batch excluded.
        sessions: an ONNX Runtime session per graph used (autoencoder, encoder).
    """

    name: str
    version: ModelVersion
    input_dims: tuple[int, ...]
    sessions: Mapping[Graph, Any]

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
        """Run the autoencoder graph; ``images`` and the result are float32 (N, 28, 28)."""
        output = self._run(Graph.AUTOENCODER, self._shaped(images))
        return output.reshape(len(output), IMAGE_SIDE, IMAGE_SIDE)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Run the encoder graph; returns the flat codes, float32 (N, code_dim)."""
        return self._run(Graph.ENCODER, self._shaped(images)).reshape(len(images), -1)

    def _shaped(self, images: np.ndarray) -> np.ndarray:
        array = np.asarray(images, dtype=np.float32)
        return array.reshape(len(array), *self.input_dims)

    def _run(self, graph: Graph, inputs: np.ndarray) -> np.ndarray:
        session = self.sessions[graph]
        input_name = session.get_inputs()[0].name
        outputs = [
            session.run(None, {input_name: inputs[start : start + BATCH_SIZE]})[0]
            for start in range(0, len(inputs), BATCH_SIZE)
        ]
        return np.concatenate(outputs).astype(np.float32, copy=False)


def load(repository: ModelRepository, name: str, version: int | None = None) -> ServedModel:
    """Load a published model's autoencoder and encoder graphs into ONNX Runtime sessions.

    Raises:
        ModelNotFoundError: the model or version is not published.
        IntegrityError: a graph's bytes do not match their recorded sha256.
        RepositoryError: a graph does not use aeq's tensor names.
    """
    import onnxruntime

    from common.errors import RepositoryError

    published = repository.get(name, version)
    sessions = {}
    for graph in (Graph.AUTOENCODER, Graph.ENCODER):
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not for users
        session = onnxruntime.InferenceSession(
            published.read_verified(graph), options, providers=list(PROVIDERS)
        )
        if session.get_inputs()[0].name != IMAGE_TENSOR:
            raise RepositoryError(f"{published.label} {graph} graph does not take '{IMAGE_TENSOR}'")
        sessions[graph] = session
    dims = tuple(int(d) for d in published.config.get("input_dims", model_spec(name).input_dims))
    return ServedModel(name, published, dims, sessions)
