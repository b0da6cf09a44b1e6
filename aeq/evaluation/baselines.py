"""What the autoencoders are measured against: PCA at the same code size, and a median filter.

PCA is scikit-learn's, fitted once on the training images with the largest number of components
any comparison needs; a k-component projection then uses the first k components, which is the
k-component PCA itself (the components come out sorted by explained variance). Reconstructions are
clipped to [0, 1], the range the autoencoders' sigmoid outputs live in; clipping can only lower
PCA's error, so the baseline is, if anything, favoured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aeq.core.catalog import PIXELS_PER_IMAGE

# The median filter's window, in pixels: 3x3 is the usual choice for 28x28 digits; larger
# windows erase the strokes themselves.
MEDIAN_WINDOW_PX = 3


class PcaBaseline:
    """PCA fitted on flattened training images, usable at each of several sizes.

    Args:
        train_images: float images in [0, 1], any shape with 784 values per image.
        sizes: the numbers of components the report asks for; sizes PCA cannot have (more than
            the training images or the pixels) are dropped, the rest are in ``sizes``.
        seed: random state for scikit-learn (the full SVD used here does not draw from it).

    Raises:
        ValueError: none of ``sizes`` is possible with these training images.
    """

    def __init__(self, train_images: np.ndarray, sizes: Sequence[int], seed: int = 0) -> None:
        from sklearn.decomposition import PCA

        flat = _flat(train_images)
        limit = min(flat.shape)
        self.sizes = tuple(sorted({k for k in sizes if 1 <= k <= limit}))
        if not self.sizes:
            raise ValueError(
                f"PCA can have 1..{limit} components with {flat.shape[0]} training images; "
                f"none of {list(sizes)} fits"
            )
        self._pca = PCA(n_components=self.sizes[-1], svd_solver="full", random_state=seed)
        self._pca.fit(flat)

    def encode(self, images: np.ndarray, components: int) -> np.ndarray:
        """The first ``components`` PCA coordinates of each image, shaped (N, components)."""
        basis = self._basis(components)
        return ((_flat(images) - self._pca.mean_) @ basis.T).astype(np.float32)

    def reconstruct(self, images: np.ndarray, components: int) -> np.ndarray:
        """Project images onto the first ``components`` components and back, clipped to [0, 1].

        Returns:
            float32 images of the same shape as ``images``.
        """
        basis = self._basis(components)
        flat = _flat(images)
        projected = (flat - self._pca.mean_) @ basis.T @ basis + self._pca.mean_
        return np.clip(projected, 0.0, 1.0).astype(np.float32).reshape(np.shape(images))

    def _basis(self, components: int) -> np.ndarray:
        if components not in self.sizes:
            raise ValueError(f"PCA-{components} was not fitted; sizes: {list(self.sizes)}")
        return np.asarray(self._pca.components_[:components])


def median_filter(images: np.ndarray, window_px: int = MEDIAN_WINDOW_PX) -> np.ndarray:
    """Median-filter each image on its own (window ``window_px`` square, edges mirrored).

    Args:
        images: float images shaped (N, H, W).
    """
    from scipy.ndimage import median_filter as scipy_median

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected images shaped (N, H, W), got {images.shape}")
    # A window of 1 along the image axis keeps neighbouring images out of each other's medians.
    return scipy_median(images, size=(1, window_px, window_px), mode="reflect")


def _flat(images: np.ndarray) -> np.ndarray:
    array = np.asarray(images, dtype=np.float64)
    if array.size == 0 or array.size % PIXELS_PER_IMAGE:
        raise ValueError(f"expected whole 28x28 images, got shape {array.shape}")
    return array.reshape(-1, PIXELS_PER_IMAGE)
