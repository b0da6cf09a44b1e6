"""PCA and median-filter baselines of the quality report."""

from __future__ import annotations

import numpy as np
import pytest

from aeq.evaluation.baselines import PcaBaseline, median_filter


def rank_k_images(count: int, rank: int, seed: int = 0) -> np.ndarray:
    """Images in [0, 1] whose centred data has rank ``rank``: convex mixes of rank+1 bases."""
    rng = np.random.default_rng(seed)
    bases = rng.random((rank + 1, 784))
    weights = rng.dirichlet(np.ones(rank + 1), size=count)
    return (weights @ bases).reshape(count, 28, 28)


def test_pca_reconstructs_a_rank_k_dataset_exactly():
    images = rank_k_images(200, rank=16)
    pca = PcaBaseline(images, sizes=[8, 16])
    assert np.max(np.abs(pca.reconstruct(images, 16) - images)) < 1e-5
    # One component fewer cannot do it: the reconstruction is measurably off.
    assert np.mean((pca.reconstruct(images, 8) - images) ** 2) > 1e-4


def test_pca_truncation_equals_a_smaller_fit():
    images = np.random.default_rng(3).random((120, 784)) ** 3
    large, small = PcaBaseline(images, sizes=[5, 40]), PcaBaseline(images, sizes=[5])
    assert np.allclose(large.reconstruct(images, 5), small.reconstruct(images, 5), atol=1e-5)
    assert large.encode(images, 5).shape == (120, 5)


def test_pca_reconstructions_keep_the_shape_and_range():
    images = np.random.default_rng(4).random((50, 28, 28))
    pca = PcaBaseline(images, sizes=[3])
    out = pca.reconstruct(images, 3)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_pca_drops_sizes_it_cannot_have():
    images = np.random.default_rng(5).random((30, 784))
    pca = PcaBaseline(images, sizes=[8, 64, 128, 1568])
    assert pca.sizes == (8,)
    with pytest.raises(ValueError, match="not fitted"):
        pca.reconstruct(images, 64)
    with pytest.raises(ValueError, match="none of"):
        PcaBaseline(images, sizes=[64])


def test_median_filter_removes_isolated_pixels_per_image():
    images = np.zeros((2, 28, 28), dtype=np.float32)
    images[0, 10, 10] = 1.0  # salt in the first image only
    images[1, 5:9, 5:9] = 1.0  # a solid block survives a 3x3 median
    out = median_filter(images)
    assert out[0].max() == 0.0
    assert np.array_equal(out[1, 6:8, 6:8], np.ones((2, 2), dtype=np.float32))
    # Images do not leak into each other.
    assert out[1, 10, 10] == 0.0 and out[0, 6, 6] == 0.0
