"""The models a benchmark runs: a Keras model and a published ONNX version of each.

By default every model is built untrained (seeded) and converted with the exporter's own
``export.convert``, then published into a scratch repository the workers read: speed does not
depend on the weights, and the Keras and ONNX engines then run exactly the same function. With
``--repository`` the ONNX graphs come from a real repository instead; the Keras side is then the
same architecture untrained (same speed, different outputs, so no parity is claimed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aeq.core.catalog import MODELS, ModelSpec
from aeq.repository import ModelRepository, ModelVersion

WEIGHTS_SEED = 0
UNTRAINED = "untrained (seed 0), converted in-process by export.convert"


@dataclass(frozen=True)
class BenchModel:
    """One model under test.

    Attributes:
        spec: the catalogue entry.
        keras_model: the Keras autoencoder (TensorFlow engines; None where only ONNX is run).
        version: the published ONNX version (ONNX Runtime engines and the workers).
        same_weights: Keras and ONNX hold the same weights (so their outputs must agree).
        weights: where the weights came from, for the report.
    """

    spec: ModelSpec
    keras_model: Any
    version: ModelVersion
    same_weights: bool
    weights: str

    @property
    def name(self) -> str:
        return self.spec.name


def prepare_models(
    names: list[str], workdir: Path, repository: Path | None = None
) -> dict[str, BenchModel]:
    """Build (or load) every named model; publish untrained ones into ``workdir/repository``."""
    import keras

    from training.architectures import build

    keras.utils.set_random_seed(WEIGHTS_SEED)
    models = {}
    for name in names:
        spec = MODELS[name]
        autoencoder = build(name)
        if repository is None:
            version = publish_converted(autoencoder, spec, ModelRepository(workdir / "repository"))
            models[name] = BenchModel(spec, autoencoder, version, True, UNTRAINED)
        else:
            version = ModelRepository(repository).get(name)
            weights = f"ONNX: {version.label} from {repository}; Keras: same architecture untrained"
            models[name] = BenchModel(spec, autoencoder, version, False, weights)
    return models


def repository_models(root: Path) -> dict[str, BenchModel]:
    """The latest version of every catalogued model published in the repository at ``root``,
    with no Keras side: for measuring ONNX Runtime and the service alone, without TensorFlow."""
    repository = ModelRepository(root)
    models = {}
    for name in [name for name in repository.models() if name in MODELS]:
        version = repository.get(name)
        weights = f"ONNX: {version.label} from {root}"
        models[name] = BenchModel(MODELS[name], None, version, False, weights)
    return models


def publish_converted(
    autoencoder: Any, spec: ModelSpec, repository: ModelRepository
) -> ModelVersion:
    """Convert ``autoencoder``'s three graphs and publish them as the next version."""
    from export.convert import convert_model, serialized
    from export.exporter import version_config
    from export.publishing import publish

    graphs = convert_model(autoencoder, spec)
    config = {**version_config(spec, graphs), "benchmark": UNTRAINED}
    return publish(repository, spec.name, serialized(graphs), config)
