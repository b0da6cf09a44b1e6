"""One line per published model, for ``aeq models``: TensorFlow-free, reads ``config.json`` only."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from aeq.core.catalog import MODELS
from aeq.repository import ModelRepository, ModelVersion


@dataclass(frozen=True)
class ModelSummary:
    """What ``aeq models`` shows about one model (figures are the latest version's).

    Attributes:
        model: the model's name.
        architecture: which of the catalogue's architectures it is, ``onnx`` for a model made
            elsewhere (``aeq export --onnx``), ``None`` where its ``config.json`` predates the
            record of it and its name is not one of the five.
        versions: every published version, ascending.
        latest: the highest version.
        code_dim: length of the flat code vector (``None``: no encoder, no code).
        test_mse: test MSE from the training record (``None`` if not recorded, and for a model
            aeq did not train).
        trained_on: the training data, as the training record names it (``None`` if not
            recorded): a model trained on other data is told apart at a glance.
        source: for a model made elsewhere, each graph's file as given, with its sha256 and the
            tool that wrote it (``None`` for the models aeq trained).
        parity_max_abs_diff: largest parity difference over the three graphs.
        size_bytes: total size of the latest version's files.
        opset: ONNX opset of the graphs.
        published_at: when the latest version was published (ISO 8601, UTC).
        path: the latest version's folder.
    """

    model: str
    architecture: str | None
    versions: list[int]
    latest: int
    code_dim: int | None
    test_mse: float | None
    trained_on: str | None
    source: dict[str, Any] | None
    parity_max_abs_diff: float | None
    size_bytes: int
    opset: int | None
    published_at: str | None
    path: str

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``aeq models --json``."""
        return asdict(self)


def summarize(repository: ModelRepository) -> list[ModelSummary]:
    """Summaries of every published model, sorted by name (empty for an empty repository)."""
    return [_summary(repository, repository.get(model)) for model in repository.models()]


def _summary(repository: ModelRepository, latest: ModelVersion) -> ModelSummary:
    config = latest.config
    training = config.get("training", {})
    test_mse = training.get("test_mse")
    diffs = [
        float(entry["parity_max_abs_diff"])
        for entry in config["graphs"].values()
        if entry.get("parity_max_abs_diff") is not None
    ]
    return ModelSummary(
        model=latest.model,
        architecture=config.get("architecture")
        or (latest.model if latest.model in MODELS else None),
        versions=repository.versions(latest.model),
        latest=latest.version,
        code_dim=latest.code_dim or None,
        test_mse=None if test_mse is None else float(test_mse),
        trained_on=training.get("data_source"),
        source=config.get("source"),
        parity_max_abs_diff=max(diffs) if diffs else None,
        size_bytes=sum(entry.stat().st_size for entry in latest.path.iterdir() if entry.is_file()),
        opset=config.get("opset"),
        published_at=config.get("published_at"),
        path=str(latest.path),
    )
