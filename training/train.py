"""Training one of the article's autoencoders: the Python API behind ``aeq train``.

Imports Keras (TensorFlow backend) at module level; import this module lazily
(``training.commands`` does).

Example, without the CLI::

    from pathlib import Path
    from training.data import load_mnist
    from training.recipe import recipe
    from training.train import train_model

    record = train_model("conv", recipe("default", seed=1), load_mnist(), Path("trained"))
    record.test_mse, record.collapsed  # also in trained/conv/record.json beside model.keras

``train_model`` seeds everything (same seed + same data + same CPU kernel path = same weights;
the record names the path), holds out a validation split, trains with the recipe's loss,
schedule and early stopping (the best weights are kept), measures the kept model on the whole
test set, decides whether it collapsed, and writes ``<out_dir>/<name>/model.keras`` and
``record.json`` atomically (``training.record``).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from aeq.core.catalog import ModelSpec, model_spec
from training import architectures, batches, metrics
from training.data import MnistData
from training.recipe import TrainingConfig
from training.record import TrainingRecord, write_trained
from training.tensorflow_logs import kernel_path

PREDICT_BATCH_SIZE = 500
# The sigmoid's starting point for the logit_mean bias is kept off 0 and 1.
BIAS_CLIP = 1e-3


def train_model(
    name: str,
    config: TrainingConfig,
    data: MnistData,
    out_dir: Path,
    verbose: int = 2,
    model_name: str | None = None,
) -> TrainingRecord:
    """Train architecture ``name`` with ``config`` on ``data``; write and return its record.

    Args:
        name: an architecture of ``aeq.core.catalog.MODELS``.
        config: the hyperparameters (``training.recipe.recipe(...)``).
        data: MNIST (``training.data.load_mnist``).
        out_dir: the model goes to ``out_dir/<model_name>/`` (``model.keras`` + ``record.json``).
        verbose: Keras' fit verbosity (2 = one line per epoch, 0 = silent).
        model_name: the name it is exported under (default: the architecture's, ``name``).

    Raises:
        ModelNotFoundError: unknown model name.
        ValueError: too few images for the validation split.
    """
    spec = model_spec(name)
    started = time.monotonic()
    seed_everything(config.seed)
    noise = config.noise_factor if spec.noisy_input else 0.0
    arrays = batches.split(data, spec, config.validation_fraction, config.train_limit, noise)
    model, start_history = best_start(name, spec, config, arrays, verbose)
    early_stopping, callbacks = make_callbacks(config)
    first_epoch = len(start_history.get("loss", []))
    history = _fit(model, spec, config, arrays, callbacks, verbose, first_epoch)
    keys = start_history | history
    history = {key: start_history.get(key, []) + history.get(key, []) for key in keys}
    if first_epoch >= config.epochs:  # the starts used every epoch: no early stopping ran
        early_stopping = None
    record = make_record(spec, config, data, arrays, model, history, early_stopping, started)
    record = replace(record, name=model_name or name)
    write_trained(out_dir / record.name, model.save, record)
    return record


def best_start(
    name: str, spec: ModelSpec, config: TrainingConfig, arrays: batches.Split, verbose: int
) -> tuple[keras.Model, dict[str, list[Any]]]:
    """The compiled model to train on, and the history of the epochs it has had already.

    With ``start_trials`` > 1, each start trains ``start_trial_epochs`` epochs of the recipe's
    schedule (the first with the seed's own weights, the others reseeded from it) and the one
    with the lowest validation loss is kept: a start whose ReLUs died early is left behind.
    """
    steps_per_epoch = math.ceil(len(arrays.train) / config.batch_size)
    if config.start_trials == 1:
        return compile_model(name, config, arrays.train, steps_per_epoch), {}
    trial_epochs = min(config.start_trial_epochs, config.epochs)
    starts = []
    for trial in range(config.start_trials):
        if trial > 0:
            keras.utils.set_random_seed(trial_seed(config.seed, trial))
        model = compile_model(name, config, arrays.train, steps_per_epoch)
        history = _fit(model, spec, config, arrays, [], verbose, 0, trial_epochs)
        starts.append((min(history["val_loss"]), trial, model, history))
    _, _, model, history = min(starts, key=lambda start: start[:2])
    return model, history


def trial_seed(seed: int, trial: int) -> int:
    """The seed of start ``trial`` (> 0) of a run seeded ``seed``: distinct for every pair."""
    return int(np.random.SeedSequence([seed, trial]).generate_state(1)[0])


def _fit(
    model: keras.Model,
    spec: ModelSpec,
    config: TrainingConfig,
    arrays: batches.Split,
    callbacks: list[keras.callbacks.Callback],
    verbose: int,
    first_epoch: int = 0,
    epochs: int | None = None,
) -> dict[str, list[Any]]:
    """Run ``model.fit`` from ``first_epoch`` to ``epochs`` (the recipe's); return the history."""
    last_epoch = config.epochs if epochs is None else epochs
    if first_epoch >= last_epoch:
        return {}
    inputs, targets = training_inputs(spec, config, arrays)
    return model.fit(
        inputs,
        targets,
        validation_data=(arrays.validation_inputs, arrays.validation_targets),
        initial_epoch=first_epoch,
        epochs=last_epoch,
        callbacks=callbacks,
        verbose=verbose,
        **({} if spec.noisy_input else {"batch_size": config.batch_size, "shuffle": True}),
    ).history


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and the backend, and make TensorFlow's ops deterministic."""
    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def compile_model(
    name: str, config: TrainingConfig, train: np.ndarray, steps_per_epoch: int
) -> keras.Model:
    """Build the article's model with the recipe's output bias, optimiser and loss."""
    model = architectures.build(name, output_bias=output_bias(config, train))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate(config, steps_per_epoch)),
        loss=config.loss,
        metrics=["mse"],
    )
    return model


def learning_rate(config: TrainingConfig, steps_per_epoch: int) -> Any:
    """A constant (also the start of ``plateau``) or a cosine decay over every step (after a
    linear warmup of ``warmup_epochs``, at most all epochs but one)."""
    if config.schedule != "cosine":
        return config.learning_rate
    alpha = config.min_learning_rate / config.learning_rate
    warmup_epochs = min(config.warmup_epochs, config.epochs - 1)
    if warmup_epochs == 0:
        decay_steps = config.epochs * steps_per_epoch
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps, alpha)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=(config.epochs - warmup_epochs) * steps_per_epoch,
        alpha=alpha,
        warmup_target=config.learning_rate,
        warmup_steps=warmup_epochs * steps_per_epoch,
    )


