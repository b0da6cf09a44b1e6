"""Export one trained model end to end: load, refuse if collapsed, convert, check parity, publish.

    <training_dir>/<model>/model.keras + record.json      (written by ``aeq train``)
        -> autoencoder.onnx, encoder.onnx, decoder.onnx   (``export.convert``, in a temp folder)
        -> parity gate on held-out images                 (``export.validate``)
        -> <repository>/<model>/<next version>/           (``ModelRepository.publish``, atomic)

Imports TensorFlow (through ``export.convert``); the CLI imports this module inside ``aeq export``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from aeq.core.catalog import PARITY_ATOL, PIXELS_PER_IMAGE, Graph, ModelSpec
from aeq.core.errors import InputError
from aeq.core.noise import add_noise
from aeq.repository import ModelRepository, ModelVersion
from export.convert import ONNX_OPSET, ConvertedGraph, convert_model, library_versions, serialized
from export.publishing import graph_file, publish
from export.trained import TrainedModel, find_trained, refuse_collapsed
from export.validate import GraphParity, check_parity, run_keras

# Models trained on noisy input are checked on noisy images too: the second half of the parity
# images gets noise from this fixed seed, so a re-export checks the same inputs.
PARITY_NOISE_SEED = 0


@dataclass(frozen=True)
class ExportResult:
    """What one export published and measured."""

    version: ModelVersion
    parity: Mapping[Graph, GraphParity]
    sizes: Mapping[str, int]


def load_keras(trained: TrainedModel) -> keras.Model:
    """Load the trained Keras model and check it is the architecture its name says."""
    try:
        model = keras.models.load_model(trained.model_file, compile=False)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load {trained.model_file}: {error}") from None
    shape = tuple(model.input_shape[1:])
    if shape != trained.spec.input_dims:
        raise InputError(
            f"{trained.model_file} takes inputs of shape {shape}, "
            f"but {trained.spec.name} takes {trained.spec.input_dims}"
        )
    return model


def parity_inputs(spec: ModelSpec, images: np.ndarray, encoder: Any) -> dict[Graph, np.ndarray]:
    """Each graph's parity inputs: the images (half noisy for noisy-input models) and their codes.

    Args:
        spec: the model's catalogue entry.
        images: float32 images in [0, 1], ``PIXELS_PER_IMAGE`` values each, any shape.
        encoder: the Keras encoder whose codes the decoder is checked on.
    """
    flat = np.asarray(images, dtype=np.float32).reshape(-1, PIXELS_PER_IMAGE)
    if spec.noisy_input:
        half = len(flat) // 2
        noisy = add_noise(flat[half:], np.random.default_rng(PARITY_NOISE_SEED))
        flat = np.concatenate([flat[:half], noisy])
    shaped = flat.reshape(len(flat), *spec.input_dims)
    codes = run_keras(encoder, shaped).astype(np.float32)
    return {Graph.AUTOENCODER: shaped, Graph.ENCODER: shaped, Graph.DECODER: codes}


def check_images(images: np.ndarray) -> np.ndarray:
    """Validate parity images: float values in [0, 1], whole images, at least one."""
    array = np.asarray(images)
    if array.size == 0 or array.size % PIXELS_PER_IMAGE:
        raise InputError(f"parity images must be whole 28x28 images, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating) or array.min() < 0 or array.max() > 1:
        raise InputError("parity images must be floats in [0, 1] (divide uint8 pixels by 255)")
    return array.astype(np.float32).reshape(-1, PIXELS_PER_IMAGE)


def export_model(
    name: str,
    training_dir: Path,
    repository: ModelRepository,
    images: np.ndarray,
    data_source: str,
    tolerance: float = PARITY_ATOL,
) -> ExportResult:
    """Export one trained model: convert its three graphs, gate them on parity, publish.

    Args:
        name: a catalogued model name.
        training_dir: the folder ``aeq train`` wrote (``<training_dir>/<name>/model.keras``).
        repository: where to publish.
        images: held-out parity images, floats in [0, 1] (e.g. MNIST test images / 255).
        data_source: where ``images`` came from, recorded in ``config.json``.
        tolerance: largest accepted |ONNX Runtime - Keras| on any output.

    Returns:
        The published version, the parity measurements and the published file sizes.

    Raises:
        ModelNotFoundError, InputError: no usable trained model or record.
        CollapsedModelError: the record says training collapsed.
        ParityError: a graph failed the parity gate; nothing was published.
    """
    trained = find_trained(training_dir, name)
    refuse_collapsed(trained)
    flat_images = check_images(images)
    graphs = convert_model(load_keras(trained), trained.spec)
    inputs = parity_inputs(trained.spec, flat_images, graphs[Graph.ENCODER].keras_model)
    onnx_bytes = serialized(graphs)
    parity = check_parity(
        {graph: converted.keras_model for graph, converted in graphs.items()},
        onnx_bytes,
        inputs,
        tolerance,
        label=name,
    )
    config = {
        **version_config(trained.spec, graphs, parity),
        "parity": {"tolerance": tolerance, "images": len(flat_images), "data_source": data_source},
        "training": dict(trained.record),
    }
    version = publish(repository, name, onnx_bytes, config)
    sizes = {file: (version.path / file).stat().st_size for file in version.config["sha256"]}
    return ExportResult(version, parity, sizes)


def version_config(
    spec: ModelSpec,
    graphs: Mapping[Graph, ConvertedGraph],
    parity: Mapping[Graph, GraphParity] | None = None,
) -> dict[str, Any]:
    """What every published version's ``config.json`` holds, whoever converted it.

    Each graph's file and signature (and its parity error, where the gate ran), the model's
    dims, the opset and the library versions. Callers add what they alone know (the exporter its
    parity run and training record, the benchmark where its weights came from); the repository
    adds model, version, published_at and sha256.
    """
    return {
        "graphs": {
            graph.value: {
                "file": graph_file(graph),
                **converted.signature(),
                **({"parity_max_abs_diff": parity[graph].max_abs_diff} if parity else {}),
            }
            for graph, converted in graphs.items()
        },
        "architecture": spec.name,
        "code_dim": spec.code_dim,
        "code_dims": list(spec.code_dims),
        "input_dims": list(spec.input_dims),
        "noisy_input": spec.noisy_input,
        "opset": ONNX_OPSET,
        "libraries": library_versions(),
    }
