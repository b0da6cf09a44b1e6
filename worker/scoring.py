"""Anomaly scores: how far each item lies from the autoencoder's reconstruction of it.

The ``score`` operation runs the autoencoder graph like ``reconstruct`` and keeps only one row of
``SCORE_METRICS`` per item, so a chunk of 512 images sends back 6 KB instead of 401 KB. It runs
where inference runs (a worker, or this process in local mode) and is numpy only: no scikit-image
and no TensorFlow in a worker.

Per item, on pixels scaled to [0, 1]:

- ``mse``: the mean over the 784 pixels of ``(x - r)**2``;
- ``psnr``: ``10 * log10(1 / mse)`` dB, ``PSNR_CAP_DB`` for a perfect reconstruction;
- ``ssim``: the structural similarity of scikit-image's ``structural_similarity`` with its
  defaults (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, data range 1), the mean
  over the 22x22 positions where the window fits.

``r`` is the 8-bit reconstruction ``aeq reconstruct`` writes, so an item's score is what a user
computes from the input and that output. It is always measured against the input as given: for
the denoising model, a noisy input is compared with its denoised reconstruction (there is no clean
image to compare with), so the score then also counts the noise removed.
"""

from __future__ import annotations

import time

import numpy as np

from aeq.core.catalog import SCORE_METRICS, Operation
from aeq.repository import ModelVersion
from worker.inference import ChunkResult, Engine

# A perfect reconstruction has an infinite PSNR; it is written as this instead, so every output
# file holds finite numbers. Two different 8-bit 28x28 images are at most 77.1 dB apart
# (one pixel off by one level), so the cap never ties with a real value.
PSNR_CAP_DB = 100.0
SSIM_WINDOW_PX = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# Items scored at once: the SSIM's window sums then take about 30 MB.
SCORE_BLOCK_ITEMS = 512
_PIXEL_MAX = 255


def run_chunk(
    engine: Engine, version: ModelVersion, op: Operation, items: np.ndarray
) -> ChunkResult:
    """Run ``op`` on a chunk: the one entry point a worker and local mode share.

    ``score`` reconstructs the items and returns float32 ``(n, len(SCORE_METRICS))`` scores; the
    other operations are ``Engine.run`` itself. The result's seconds include the scoring.
    """
    if op is not Operation.SCORE:
        return engine.run(version, op, items)
    reconstructed = engine.run(version, Operation.RECONSTRUCT, items)
    started = time.perf_counter()
    scores = item_scores(items, reconstructed.array)
    seconds = reconstructed.seconds + time.perf_counter() - started
    return ChunkResult(scores, reconstructed.provider, seconds)


def item_scores(items: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """Score each item against its reconstruction.

    Args:
        items: uint8 ``(n, H, W)`` images as given, H and W at least 7.
        reconstructions: uint8 ``(n, H, W)`` reconstructions of them.

    Returns:
        float32 ``(n, len(SCORE_METRICS))``: mse, psnr and ssim per item.

    Raises:
        ValueError: the two arrays differ in shape, or are not uint8 images of 7x7 or more.
    """
    if items.shape != reconstructions.shape or items.ndim != 3:
        raise ValueError(
            f"items {items.shape} and reconstructions {reconstructions.shape} must be the same "
            "(n, height, width)"
        )
    if items.dtype != np.uint8 or reconstructions.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {items.dtype} and {reconstructions.dtype}")
    if min(items.shape[1:]) < SSIM_WINDOW_PX:
        raise ValueError(f"SSIM needs images of at least 7x7, got {items.shape[1:]}")
    # A whole image's sum of squares must fit: int32 up to 33,000 pixels (28x28 is 784).
    exact = np.int32 if items.shape[1] * items.shape[2] * _PIXEL_MAX**2 < 2**31 else np.int64
    scores = np.empty((len(items), len(SCORE_METRICS)), np.float32)
    for start in range(0, len(items), SCORE_BLOCK_ITEMS):
        stop = start + SCORE_BLOCK_ITEMS
        given = items[start:stop].astype(exact)
        rebuilt = reconstructions[start:stop].astype(exact)
        error = _mean_squared_error(given, rebuilt)
        scores[start:stop] = np.stack([error, psnr_db(error), _ssim(given, rebuilt)], axis=1)
    return scores


def psnr_db(error: np.ndarray) -> np.ndarray:
    """PSNR in dB for mean squared errors of [0, 1] images; ``PSNR_CAP_DB`` where it is 0."""
    with np.errstate(divide="ignore"):
        decibels = 10.0 * np.log10(1.0 / np.asarray(error, np.float64))
    return np.minimum(decibels, PSNR_CAP_DB)


# Both metrics work on the 8-bit values as integers: every sum below is exact (a window's sum of
# squares is at most 49 * 255**2), so the variances suffer no cancellation, and the [0, 1] scale
# is applied to the few per-window figures at the end. About twice as fast as the same sums in
# float64, and equal to scikit-image to float32's precision (tests/unit/test_scoring.py).


def _mean_squared_error(given: np.ndarray, rebuilt: np.ndarray) -> np.ndarray:
    """Per image: the mean of the squared differences over its pixels, on the [0, 1] scale."""
    difference = given - rebuilt
    squares = np.einsum("nij,nij->n", difference, difference, dtype=np.int64)
    return squares / (given.shape[1] * given.shape[2] * _PIXEL_MAX**2)


def _ssim(given: np.ndarray, rebuilt: np.ndarray) -> np.ndarray:
    """Per image: the mean structural similarity over every full 7x7 window.

    scikit-image's formula, ``(2 mx my + C1)(2 cov + C2) / ((mx^2 + my^2 + C1)(vx + vy + C2))``
    with sample (co)variances, multiplied through so that it reads in the windows' integer sums.
    """
    count = SSIM_WINDOW_PX * SSIM_WINDOW_PX
    products = np.stack([given, rebuilt, given * given, rebuilt * rebuilt, given * rebuilt])
    sum_x, sum_y, sum_xx, sum_yy, sum_xy = _window_sums(products).astype(np.float64)
    c1 = (SSIM_K1 * _PIXEL_MAX * count) ** 2
    c2 = (SSIM_K2 * _PIXEL_MAX) ** 2 * count * (count - 1)
    cross = sum_x * sum_y
    numerator = (2 * cross + c1) * (2 * (count * sum_xy - cross) + c2)
    spread = count * (sum_xx + sum_yy) - sum_x * sum_x - sum_y * sum_y
    denominator = (sum_x * sum_x + sum_y * sum_y + c1) * (spread + c2)
    return np.mean(numerator / denominator, axis=(-2, -1))


def _window_sums(images: np.ndarray) -> np.ndarray:
    """The sum of every full 7x7 window over the last two axes, from a summed-area table."""
    window = SSIM_WINDOW_PX
    height, width = images.shape[-2:]
    table = np.zeros((*images.shape[:-2], height + 1, width + 1), images.dtype)
    np.cumsum(images, axis=-2, out=table[..., 1:, 1:])
    np.cumsum(table[..., 1:, 1:], axis=-1, out=table[..., 1:, 1:])
    return (
        table[..., window:, window:]
        - table[..., :-window, window:]
        - table[..., window:, :-window]
        + table[..., :-window, :-window]
    )
