"""The image geometries aeq serves, read from a graph's dims: 28x28 gray, in four layouts.

An image tensor's dims (batch first, -1 = open) are accepted in one of these layouts:

    NCHW  [N, 1, 28, 28]     PyTorch's convolutions
    NHWC  [N, 28, 28, 1]     Keras' convolutions
    NHW   [N, 28, 28]
    flat  [N, 784]           dense models

N is open (a named dim, or none) or a fixed number (PyTorch exports batch 1 unless told otherwise).
A worker feeds each graph its own item shape, so the layout only decides what is accepted here.
Other sizes and colour are a later step of issue 11: they grow here and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from aeq.core.catalog import IMAGE_SIDE, PIXELS_PER_IMAGE
from aeq.repository import fixed_batch

IMAGE_LAYOUTS: dict[str, tuple[int, ...]] = {
    "NCHW": (1, IMAGE_SIDE, IMAGE_SIDE),
    "NHWC": (IMAGE_SIDE, IMAGE_SIDE, 1),
    "NHW": (IMAGE_SIDE, IMAGE_SIDE),
    "flat": (PIXELS_PER_IMAGE,),
}


@dataclass(frozen=True)
class ImageGeometry:
    """How a graph lays out its images.

    Attributes:
        layout: one of ``IMAGE_LAYOUTS``.
        batch: the fixed batch size, or ``None`` where the batch dim is open.
    """

    layout: str
    batch: int | None


def image_geometry(dims: Sequence[int]) -> ImageGeometry | None:
    """The geometry of an image tensor with ``dims``, or ``None`` if aeq does not serve it."""
    if not dims:
        return None
    item = tuple(dims[1:])
    for layout, shape in IMAGE_LAYOUTS.items():
        if item == shape:
            return ImageGeometry(layout, fixed_batch(dims))
    return None


def item_size(dims: Sequence[int]) -> int | None:
    """Values per item (the product of the dims after the batch), ``None`` if one is open."""
    item = dims[1:]
    if not item or any(dim <= 0 for dim in item):
        return None
    return math.prod(item)


def dims_text(dims: Sequence[int]) -> str:
    """Dims as a user reads them: ``[N, 1, 28, 28]``, ``?`` for an open dim past the first."""
    if not dims:
        return "no shape"
    shown = ["N" if index == 0 else "?" for index in range(len(dims))]
    return "[" + ", ".join(str(d) if d > 0 else shown[i] for i, d in enumerate(dims)) + "]"


def served_text() -> str:
    """What aeq serves, as refusals say it: ``28x28 gray models (images [N, 1, 28, 28], …)``."""
    layouts = ", ".join(dims_text((-1, *shape)) for shape in IMAGE_LAYOUTS.values())
    return f"{IMAGE_SIDE}x{IMAGE_SIDE} gray models (images {layouts})"
