"""Training recipes: every hyperparameter of a training run, in one frozen config object.

Two named recipes exist (``RECIPES``):

- ``article``: the article's own recipe, kept so anyone can reproduce it: adam (learning rate
  1e-3), mean squared error, 50 epochs, no schedule, no early stopping, output biases at zero.
  The article gives no ``fit`` call; batch size 256 follows the Keras blog code it is built on.
  On the 5k-image MNIST subset this recipe collapses the conv and denoising nets.
- ``default``: what measured best on that data (docs/TRAINING.md has the table and the reasons):
  binary cross-entropy, output bias at the logit of the mean training pixel, smaller batches,
  a cosine learning-rate decay, early stopping on the validation loss with the best weights
  kept, and a few per-model departures (``MODEL_OVERRIDES``).

``recipe("default", model="conv", epochs=3)`` returns the recipe tuned for a model with fields
replaced; ``TrainingConfig`` checks
its fields, so a bad ``--batch-size 0`` is a ``ValueError`` before any training starts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from aeq.core.catalog import NOISE_FACTOR

LOSSES = ("mse", "binary_crossentropy")
SCHEDULES = ("constant", "plateau", "cosine")
OUTPUT_BIASES = ("zeros", "logit_mean")
DEFAULT_RECIPE = "default"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class TrainingConfig:
    """Hyperparameters of one training run (the same for every model it trains).

    Attributes:
        recipe: name of the recipe these values started from (``article`` or ``default``).
        loss: ``mse`` or ``binary_crossentropy``; the record reports MSE either way.
        learning_rate: adam's initial learning rate.
        batch_size: images per gradient step.
        epochs: the most epochs to run (early stopping may end sooner).
        validation_fraction: share of the training images held out for validation.
        early_stopping_patience: epochs without a better validation loss before stopping and
            restoring the best weights; ``None`` runs every epoch and keeps the last weights.
        schedule: ``constant``; ``plateau``: multiply the learning rate by ``reduce_lr_factor``
            after ``reduce_lr_patience`` epochs without a better validation loss; ``cosine``:
            cosine decay over ``epochs`` down to ``min_learning_rate``.
        reduce_lr_patience: see ``plateau``.
        reduce_lr_factor: see ``plateau``.
        min_learning_rate: the floor of both schedules.
        output_bias: ``zeros`` (Keras' default) or ``logit_mean``: the sigmoid output starts at
            the mean training pixel instead of 0.5, so it never starts saturated.
        noise_factor: standard deviation of the denoising model's input noise.
        seed: seeds weights, shuffling and noise; same seed and data give the same weights on CPU.
        train_limit: use only this many training images (a fixed selection); ``None`` = all.
        warmup_epochs: the learning rate rises linearly from 0 over these first epochs (cosine
            schedule only), so fewer ReLUs die in the first large steps.
        start_trials: train this many starts (the seed's own and ``start_trials - 1`` derived
            from it) for ``start_trial_epochs`` epochs each and carry on with the one of lowest
            validation loss; 1 = one start, as plain training.
        start_trial_epochs: see ``start_trials``.
    """

    recipe: str
    loss: str
    learning_rate: float
    batch_size: int
    epochs: int
    validation_fraction: float = 0.1
    early_stopping_patience: int | None = None
    schedule: str = "constant"
    reduce_lr_patience: int = 3
    reduce_lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    output_bias: str = "zeros"
    noise_factor: float = NOISE_FACTOR
    seed: int = 0
    train_limit: int | None = None
    warmup_epochs: int = 0
    start_trials: int = 1
    start_trial_epochs: int = 5

    def __post_init__(self) -> None:
        _check(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
        _check(
            self.output_bias in OUTPUT_BIASES,
            f"output_bias must be one of {OUTPUT_BIASES}, got {self.output_bias!r}",
        )
        _check(
            self.schedule in SCHEDULES,
            f"schedule must be one of {SCHEDULES}, got {self.schedule!r}",
        )
        _check(self.batch_size > 0, f"batch size must be positive, got {self.batch_size}")
        _check(self.epochs > 0, f"epochs must be positive, got {self.epochs}")
        _check(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            f"learning rate must be positive, got {self.learning_rate}",
        )
        _check(
            0 < self.validation_fraction < 1,
            f"validation fraction must lie in (0, 1), got {self.validation_fraction}",
        )
        _check(
            self.train_limit is None or self.train_limit > 1,
            f"the training limit must be at least 2 images, got {self.train_limit}",
        )
        _check(self.seed >= 0, f"seed must be non-negative, got {self.seed}")
        _check(self.warmup_epochs >= 0, f"warmup epochs must be >= 0, got {self.warmup_epochs}")
        _check(self.start_trials > 0, "start_trials must be positive")
        _check(self.start_trial_epochs > 0, "start_trial_epochs must be positive")
        _check(self.reduce_lr_patience > 0, "reduce_lr_patience must be positive")
        _check(0 < self.reduce_lr_factor < 1, "reduce_lr_factor must lie in (0, 1)")
        patience = self.early_stopping_patience
        _check(patience is None or patience > 0, "early stopping patience must be positive or None")

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (for the training record)."""
        return asdict(self)


ARTICLE = TrainingConfig(
    recipe="article",
    loss="mse",
    learning_rate=1e-3,
    batch_size=256,
    epochs=50,
)

DEFAULT = TrainingConfig(
    recipe=DEFAULT_RECIPE,
    loss="binary_crossentropy",
    learning_rate=1e-3,
    batch_size=64,
    epochs=150,
    early_stopping_patience=20,
    schedule="cosine",
    output_bias="logit_mean",
)

RECIPES: dict[str, TrainingConfig] = {config.recipe: config for config in (ARTICLE, DEFAULT)}

# Where one model departs from its recipe's shared values (docs/TRAINING.md has the measurements):
# the small conv nets need more, smaller steps at a higher rate to get far within the time
# budget, and the sparse net trains on MSE, which keeps the article's L1 penalty strong enough
# relative to the reconstruction loss to leave a sparse code (binary cross-entropy's larger
# gradients drown it: ~14% zeros instead of ~32%).
# The conv net's validation loss stalls for 20+ epochs in mid-schedule on some seeds and CPU
# kernel paths while the cosine decay still has most of its gains ahead (seed 0 on an AVX2 CPU
# stopped at epoch 99 of 200 at 0.00996, above PCA-64): it runs its whole schedule and keeps its
# best epoch's weights (docs/TRAINING.md, "Spread"). Without more, its result moved with the seed
# (0.0089 to 0.0101 over seeds 0-4): 3 of 5 starts lost ReLUs for good in the first large steps.
# A 3-epoch warmup and the best of 3 starts (5 epochs each) narrowed that to 0.0090-0.0094
# (mean 0.0092 against 0.0096), for 10 more epochs of work.
CONV_PATIENCE = 200
MODEL_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "article": {},
    DEFAULT_RECIPE: {
        "conv": {
            "batch_size": 32,
            "learning_rate": 3e-3,
            "epochs": 200,
            "early_stopping_patience": CONV_PATIENCE,
            "warmup_epochs": 3,
            "start_trials": 3,
            "start_trial_epochs": 5,
        },
        "denoising": {"batch_size": 32, "learning_rate": 3e-3, "epochs": 90},
        "sparse": {"loss": "mse"},
    },
}


def recipe(
    name: str = DEFAULT_RECIPE, model: str | None = None, **overrides: Any
) -> TrainingConfig:
    """The named recipe, as tuned for ``model`` if given, with fields replaced.

    ``None`` values in ``overrides`` are ignored, so CLI options left out keep the recipe's.

    Raises:
        ValueError: unknown recipe name or field, or a value out of range.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    changes = MODEL_OVERRIDES[name].get(model or "", {}) | {
        key: value for key, value in overrides.items() if value is not None
    }
    try:
        return replace(RECIPES[name], **changes)
    except TypeError as error:
        raise ValueError(f"unknown recipe option: {error}") from None
