"""The trained-model folder: what ``aeq train`` writes and ``aeq export`` reads.

A trained model lives in ``<out>/<model>/`` as ``model.keras`` plus ``record.json`` (plain JSON,
``TrainingRecord.to_json``). ``read_record`` reads the record back typed; ``read_record_data``
reads it as written, which is how export reads it, without TensorFlow. The folder is assembled
under a temporary name and renamed into place, so a crash never leaves a model without its record
or half a file. A collapsed model is written too (its record says ``"collapsed": true``, and
export refuses it), so the failure can be inspected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from aeq.core.durable import staged_folder
from aeq.core.errors import InputError

MODEL_FILE = "model.keras"
RECORD_FILE = "record.json"


@dataclass(frozen=True)
class TrainingRecord:
    """Everything known about one trained model (the contents of ``record.json``).

    Attributes:
        model: the architecture, a catalogue name (``vanilla`` ... ``denoising``).
        recipe: ``{"name": recipe name, <every hyperparameter of TrainingConfig>}``.
        epochs_run: epochs actually run; ``stopped_early`` is true when early stopping ended them.
        best_epoch: 1-based epoch whose weights were kept (the last one without early stopping).
        final_train_loss / final_val_loss: the training loss (``recipe.loss``) of the last
            epoch run; ``best_val_loss`` is the kept epoch's.
        validation_mse: MSE of the kept model on the validation images.
        baseline_mse: validation MSE of predicting the mean training image.
        collapsed: ``validation_mse`` above ``metrics.COLLAPSE_RATIO`` x ``baseline_mse``.
        test_mse: MSE on the whole test set; for the denoising model, from noisy inputs
            (``test_input``) against the clean images.
        test_psnr_db: PSNR of ``test_mse`` (the denoising model's is on noise-0.5 inputs).
        test_code_zero_fraction: share of exact zeros in the code activations on the test set.
        history: per-epoch ``loss``/``val_loss``/``mse``/``val_mse``/``learning_rate`` lists.
        kernels: the CPU kernel path (``training.tensorflow_logs.kernel_path``): oneDNN on or
            off, its instruction-set cap, the CPU. Same seed + same path = same weights.
    """

    model: str
    recipe: dict[str, Any]
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    final_train_loss: float
    final_val_loss: float
    best_val_loss: float
    validation_mse: float
    baseline_mse: float
    collapsed: bool
    test_mse: float
    test_psnr_db: float
    test_input: str
    test_code_zero_fraction: float
    data_source: str
    train_images: int
    validation_images: int
    test_images: int
    seed: int
    duration_s: float
    libraries: dict[str, str]
    created_at: str
    noisy_input_psnr_db: float | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    kernels: dict[str, str] = field(default_factory=dict)
    # Where the training data was read from ("" for a download; older records lack it).
    data_path: str = ""
    # Which data it was (training.data.MnistData.fingerprint; "" in older records).
    data_fingerprint: str = ""
    # The name it is exported under ('aeq train ARCH --name NAME'); "" in older records: ``model``,
    # the architecture's own.
    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:  # frozen: the default is set the one way a frozen dataclass allows
            object.__setattr__(self, "name", self.model)

    def to_json(self) -> str:
        """The record as indented, strict JSON text (a NaN or infinite number becomes null)."""
        return json.dumps(_finite(asdict(self)), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = "record") -> TrainingRecord:
        """Parse ``record.json`` text; unknown keys are ignored, missing ones are an error."""
        return cls.from_dict(_json_object(text, origin), origin)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], origin: str = "record") -> TrainingRecord:
        """The record from ``record.json``'s parsed content (see ``from_json``)."""
        names = {item.name for item in fields(cls)}
        try:
            return cls(**{key: value for key, value in raw.items() if key in names})
        except TypeError as error:
            raise InputError(f"{origin} is not a training record: {error}") from None


def _finite(value: Any) -> Any:
    """``value`` with every NaN/infinite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _json_object(text: str, origin: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{origin} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{origin} is not a training record: not a JSON object")
    return raw


def read_record(model_dir: Path) -> TrainingRecord:
    """Read ``<model_dir>/record.json`` as a ``TrainingRecord`` (every field required)."""
    return TrainingRecord.from_dict(read_record_data(model_dir), str(model_dir / RECORD_FILE))


def read_record_data(model_dir: Path) -> dict[str, Any]:
    """Read ``<model_dir>/record.json`` as the plain JSON object it holds, every key kept.

    Export reads records this way: it records them whole in ``config.json`` and needs only the
    ``collapsed`` verdict, so a record of an older (or newer) layout still exports.
    """
    path = model_dir / RECORD_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot read the training record {path}: {error}") from None
    return _json_object(text, str(path))


def write_trained(
    model_dir: Path, save_model: Callable[[Path], None], record: TrainingRecord
) -> None:
    """Write ``model.keras`` (via ``save_model(path)``) and ``record.json`` into ``model_dir``
    atomically: both appear together, replacing what was there, or nothing changes.
    """
    with staged_folder(model_dir) as staging:
        save_model(staging / MODEL_FILE)
        (staging / RECORD_FILE).write_text(record.to_json(), encoding="utf-8")
