"""The numbers a training run is judged by: MSE, PSNR, code sparsity, the mean-image baseline and
collapse. Numpy only, so anything that holds predictions can compute them.
"""

from __future__ import annotations

import math

import numpy as np

# A model whose validation MSE is above this share of the mean-image baseline's has learned next
# to nothing about its input: trained models here sit near 0.1-0.2 of the baseline, and a model
# whose sigmoid output starts at the mean pixel (the default recipe) and never learns ends just
# below 1.0, so a threshold of exactly 1.0 would miss that collapse.
COLLAPSE_RATIO = 0.9
PEAK_SIGNAL = 1.0


def mse(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Mean squared error over every pixel of every image."""
    difference = predictions.astype(np.float64) - targets.astype(np.float64)
    return float(np.mean(difference * difference))


def psnr_db(mean_squared_error: float) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1] (of the pooled MSE)."""
    if mean_squared_error <= 0:
        return math.inf
    return 10.0 * math.log10(PEAK_SIGNAL**2 / mean_squared_error)


def zero_fraction(codes: np.ndarray) -> float:
    """Share of code activations that are exactly zero."""
    return float(np.mean(codes == 0))


def mean_image_baseline(train: np.ndarray, targets: np.ndarray) -> float:
    """MSE of predicting the mean training image for every target (the do-nothing model)."""
    mean_image = train.mean(axis=0, keepdims=True, dtype=np.float64)
    return mse(np.broadcast_to(mean_image, targets.shape), targets)


def is_collapsed(validation_mse: float, baseline_mse: float) -> bool:
    """True when a model is no real improvement on the mean image (or its loss is not finite)."""
    if not math.isfinite(validation_mse):
        return True
    return validation_mse > COLLAPSE_RATIO * baseline_mse


def pca_mse(train: np.ndarray, test: np.ndarray, components: int) -> float:
    """Test MSE of PCA with ``components`` fitted on flattened ``train`` (the linear reference)."""
    flat_train = train.reshape(len(train), -1).astype(np.float64)
    flat_test = test.reshape(len(test), -1).astype(np.float64)
    mean = flat_train.mean(axis=0)
    _, _, right = np.linalg.svd(flat_train - mean, full_matrices=False)
    basis = right[:components]
    reconstruction = (flat_test - mean) @ basis.T @ basis + mean
    return mse(reconstruction, flat_test)
