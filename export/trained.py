"""A trained model as ``aeq train`` leaves it, found and vetted without importing TensorFlow.

    <training_dir>/<model>/model.keras    the Keras model
                           record.json    the training record

The folder's layout and the record's reading are ``training.record``'s (training writes them);
this module adds what export asks of them.

The export command uses this to refuse a missing or collapsed model, or one trained on other data
than the published versions of its name, before it loads TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aeq.core.catalog import (
    FOREIGN_ARCHITECTURE,
    MODEL_NAME,
    MODELS,
    ModelSpec,
    check_model_name,
    model_spec,
)
from aeq.core.errors import CollapsedModelError, InputError, ModelNotFoundError, UsageError
from aeq.repository import ModelRepository
from training.record import MODEL_FILE, RECORD_FILE, read_record_data


@dataclass(frozen=True)
class TrainedModel:
    """A model as ``aeq train`` left it: the Keras file and its training record.

    Attributes:
        name: the name it is published under (its folder's; ``aeq train ARCH --name NAME``).
        spec: its architecture.
    """

    name: str
    spec: ModelSpec
    folder: Path
    record: Mapping[str, Any]

    @property
    def model_file(self) -> Path:
        """The saved Keras model."""
        return self.folder / MODEL_FILE


def trained_models(training_dir: Path) -> list[str]:
    """The models that have a ``model.keras`` under ``training_dir``: the catalogued ones in
    catalogue order, then those trained under names of their own, sorted."""
    folder = Path(training_dir)
    found = sorted(
        entry.name
        for entry in (folder.iterdir() if folder.is_dir() else [])
        if (entry / MODEL_FILE).is_file() and MODEL_NAME.fullmatch(entry.name)
    )
    return [name for name in MODELS if name in found] + [n for n in found if n not in MODELS]


def find_trained(training_dir: Path, name: str) -> TrainedModel:
    """Locate a trained model and read its record.

    Raises:
        UsageError: not a model name.
        ModelNotFoundError: no ``model.keras`` for it, or its record names no architecture.
        InputError: the record is missing, unreadable or lacks the ``collapsed`` verdict.
    """
    check_model_name(name)
    folder = Path(training_dir) / name
    if not (folder / MODEL_FILE).is_file():
        how = f"aeq train {name}" if name in MODELS else f"aeq train ARCHITECTURE --name {name}"
        raise ModelNotFoundError(
            f"no trained {name} model at {folder / MODEL_FILE}; run '{how}' "
            "or point --from / AEQ_TRAINING_DIR at the folder it wrote"
        )
    record = read_record_data(folder)
    spec = model_spec(str(record.get("model") or name))  # the architecture
    if not isinstance(record.get("collapsed"), bool):
        raise InputError(
            f"{folder / RECORD_FILE} has no 'collapsed' verdict; cannot tell whether {name} trained"
        )
    return TrainedModel(name, spec, folder, record)


def refuse_collapsed(trained: TrainedModel) -> None:
    """Raise ``CollapsedModelError`` if training reported the model as collapsed."""
    if trained.record["collapsed"]:
        mse = trained.record.get("test_mse")
        shown = f"{mse:.4g}" if isinstance(mse, int | float) else "not recorded"
        raise CollapsedModelError(
            f"{trained.name} collapsed in training (test MSE {shown}, no better than the "
            "mean image); retrain it before exporting, nothing published"
        )


def refuse_other_data(trained: TrainedModel, repository: ModelRepository) -> None:
    """Raise ``UsageError`` if ``repository``'s latest version of the model was trained on other
    data: a conv trained on Fashion-MNIST silently became conv@2, and the commands that take the
    latest version switched to it (records without a data fingerprint are not compared). An ONNX
    model made elsewhere ('aeq export --onnx') has no record: its data counts as other."""
    name = trained.name
    try:
        latest = repository.get(name)
    except ModelNotFoundError:  # nothing published under this name yet
        return
    if latest.config.get("architecture") == FOREIGN_ARCHITECTURE:
        raise UsageError(
            f"{latest.label} in {repository.root} is an ONNX model made elsewhere, this {name} "
            f"a {trained.spec.name} model aeq trained on {trained.record.get('data_source')}: "
            f"export it into another repository (--repository), or pass --other-data to publish "
            f"it as the next {name}"
        )
    before = latest.config.get("training", {})
    old, new = before.get("data_fingerprint"), trained.record.get("data_fingerprint")
    if old and new and old != new:
        raise UsageError(
            f"{latest.label} in {repository.root} was trained on {before.get('data_source')}, "
            f"this {name} on {trained.record.get('data_source')}: export it into another "
            f"repository (--repository), or pass --other-data to publish it as the next {name}"
        )
