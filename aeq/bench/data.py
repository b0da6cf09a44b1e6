"""Benchmark inputs: MNIST test digits (tiled to any count) or, without MNIST, random pixels.

Inference time does not depend on the pixel values, so tiling the 10,000 test digits to 100,000
items measures the same work as 100,000 distinct ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aeq.core.catalog import IMAGE_SIDE
from aeq.core.idx import read_idx
from aeq.core.settings import Settings

RANDOM_SEED = 0
RANDOM_POOL = 10_000


@dataclass(frozen=True)
class Images:
    """A pool of uint8 images (n, 28, 28) and where it came from."""

    pool: np.ndarray
    source: str

    def take(self, count: int) -> np.ndarray:
        """``count`` images, cycling through the pool (a fresh, contiguous array)."""
        reps = -(-count // len(self.pool))
        return np.ascontiguousarray(np.tile(self.pool, (reps, 1, 1))[:count])

    def floats(self, count: int, dims: tuple[int, ...]) -> np.ndarray:
        """``count`` images as float32 in [0, 1], shaped ``(count, *dims)`` for a graph input."""
        return (self.take(count).astype(np.float32) / 255.0).reshape(count, *dims)

    def save(self, path: Path, count: int) -> Path:
        """Write ``count`` images as a uint8 ``.npy`` (the service's real input format)."""
        np.save(path, self.take(count), allow_pickle=False)
        return path


def load_images(settings: Settings) -> Images:
    """MNIST test images from ``AEQ_DATA_DIR`` when it holds them, else seeded random pixels."""
    folder = settings.data_dir
    if folder is not None and folder.is_dir():
        found = sorted(folder.glob("t10k-images*"))
        if found:
            return Images(read_idx(found[0]), f"MNIST test images from {found[0]}, tiled")
    rng = np.random.default_rng(RANDOM_SEED)
    pool = rng.integers(0, 256, (RANDOM_POOL, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    return Images(pool, "random uint8 pixels (no MNIST in AEQ_DATA_DIR)")
