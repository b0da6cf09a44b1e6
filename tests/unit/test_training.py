"""training.train / recipe / batches / metrics / record: short real training runs, determinism,
fresh denoising noise, collapse detection and the atomic model folder.

Real MNIST when ``AEQ_DATA_DIR`` is set (``make test`` sets it where the data is), otherwise
generated digit-like strokes. Runs are a few hundred images for an epoch or two: the whole file
takes well under a minute on two cores. Full-length training is measured in docs/TRAINING.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest

from aeq.core.catalog import MODELS
from aeq.core.errors import InputError
from aeq.core.settings import load_settings
from training import batches, metrics
from training.data import MnistData, load_mnist
from training.recipe import ARTICLE, DEFAULT, MODEL_OVERRIDES, RECIPES, TrainingConfig, recipe
from training.record import MODEL_FILE, RECORD_FILE, TrainingRecord, read_record, write_trained
from training.tensorflow_logs import ONEDNN_SWITCH
from training.train import learning_rate, train_model, trial_seed

AEQ = shutil.which("aeq", path=str(Path(sys.executable).parent)) or "aeq"

TRAIN_IMAGES = 400
TEST_IMAGES = 300
# The reproducibility check trains all five models twice in new processes: on few images.
REPRODUCIBILITY_IMAGES = 200
REQUIRED_RECORD_FIELDS = {
    "model", "recipe", "epochs_run", "stopped_early", "final_train_loss", "final_val_loss",
    "test_mse", "baseline_mse", "collapsed", "data_source", "train_images", "validation_images",
    "test_images", "seed", "duration_s", "libraries", "created_at", "test_psnr_db",
}  # fmt: skip


def generated_digits(count: int, seed: int) -> np.ndarray:
    """Digit-like uint8 images: thick strokes (a ring or bars) with random size and offset."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:28, 0:28]
    images = np.zeros((count, 28, 28), np.float32)
    for index in range(count):
        centre_r, centre_c = 14 + rng.normal(0, 1.5, 2)
        if index % 2 == 0:  # a "0": an ellipse ring
            radius_r, radius_c = rng.uniform(6, 9), rng.uniform(4, 7)
            distance = np.hypot((rows - centre_r) / radius_r, (cols - centre_c) / radius_c)
            images[index] = np.clip(1.6 - 6 * np.abs(distance - 1), 0, 1)
        else:  # a "1" or "7": a vertical bar with an optional top bar
            images[index] = np.clip(2.2 - np.abs(cols - centre_c), 0, 1) * (np.abs(rows - 14) < 9)
            if index % 4 == 3:
                images[index, 5:8, 8:21] = 1.0
    return (images * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mnist() -> MnistData:
    """A few hundred real MNIST images if AEQ_DATA_DIR is set, else generated ones."""
    settings = load_settings()
    if settings.data_dir is not None:
        real = load_mnist(None, settings)
        order = np.random.default_rng(0).permutation(len(real.train_images))[:TRAIN_IMAGES]
        return MnistData(
            real.train_images[order],
            real.train_labels[order],
            real.test_images[:TEST_IMAGES],
            real.test_labels[:TEST_IMAGES],
            real.source,
        )
    train, test = generated_digits(TRAIN_IMAGES, 1), generated_digits(TEST_IMAGES, 2)
    labels = np.zeros(TRAIN_IMAGES, np.uint8), np.zeros(TEST_IMAGES, np.uint8)
    return MnistData(train, labels[0], test, labels[1], "generated digit-like strokes")


def quick(name: str = "default", model: str | None = None, **overrides) -> TrainingConfig:
    """The recipe, cut to two epochs of small batches (enough steps on a few hundred images)."""
    quick_values = {"epochs": 2, "batch_size": 16, "learning_rate": 3e-3}
    return recipe(name, model=model, **(quick_values | overrides))


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_trains_and_its_loss_falls(name, mnist, tmp_path):
    record = train_model(name, quick(model=name), mnist, tmp_path, verbose=0)
    assert record.history["loss"][-1] < record.history["loss"][0]
    assert record.validation_mse < record.baseline_mse
    assert (tmp_path / name / MODEL_FILE).is_file()
    on_disk = json.loads((tmp_path / name / RECORD_FILE).read_text())
    assert REQUIRED_RECORD_FIELDS <= set(on_disk)
    assert on_disk["test_images"] == TEST_IMAGES
    assert on_disk["train_images"] + on_disk["validation_images"] == TRAIN_IMAGES
    assert on_disk["recipe"]["name"] == "default" and on_disk["recipe"]["batch_size"] == 16
    assert set(on_disk["libraries"]) == {"tensorflow", "keras", "numpy"}
    reloaded = keras.saving.load_model(tmp_path / name / MODEL_FILE)
    assert [layer.name for layer in reloaded.layers][0] == "image"
    if MODELS[name].noisy_input:
        assert record.test_input == "noise 0.5"
        assert record.test_psnr_db > record.noisy_input_psnr_db


def _weights(path) -> list[np.ndarray]:
    return keras.saving.load_model(path / "vanilla" / MODEL_FILE).get_weights()


def test_same_seed_same_weights_other_seed_other_weights(mnist, tmp_path):
    config = quick(epochs=1, train_limit=200)
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        train_model("vanilla", recipe("default", **(config.as_dict() | {"seed": seed})), mnist,
                    tmp_path / run, verbose=0)  # fmt: skip
    first, again, other = (
        _weights(tmp_path / "a"),
        _weights(tmp_path / "b"),
        _weights(tmp_path / "c"),
    )
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other, strict=True))


