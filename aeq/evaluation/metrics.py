"""The numbers the quality report is made of: reconstruction error, PSNR, SSIM and code sparsity.

Images are floats in [0, 1] (``DATA_RANGE``). PSNR is computed from the mean squared error over
every pixel of every image, ``10 * log10(DATA_RANGE**2 / MSE)`` (what scikit-image's
``peak_signal_noise_ratio`` gives for the whole stack), so the PSNR and MSE columns of a table
always agree. SSIM is scikit-image's ``structural_similarity`` (7x7 uniform window) per image,
averaged over the images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# Pixel values run from 0 to 1.
DATA_RANGE = 1.0


def mse(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Mean squared error over all elements, computed in float64.

    Raises:
        ValueError: the arrays differ in shape or are empty.
    """
    reference, estimate = _pair(reference, estimate)
    return float(np.mean(np.square(reference - estimate)))


def psnr_from_mse(error: float, data_range: float = DATA_RANGE) -> float:
    """PSNR in dB for a mean squared error; ``inf`` for a perfect match."""
    if error < 0:
        raise ValueError(f"a mean squared error cannot be negative, got {error}")
    if error == 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / error)


def psnr(reference: np.ndarray, estimate: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """PSNR in dB of ``estimate`` against ``reference`` (from the MSE over all pixels)."""
    return psnr_from_mse(mse(reference, estimate), data_range)


def mean_ssim(reference: np.ndarray, estimate: np.ndarray) -> float:
    """scikit-image SSIM of each image pair, averaged over the images.

    Args:
        reference: images shaped (N, H, W) or (N, H*W) with H == W; floats in [0, 1].
        estimate: the same shape.
    """
    from skimage.metrics import structural_similarity

    reference, estimate = _pair(reference, estimate)
    reference, estimate = _as_square_images(reference), _as_square_images(estimate)
    # With the image index as the channel axis, scikit-image computes each image's SSIM on its
    # own and returns their mean: exactly the per-image average, without a Python loop here.
    return float(structural_similarity(reference, estimate, data_range=DATA_RANGE, channel_axis=0))


@dataclass(frozen=True)
class Sparsity:
    """How sparse a set of codes is.

    Attributes:
        code_dim: values per code.
        mean_activation: mean code value over all images and units.
        zero_fraction: fraction of code values that are exactly 0.0.
        active_per_image: mean number of non-zero values per code.
        active_per_image_median: median number of non-zero values per code.
        dead_units: units that are 0.0 for every image (they carry nothing).
    """

    code_dim: int
    mean_activation: float
    zero_fraction: float
    active_per_image: float
    active_per_image_median: float
    dead_units: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain data for metrics.json."""
        return asdict(self)


def sparsity(codes: np.ndarray) -> Sparsity:
    """Measure the sparsity of ``codes`` shaped (N, code_dim); 'zero' means exactly 0.0.

    Raises:
        ValueError: ``codes`` is not a non-empty 2-D array.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.size == 0:
        raise ValueError(f"codes must be a non-empty (N, code_dim) array, got {codes.shape}")
    nonzero = codes != 0
    active = nonzero.sum(axis=1)
    return Sparsity(
        code_dim=int(codes.shape[1]),
        mean_activation=float(np.mean(codes, dtype=np.float64)),
        zero_fraction=float(1.0 - nonzero.mean()),
        active_per_image=float(active.mean()),
        active_per_image_median=float(np.median(active)),
        dead_units=int(np.sum(~nonzero.any(axis=0))),
    )


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {estimate.shape}")
    if reference.size == 0:
        raise ValueError("cannot compare empty arrays")
    return reference, estimate


def _as_square_images(images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        return images
    if images.ndim == 2:
        side = math.isqrt(images.shape[1])
        if side * side == images.shape[1]:
            return images.reshape(len(images), side, side)
    raise ValueError(f"expected (N, H, W) or (N, H*W) square images, got {images.shape}")
