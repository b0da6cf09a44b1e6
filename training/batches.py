"""Turning MNIST into what a model trains on: float arrays split into train/validation/test, and
freshly noised batches for the denoising model.

The training images are put in one fixed order (``DATA_ORDER_SEED``, independent of the training
seed) before the validation split and ``train_limit`` are applied: the 5k subset is stored sorted
by label, so "the first N" would be all zeros, and a fixed order means every seed is validated on
the same images. Keras imports stay inside ``NoisyBatches`` so the array helpers work without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from aeq.core.catalog import ModelSpec
from aeq.core.noise import add_noise
from training.data import MnistData

DATA_ORDER_SEED = 20_240_101
# The validation and test inputs of the denoising model are noised once, with fixed seeds, so
# every run and every seed is measured on the same noisy images.
VALIDATION_NOISE_SEED = 1
TEST_NOISE_SEED = 2
PIXEL_MAX = 255.0


@dataclass(frozen=True)
class Split:
    """Float32 images in [0, 1], shaped for one model; inputs are noisy for the denoising model.

    Attributes:
        train: clean training images (the denoising model noises them per epoch).
        validation_inputs / validation_targets: held out from the training images.
        test_inputs / test_targets: the whole test set.
    """

    train: np.ndarray
    validation_inputs: np.ndarray
    validation_targets: np.ndarray
    test_inputs: np.ndarray
    test_targets: np.ndarray


def to_float(images: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 in [0, 1] shaped ``(N, *spec.input_dims)``."""
    return (images.astype(np.float32) / PIXEL_MAX).reshape((len(images), *spec.input_dims))


def split(
    data: MnistData,
    spec: ModelSpec,
    validation_fraction: float,
    train_limit: int | None = None,
    noise_factor: float = 0.0,
) -> Split:
    """Order, limit and split the training images; noise validation/test inputs if asked.

    Raises:
        ValueError: too few images to keep at least one for training and one for validation.
    """
    order = np.random.default_rng(DATA_ORDER_SEED).permutation(len(data.train_images))
    if train_limit is not None:
        order = order[:train_limit]
    images = to_float(data.train_images[order], spec)
    validation_count = max(1, round(len(images) * validation_fraction))
    if len(images) - validation_count < 1:
        raise ValueError(f"{len(images)} training images are too few to hold out a validation set")
    validation, train = images[:validation_count], images[validation_count:]
    test = to_float(data.test_images, spec)
    return Split(
        train=train,
        validation_inputs=_noisy(validation, noise_factor, VALIDATION_NOISE_SEED),
        validation_targets=validation,
        test_inputs=_noisy(test, noise_factor, TEST_NOISE_SEED),
        test_targets=test,
    )


def _noisy(images: np.ndarray, noise_factor: float, seed: int) -> np.ndarray:
    if noise_factor == 0:
        return images
    return add_noise(images, np.random.default_rng(seed), noise_factor)


def noisy_batches(
    images: np.ndarray, batch_size: int, noise_factor: float, seed: int, **kwargs: Any
) -> Any:
    """A ``keras.utils.PyDataset`` of (noisy, clean) batches, reshuffled and re-noised per epoch.

    Each batch's noise comes from a generator seeded by ``(seed, epoch, batch index)``, so the
    noise differs every epoch yet does not depend on the order Keras asks for batches in.
    """
    import keras

    class NoisyBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(**kwargs)
            self.epoch = 0

        def __len__(self) -> int:
            return math.ceil(len(images) / batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            order = np.random.default_rng([seed, self.epoch]).permutation(len(images))
            clean = images[order[index * batch_size : (index + 1) * batch_size]]
            rng = np.random.default_rng([seed, self.epoch, index])
            return add_noise(clean, rng, noise_factor), clean

        def on_epoch_end(self) -> None:
            self.epoch += 1

    return NoisyBatches()
