"""The parity gate: ONNX Runtime must reproduce Keras on real held-out images, graph by graph.

Every graph runs on the same inputs in Keras and in ONNX Runtime (CPU provider, loaded from the very
bytes that will be published). Each output's shape and largest absolute difference is logged and
returned; every failing graph is collected and reported in one ``ParityError``, so nothing
unvalidated reaches the repository. ONNX Runtime is imported inside the function that needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aeq.core.catalog import PARITY_ATOL, Graph
from aeq.core.errors import ParityError
from aeq.core.settings import Settings

logger = logging.getLogger(__name__)

# Held-out MNIST test images the parity gate runs every graph on.
PARITY_IMAGE_COUNT = 256
# Keras runs the parity images in batches of this many (256 images: one batch).
KERAS_BATCH_SIZE = 256


@dataclass(frozen=True)
class GraphParity:
    """What the gate measured on one graph.

    Attributes:
        graph: the graph compared.
        keras_shape: shape of Keras' output on the parity inputs.
        onnx_shape: shape of ONNX Runtime's output on the same inputs.
        max_abs_diff: largest |ONNX Runtime - Keras| over all outputs (NaN if shapes differ).
        tolerance: the largest difference accepted.
    """

    graph: Graph
    keras_shape: tuple[int, ...]
    onnx_shape: tuple[int, ...]
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """Shapes agree and the difference is within tolerance (NaN never passes)."""
        return self.keras_shape == self.onnx_shape and bool(self.max_abs_diff <= self.tolerance)

    def describe(self) -> str:
        """One phrase for the error message and the log."""
        if self.keras_shape != self.onnx_shape:
            return f"{self.graph}: ONNX shape {self.onnx_shape} != Keras shape {self.keras_shape}"
        return f"{self.graph}: max |diff| {self.max_abs_diff:.3g} > tolerance {self.tolerance:g}"


def run_onnx(onnx_bytes: bytes, inputs: np.ndarray) -> np.ndarray:
    """Run an ONNX graph with one input and one output on ONNX Runtime's CPU provider."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: inputs})
    return np.asarray(output)


def run_keras(model: Any, inputs: np.ndarray) -> np.ndarray:
    """Run a Keras model in inference mode and return its output as a numpy array."""
    # Calling the model directly (not ``predict``) avoids retracing a tf.function per model.
    batches = [
        np.asarray(model(inputs[start : start + KERAS_BATCH_SIZE], training=False))
        for start in range(0, len(inputs), KERAS_BATCH_SIZE)
    ]
    return np.concatenate(batches)


def compare_graph(
    graph: Graph,
    keras_model: Any,
    onnx_bytes: bytes,
    inputs: np.ndarray,
    tolerance: float = PARITY_ATOL,
) -> GraphParity:
    """Run one graph in Keras and ONNX Runtime on ``inputs`` and measure the difference."""
    expected = run_keras(keras_model, inputs)
    actual = run_onnx(onnx_bytes, inputs)
    if expected.shape == actual.shape:
        diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    else:
        diff = float("nan")
    result = GraphParity(graph, expected.shape, actual.shape, diff, tolerance)
    logger.info(
        "parity %s: output %s, max |diff| %.3g (%s)",
        graph,
        actual.shape,
        diff,
        "ok" if result.passed else "FAILED",
    )
    return result


def check_parity(
    keras_models: Mapping[Graph, Any],
    onnx_graphs: Mapping[Graph, bytes],
    inputs: Mapping[Graph, np.ndarray],
    tolerance: float = PARITY_ATOL,
    label: str = "model",
) -> dict[Graph, GraphParity]:
    """Compare every graph; return the measurements if all pass.

    Args:
        keras_models: the Keras model of each graph.
        onnx_graphs: the ONNX bytes of each graph (what will be published).
        inputs: each graph's parity inputs, batch first.
        tolerance: largest accepted max absolute difference.
        label: how the error message names the model.

    Raises:
        ParityError: one or more graphs differ beyond ``tolerance``; the message names each
            failing graph and its difference.
    """
    results = {
        graph: compare_graph(
            graph, keras_models[graph], onnx_graphs[graph], inputs[graph], tolerance
        )
        for graph in onnx_graphs
    }
    failures = [result.describe() for result in results.values() if not result.passed]
    if failures:
        count = min(len(batch) for batch in inputs.values())
        raise ParityError(
            f"{label}: ONNX Runtime disagrees with Keras on {count} held-out images: "
            f"{'; '.join(failures)}; nothing published"
        )
    return results


def load_parity_images(
    data: Path | None = None, settings: Settings | None = None, count: int = PARITY_IMAGE_COUNT
) -> tuple[np.ndarray, str]:
    """The first ``count`` MNIST test images as float32 in [0, 1], and where they came from.

    Looks for MNIST where ``aeq train`` does (``--data``, ``AEQ_DATA_DIR``, the keras cache).

    Raises:
        DataUnavailableError: no MNIST source is reachable.
    """
    from training.data import load_mnist

    mnist = load_mnist(data=data, settings=settings)
    images = mnist.test_images[:count].astype(np.float32) / 255.0
    return images, f"{mnist.source} (first {len(images)} test images)"
