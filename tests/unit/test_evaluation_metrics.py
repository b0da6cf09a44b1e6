"""The report's metric functions against values known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from aeq.evaluation.metrics import mean_ssim, mse, psnr, psnr_from_mse, sparsity


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).random((6, 28, 28))


def test_psnr_of_identity_is_infinite(images):
    assert mse(images, images) == 0.0
    assert psnr(images, images) == math.inf


@pytest.mark.parametrize("offset", [0.1, 0.01, 0.25])
def test_psnr_of_a_constant_offset_is_the_closed_form(offset):
    # Pixels in [0, 0.5] so the offset never leaves [0, 1]: MSE = offset**2 exactly,
    # PSNR = 10 log10(1 / offset**2) = -20 log10(offset).
    reference = np.random.default_rng(1).random((5, 28, 28)) * 0.5
    estimate = reference + offset
    assert mse(reference, estimate) == pytest.approx(offset**2, rel=1e-12)
    assert psnr(reference, estimate) == pytest.approx(-20 * math.log10(offset), rel=1e-9)


def test_psnr_of_one_wrong_pixel():
    # One pixel of 784 off by 1.0: MSE = 1/784, PSNR = 10 log10(784).
    reference = np.zeros((1, 28, 28))
    estimate = reference.copy()
    estimate[0, 3, 4] = 1.0
    assert psnr(reference, estimate) == pytest.approx(10 * math.log10(784))


def test_psnr_from_mse_rejects_a_negative_error():
    with pytest.raises(ValueError):
        psnr_from_mse(-1e-3)


def test_mse_rejects_mismatched_or_empty_arrays():
    with pytest.raises(ValueError, match="shapes differ"):
        mse(np.zeros((2, 784)), np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="empty"):
        mse(np.zeros((0, 4)), np.zeros((0, 4)))


def test_ssim_of_identity_is_one(images):
    assert mean_ssim(images, images) == pytest.approx(1.0)


def test_ssim_is_the_mean_of_per_image_ssim(images):
    noisy = np.clip(images + np.random.default_rng(2).normal(0, 0.2, images.shape), 0, 1)
    expected = np.mean(
        [structural_similarity(a, b, data_range=1.0) for a, b in zip(images, noisy, strict=True)]
    )
    assert mean_ssim(images, noisy) == pytest.approx(expected, rel=1e-6)
    assert mean_ssim(images, noisy) < 0.9


def test_ssim_accepts_flat_images(images):
    flat = images.reshape(len(images), -1)
    noisy = np.clip(flat + 0.1, 0, 1)
    assert mean_ssim(flat, noisy) == pytest.approx(mean_ssim(images, noisy.reshape(images.shape)))


def test_sparsity_counts_on_a_constructed_array():
    codes = np.array(
        [
            [0.0, 1.0, 0.0, 3.0],
            [0.0, 0.0, 0.0, 2.0],
            [0.0, 5.0, 0.0, 0.0],
        ]
    )
    stats = sparsity(codes)
    assert stats.code_dim == 4
    assert stats.zero_fraction == pytest.approx(8 / 12)
    assert stats.mean_activation == pytest.approx(11 / 12)
    assert stats.active_per_image == pytest.approx(4 / 3)
    assert stats.active_per_image_median == 1.0
    assert stats.dead_units == 2  # columns 0 and 2


def test_sparsity_counts_only_exact_zeros():
    stats = sparsity(np.full((2, 3), 1e-30))
    assert stats.zero_fraction == 0.0 and stats.dead_units == 0


def test_sparsity_rejects_non_2d_codes():
    with pytest.raises(ValueError):
        sparsity(np.zeros((3, 4, 2)))
