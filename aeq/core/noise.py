"""The article's corruption for the denoising autoencoder: additive Gaussian noise, clipped."""

from __future__ import annotations

import numpy as np

from aeq.core.catalog import NOISE_FACTOR


def add_noise(
    images: np.ndarray, rng: np.random.Generator, factor: float = NOISE_FACTOR
) -> np.ndarray:
    """Return ``clip(images + factor * N(0, 1), 0, 1)`` as float32.

    Args:
        images: float images in [0, 1] (any shape).
        rng: the generator to draw from, so callers control reproducibility.
        factor: standard deviation of the noise; the article uses 0.5.
    """
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(images.astype(np.float32) + factor * noise, 0.0, 1.0)