def _train_all_in_a_new_process(data: Path, out: Path, seed: int) -> None:
    """``aeq train all`` as a user runs it: its own process, TensorFlow set up by aeq."""
    args = ["all", "--epochs", "1", "--batch-size", "32", "--seed", str(seed)]
    result = subprocess.run(
        [AEQ, "train", *args, "--data", str(data), "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=900,
        env={key: value for key, value in os.environ.items() if key != ONEDNN_SWITCH},
    )  # fmt: skip
    # One epoch on 180 images may leave a model flagged as collapsed (exit 1): it is written anyway.
    assert result.returncode in (0, 1), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_same_seed_and_kernel_path_give_the_same_weights_for_every_architecture(mnist, tmp_path):
    data = tmp_path / "mnist.npz"
    images = REPRODUCIBILITY_IMAGES
    np.savez(data, x_train=mnist.train_images[:images], y_train=mnist.train_labels[:images],
             x_test=mnist.test_images[:images], y_test=mnist.test_labels[:images])  # fmt: skip
    for run in ("first", "again"):
        _train_all_in_a_new_process(data, tmp_path / run, seed=7)
    for name in MODELS:
        first, again = (read_record(tmp_path / run / name) for run in ("first", "again"))
        assert first.kernels == again.kernels
        assert first.kernels["onednn"] == "on"  # aeq turns oneDNN on wherever TensorFlow does not
        assert first.test_mse == again.test_mse, name
        assert first.data_path == str(data.resolve())  # where 'aeq export' checks parity
        assert first.data_fingerprint == again.data_fingerprint != ""
        weights = [_model_weights(tmp_path / run / name) for run in ("first", "again")]
        assert all(np.array_equal(x, y) for x, y in zip(*weights, strict=True)), name


def _model_weights(folder: Path) -> list[np.ndarray]:
    return keras.saving.load_model(folder / MODEL_FILE).get_weights()


def test_denoising_batches_draw_new_noise_every_epoch():
    clean = np.random.default_rng(0).random((10, 28, 28, 1), dtype=np.float32)
    dataset = batches.noisy_batches(clean, batch_size=4, noise_factor=0.5, seed=7)
    assert len(dataset) == 3
    first_inputs, first_targets = dataset[0]
    again_inputs, _ = dataset[0]
    np.testing.assert_array_equal(first_inputs, again_inputs)  # same epoch: reproducible
    assert not np.array_equal(first_inputs, first_targets)  # the inputs are noisy
    dataset.on_epoch_end()
    later_inputs, later_targets = dataset[0]
    assert not np.array_equal(first_inputs, later_inputs)
    # Targets stay clean images of the training set, only reshuffled.
    assert all(any(np.array_equal(t, c) for c in clean) for t in later_targets)


def test_keras_fit_draws_each_epochs_batches_with_new_noise(monkeypatch):
    clean = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    dataset = batches.noisy_batches(clean, batch_size=4, noise_factor=0.5, seed=0)
    seen: list[tuple[int, int]] = []
    original = type(dataset).__getitem__

    def recording(self, index):
        seen.append((self.epoch, index))
        return original(self, index)

    monkeypatch.setattr(type(dataset), "__getitem__", recording)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(1, 1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(dataset, epochs=3, verbose=0)
    # Every batch of every epoch was drawn under its own (epoch, index) noise seed.
    # (Keras may read one extra pass ahead, so at least one distinct epoch per fitted epoch.)
    epochs = sorted({epoch for epoch, _ in seen})
    assert len(epochs) >= 3
    assert all(sorted(i for e, i in seen if e == epoch) == [0, 1] for epoch in epochs)


def test_a_collapsed_model_is_flagged_and_written_as_collapsed(mnist, tmp_path):
    # A learning rate of 5 blows the sigmoid output into saturation within the first steps.
    config = recipe("article", epochs=1, learning_rate=5.0, train_limit=200)
    record = train_model("vanilla", config, mnist, tmp_path, verbose=0)
    assert record.collapsed
    assert record.validation_mse > metrics.COLLAPSE_RATIO * record.baseline_mse
    assert read_record(tmp_path / "vanilla").collapsed is True


@pytest.mark.parametrize(
    ("validation_mse", "collapsed"),
    [(0.1125, True), (0.0675, True), (0.062, True), (0.05, False), (0.01, False), (np.nan, True)],
)
def test_collapse_threshold(validation_mse, collapsed):
    assert metrics.is_collapsed(validation_mse, baseline_mse=0.0675) is collapsed


def test_metrics_on_known_values():
    targets = np.zeros((2, 4), np.float32)
    assert metrics.mse(targets + 0.1, targets) == pytest.approx(0.01)
    assert metrics.psnr_db(0.01) == pytest.approx(20.0)
    assert metrics.zero_fraction(np.array([0.0, 0.0, 1.0, 2.0])) == 0.5
    train = np.array([[0.0, 1.0], [1.0, 1.0]])
    assert metrics.mean_image_baseline(train, np.array([[0.5, 1.0]])) == 0.0


def test_pca_with_every_component_reconstructs_exactly():
    images = np.random.default_rng(0).random((20, 6))
    assert metrics.pca_mse(images, images, components=6) == pytest.approx(0.0, abs=1e-20)
    assert metrics.pca_mse(images, images, components=2) > 0.01


def test_split_holds_out_validation_from_a_fixed_order(mnist):
    spec = MODELS["conv"]
    first = batches.split(mnist, spec, 0.1, train_limit=100)
    again = batches.split(mnist, spec, 0.1, train_limit=100)
    assert first.train.shape == (90, 28, 28, 1) and first.validation_targets.shape[0] == 10
    np.testing.assert_array_equal(first.validation_targets, again.validation_targets)
    assert first.train.dtype == np.float32 and 0 <= first.train.min() and first.train.max() <= 1
    noisy = batches.split(mnist, spec, 0.1, train_limit=100, noise_factor=0.5)
    assert not np.array_equal(noisy.test_inputs, noisy.test_targets)
    np.testing.assert_array_equal(noisy.test_targets, first.test_targets)


def test_recipes():
    assert set(RECIPES) == {"article", "default"}
    assert (ARTICLE.loss, ARTICLE.output_bias, ARTICLE.early_stopping_patience) == (
        "mse", "zeros", None,
    )  # fmt: skip
    assert DEFAULT.early_stopping_patience is not None
    assert recipe("default", epochs=3, seed=None).epochs == 3
    for bad in ({"batch_size": 0}, {"loss": "hinge"}, {"learning_rate": -1.0}, {"colour": 1}):
        with pytest.raises(ValueError):
            recipe("default", **bad)
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe("best")


def test_per_model_departures_apply_and_options_override_them():
    for overrides in MODEL_OVERRIDES.values():
        assert set(overrides) <= set(MODELS)
    conv = recipe("default", model="conv")
    assert conv.batch_size != DEFAULT.batch_size
    assert recipe("default", model="conv", batch_size=8).batch_size == 8
    assert recipe("default", model="sparse").loss == "mse"
    assert recipe("article", model="conv") == ARTICLE


def test_warmup_rises_from_zero_to_the_rate_then_decays():
    config = recipe("default", model="vanilla", epochs=10, warmup_epochs=2)
    schedule = learning_rate(config, steps_per_epoch=5)
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert rates[0] == 0.0
    assert rates[1] == pytest.approx(config.learning_rate / 2)
    assert rates[2] == pytest.approx(config.learning_rate)
    assert rates[2] > rates[3] > rates[4] >= config.min_learning_rate * 0.999
    without_warmup = learning_rate(recipe("default", epochs=10), steps_per_epoch=5)
    assert float(without_warmup(0)) == pytest.approx(1e-3)


def test_best_of_several_starts_keeps_the_lowest_validation_loss_and_counts_its_epochs(
    mnist, tmp_path
):
    config = quick(model="vanilla", epochs=3, start_trials=3, start_trial_epochs=1)
    record = train_model("vanilla", config, mnist, tmp_path, verbose=0)
    assert record.epochs_run == 3 and len(record.history["val_loss"]) == 3
    assert trial_seed(0, 1) != trial_seed(0, 2) != trial_seed(1, 1)
    starts = []
    for trial in range(3):  # each start as a plain run of its own seed: the same first epoch
        seeded = quick(model="vanilla", epochs=3, seed=0 if trial == 0 else trial_seed(0, trial))
        alone = train_model("vanilla", seeded, mnist, tmp_path / str(trial), verbose=0)
        starts.append(alone.history["val_loss"][0])
    assert record.history["val_loss"][0] == pytest.approx(min(starts), rel=1e-5)
    # Starts as long as the whole run: the best start is the result, no error.
    whole = train_model("vanilla", replace(config, start_trial_epochs=3), mnist, tmp_path / "w",
                        verbose=0)  # fmt: skip
    assert whole.epochs_run == 3 and whole.best_epoch == 3


def _record(**changes) -> TrainingRecord:
    values = dict(
        model="vanilla", recipe={"name": "default"}, epochs_run=1, best_epoch=1,
        stopped_early=False, final_train_loss=0.1, final_val_loss=0.1, best_val_loss=0.1,
        validation_mse=0.01, baseline_mse=0.07, collapsed=False, test_mse=0.01,
        test_psnr_db=20.0, test_input="clean", test_code_zero_fraction=0.1, data_source="x",
        train_images=1, validation_images=1, test_images=1, seed=0, duration_s=1.0,
        libraries={}, created_at="2025-01-01T00:00:00+00:00",
    )  # fmt: skip
    return TrainingRecord(**(values | changes))


def test_write_trained_replaces_atomically_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "vanilla"
    write_trained(target, lambda path: path.write_bytes(b"one"), _record(test_mse=0.5))
    assert read_record(target).test_mse == 0.5

    def crash(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_trained(target, crash, _record(test_mse=0.25))
    assert (target / MODEL_FILE).read_bytes() == b"one"
    assert read_record(target).test_mse == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vanilla"]

    write_trained(target, lambda path: path.write_bytes(b"two"), _record(test_mse=0.25))
    assert (target / MODEL_FILE).read_bytes() == b"two" and read_record(target).test_mse == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vanilla"]


def test_record_json_round_trip():
    record = _record(history={"loss": [0.3, 0.2]})
    assert TrainingRecord.from_json(record.to_json()) == record


def test_a_record_that_is_not_a_json_object_is_one_input_error_for_training_and_export(tmp_path):
    """Both readers of record.json go through training.record: a JSON list was an AttributeError
    traceback from read_record."""
    from export.trained import find_trained

    folder = tmp_path / "vanilla"
    folder.mkdir()
    (folder / MODEL_FILE).write_bytes(b"model")
    (folder / RECORD_FILE).write_text("[1, 2]")
    with pytest.raises(InputError, match="record.json is not a training record"):
        read_record(folder)
    with pytest.raises(InputError, match="record.json is not a training record"):
        find_trained(tmp_path, "vanilla")


def test_record_json_is_strict_even_for_a_nan_loss():
    record = _record(test_mse=float("nan"), history={"loss": [0.3, float("inf")]})
    text = record.to_json()
    parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-JSON {name}"))
    assert parsed["test_mse"] is None and parsed["history"]["loss"] == [0.3, None]
