"""The images the report is computed on: MNIST as floats in [0, 1], optionally cut down.

MNIST comes from ``training.data.load_mnist`` (numpy only), from the same places ``aeq train``
looks: ``--data``, ``AEQ_DATA_DIR``, the keras cache or download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aeq.core.settings import Settings

# 255 is the brightest uint8 pixel.
PIXEL_MAX = 255.0


@dataclass(frozen=True)
class EvalData:
    """Training images (to fit PCA and the classifiers) and test images (to measure on).

    Attributes:
        train_images: float32 (N, 28, 28) in [0, 1].
        train_labels: uint8 (N,).
        test_images: float32 (M, 28, 28) in [0, 1].
        test_labels: uint8 (M,).
        source: where MNIST came from, and how much of it is used.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str


def load_eval_data(
    data: Path | None,
    settings: Settings,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> EvalData:
    """Load MNIST and scale it to [0, 1].

    Args:
        data: an IDX folder or ``mnist.npz`` (``--data``); ``None`` looks where ``aeq train`` does.
        settings: supplies ``AEQ_DATA_DIR``.
        train_limit: keep an evenly spread subset of this many training images (``None``: all).
        test_limit: the same for the test images.

    Raises:
        DataUnavailableError: no MNIST source is reachable.
        InputError: the source is corrupt.
    """
    from training.data import load_mnist

    mnist = load_mnist(data=data, settings=settings)
    train = _subset(len(mnist.train_images), train_limit)
    test = _subset(len(mnist.test_images), test_limit)
    source = (
        f"{mnist.source}: {len(train)} of {len(mnist.train_images)} training images, "
        f"{len(test)} of {len(mnist.test_images)} test images"
    )
    return EvalData(
        train_images=mnist.train_images[train].astype(np.float32) / PIXEL_MAX,
        train_labels=mnist.train_labels[train],
        test_images=mnist.test_images[test].astype(np.float32) / PIXEL_MAX,
        test_labels=mnist.test_labels[test],
        source=source,
    )


def _subset(count: int, limit: int | None) -> np.ndarray:
    """Indices of an evenly strided subset; striding (not the first N) keeps every digit in it,
    because the offline training subset is stored sorted by label."""
    if limit is None or limit >= count:
        return np.arange(count)
    if limit <= 0:
        raise ValueError(f"a subset must hold at least one image, got {limit}")
    return np.linspace(0, count - 1, limit).round().astype(np.int64)
