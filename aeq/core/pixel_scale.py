"""The pixel range a published graph expects at its image input and produces at its image output.

Jobs carry 8-bit pixels (0-255); a graph works on floats in one of these ranges. aeq's own graphs
take and give 0-1 (Keras trained them on pixels / 255); an ONNX model made elsewhere
(``aeq export --onnx --scale``) may use 0-255 or -1-1 (PyTorch's ``Normalize(0.5, 0.5)``).
``config.json`` records it as ``pixel_scale``; a version without the field is 0-1.

    grey level p in 0..255  ->  graph value  low + p * (high - low) / 255
    graph value x           ->  grey level   round((clip(x, low, high) - low) * 255 / (high - low))
"""

from __future__ import annotations

from enum import StrEnum

from aeq.core.errors import UsageError

# The brightest 8-bit grey level.
GREY_LEVELS = 255


class PixelScale(StrEnum):
    """A graph's pixel range, named as ``--scale`` and ``config.json`` write it."""

    UNIT = "0-1"
    BYTE = "0-255"
    SYMMETRIC = "-1-1"

    @property
    def low(self) -> float:
        """The graph value of grey level 0 (black)."""
        return -1.0 if self is PixelScale.SYMMETRIC else 0.0

    @property
    def high(self) -> float:
        """The graph value of grey level 255 (white)."""
        return float(GREY_LEVELS) if self is PixelScale.BYTE else 1.0

    @property
    def per_grey_level(self) -> float:
        """How far the graph value moves for one grey level (0-1: 1/255)."""
        return (self.high - self.low) / GREY_LEVELS

    @property
    def grey_levels_per_unit(self) -> float:
        """Grey levels per unit of graph value (0-1: 255), exact for every scale."""
        return GREY_LEVELS / (self.high - self.low)


DEFAULT_PIXEL_SCALE = PixelScale.UNIT


def pixel_scale(text: str | None) -> PixelScale:
    """The scale ``text`` names (``None``: a version published before the field, 0-1).

    Raises:
        UsageError: not one of the scale names.
    """
    if text is None:
        return DEFAULT_PIXEL_SCALE
    try:
        return PixelScale(text)
    except ValueError:
        names = ", ".join(scale.value for scale in PixelScale)
        raise UsageError(f"pixel scale {text!r}: use one of {names}") from None
