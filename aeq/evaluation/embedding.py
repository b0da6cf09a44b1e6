"""2-D maps of the test codes (PCA and t-SNE), for the picture of how the codes arrange the digits.

t-SNE is quadratic-ish in the number of points and runs on the CPU, so the maps use an evenly
spread subsample of the test images (``MAP_POINTS`` in a full run); both projections of one
feature set use the same points, so the two panels of a row are comparable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Test images drawn on each map: t-SNE on 1,500 points takes ~7 s per map on one core.
MAP_POINTS = 1500
# scikit-learn's default perplexity; it must stay below the number of points.
TSNE_PERPLEXITY = 30.0
TSNE_THREADS = 1


@dataclass(frozen=True)
class CodeMap:
    """One feature set projected to 2-D two ways.

    Attributes:
        title: what was projected (``raw pixels``, a model name).
        pca: (n, 2) coordinates on the first two principal components.
        tsne: (n, 2) t-SNE coordinates.
    """

    title: str
    pca: np.ndarray
    tsne: np.ndarray


def map_indices(count: int, points: int = MAP_POINTS) -> np.ndarray:
    """An evenly strided subset of ``points`` indices out of ``count``."""
    if points >= count:
        return np.arange(count)
    return np.linspace(0, count - 1, points).round().astype(np.int64)


def code_maps(features: Mapping[str, np.ndarray], seed: int = 0) -> list[CodeMap]:
    """Project each feature set (rows = the same images) to 2-D with PCA and with t-SNE."""
    return [project(title, values, seed) for title, values in features.items()]


def project(title: str, values: np.ndarray, seed: int = 0) -> CodeMap:
    """PCA and t-SNE projections of ``values`` shaped (n, d)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    values = np.asarray(values, dtype=np.float32)
    if len(values) < 3:
        raise ValueError(f"a 2-D map needs at least 3 points, got {len(values)}")
    pca_xy = _pca_2d(values, PCA, seed)
    perplexity = min(TSNE_PERPLEXITY, (len(values) - 1) / 3)
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
    # One OpenMP thread: t-SNE's gradient loop spin-waits, and on a shared 2-core machine two
    # threads ran it ten times slower than one (measured: 200 points, 5.4 s vs 0.6 s).
    with threadpool_limits(limits=TSNE_THREADS, user_api="openmp"):
        coordinates = tsne.fit_transform(values)
    return CodeMap(title, pca_xy, coordinates)


def _pca_2d(values: np.ndarray, pca_class: type, seed: int) -> np.ndarray:
    # A code with fewer than two varying units (e.g. mostly dead units) still gets a map.
    components = min(2, values.shape[1], len(values))
    coordinates = pca_class(n_components=components, random_state=seed).fit_transform(values)
    if components < 2:
        coordinates = np.column_stack([coordinates, np.zeros(len(values))])
    return coordinates