def output_bias(config: TrainingConfig, train: np.ndarray) -> Any:
    """``zeros``, or a constant that makes the sigmoid output start at the mean pixel."""
    if config.output_bias == "zeros":
        return "zeros"
    mean = float(np.clip(train.mean(), BIAS_CLIP, 1 - BIAS_CLIP))
    return keras.initializers.Constant(math.log(mean / (1 - mean)))


def make_callbacks(
    config: TrainingConfig,
) -> tuple[keras.callbacks.EarlyStopping | None, list[keras.callbacks.Callback]]:
    """The recipe's schedule and early stopping (plus a stop on NaN losses)."""
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN()]
    if config.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=config.reduce_lr_factor,
                patience=config.reduce_lr_patience,
                min_lr=config.min_learning_rate,
            )
        )
    early_stopping = None
    if config.early_stopping_patience is not None:
        early_stopping = keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=config.early_stopping_patience,
            restore_best_weights=True,
        )
        callbacks.append(early_stopping)
    return early_stopping, callbacks


def training_inputs(
    spec: ModelSpec, config: TrainingConfig, arrays: batches.Split
) -> tuple[Any, Any]:
    """``fit``'s x and y: clean images twice, or freshly noised batches (y inside) per epoch."""
    if spec.noisy_input:
        noisy = batches.noisy_batches(
            arrays.train, config.batch_size, config.noise_factor, config.seed
        )
        return noisy, None
    return arrays.train, arrays.train


def make_record(
    spec: ModelSpec,
    config: TrainingConfig,
    data: MnistData,
    arrays: batches.Split,
    model: keras.Model,
    history: dict[str, list[Any]],
    early_stopping: keras.callbacks.EarlyStopping | None,
    started: float,
) -> TrainingRecord:
    """Measure the kept model and assemble its training record."""
    epochs_run = len(history["loss"])
    best_epoch = epochs_run if early_stopping is None else early_stopping.best_epoch + 1
    return TrainingRecord(
        model=spec.name,
        recipe={"name": config.recipe, **_hyperparameters(config)},
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        stopped_early=early_stopping is not None and early_stopping.stopped_epoch > 0,
        final_train_loss=float(history["loss"][-1]),
        final_val_loss=float(history["val_loss"][-1]),
        best_val_loss=float(history["val_loss"][best_epoch - 1]),
        **measure(spec, config, arrays, model),
        data_source=data.source,
        data_path=data.path,
        data_fingerprint=data.fingerprint,
        train_images=len(arrays.train),
        validation_images=len(arrays.validation_targets),
        test_images=len(arrays.test_targets),
        seed=config.seed,
        duration_s=round(time.monotonic() - started, 2),
        libraries=library_versions(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        history={key: [float(value) for value in values] for key, values in history.items()},
        kernels=kernel_path() if keras.backend.backend() == "tensorflow" else {},
    )


def measure(
    spec: ModelSpec, config: TrainingConfig, arrays: batches.Split, model: keras.Model
) -> dict[str, Any]:
    """The kept model's validation/test errors, collapse verdict and code sparsity."""
    validation_mse = metrics.mse(
        _predict(model, arrays.validation_inputs), arrays.validation_targets
    )
    baseline_mse = metrics.mean_image_baseline(arrays.train, arrays.validation_targets)
    test_mse = metrics.mse(_predict(model, arrays.test_inputs), arrays.test_targets)
    encoder = keras.Model(model.input, model.get_layer(architectures.CODE_LAYER).output)
    noisy_input_mse = metrics.mse(arrays.test_inputs, arrays.test_targets)
    return {
        "validation_mse": validation_mse,
        "baseline_mse": baseline_mse,
        "collapsed": metrics.is_collapsed(validation_mse, baseline_mse),
        "test_mse": test_mse,
        "test_psnr_db": metrics.psnr_db(test_mse),
        "test_input": f"noise {config.noise_factor}" if spec.noisy_input else "clean",
        "test_code_zero_fraction": metrics.zero_fraction(_predict(encoder, arrays.test_inputs)),
        "noisy_input_psnr_db": metrics.psnr_db(noisy_input_mse) if spec.noisy_input else None,
    }


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped the weights (and Keras' backend)."""
    versions = {"keras": keras.__version__, "numpy": np.__version__}
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    else:  # trained on another Keras backend (e.g. jax); name it instead
        versions[backend] = str(getattr(__import__(backend), "__version__", "unknown"))
    return versions


def _hyperparameters(config: TrainingConfig) -> dict[str, Any]:
    values = config.as_dict()
    values.pop("recipe")
    return values


def _predict(model: keras.Model, inputs: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(inputs, batch_size=PREDICT_BATCH_SIZE, verbose=0))
