"""The report's pictures, drawn with matplotlib's object API on the Agg canvas (no display, no
pyplot state), saved as small PNGs.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aeq.evaluation.embedding import CodeMap

# Dots per inch of every PNG: sharp enough for 28x28 digits, small enough for the docs (< 300 KB).
DPI = 80
# Inches per digit in the image grids.
CELL_IN = 0.8
# Width of the row labels in the image grids, inches.
LABEL_IN = 1.6
DIGIT_COLOURS = "tab10"
PALETTE_COLOURS = 256
# Side of one 2-D map panel, inches.
MAP_PANEL_IN = 2.6


def _figure(width_in: float, height_in: float) -> Any:
    from matplotlib.figure import Figure

    # Figure() without pyplot draws on the Agg canvas, whatever backend the user configured.
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def image_grid(path: Path, rows: Sequence[tuple[str, np.ndarray]], title: str) -> Path:
    """Draw labelled rows of 28x28 images (each row's images side by side) and save a PNG.

    Args:
        path: where to write the PNG.
        rows: (label, images shaped (n, 28, 28)) per row; every row has the same n.
        title: the figure's title.
    """
    columns = len(rows[0][1])
    figure = _figure(LABEL_IN + CELL_IN * columns, 0.4 + CELL_IN * len(rows))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, (label, images) in enumerate(rows):
        for column in range(columns):
            axis = axes[row][column]
            axis.imshow(images[column], cmap="gray", vmin=0.0, vmax=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    figure.suptitle(title, fontsize=11)
    return _save(figure, path)


def denoising_curves(path: Path, denoising: Mapping[str, Any]) -> Path:
    """PSNR and SSIM against the noise factor, one line per method."""
    factors = denoising["factors"]
    figure = _figure(12.0, 4.2)
    psnr_axis, ssim_axis = figure.subplots(1, 2)
    for method, scores in denoising["methods"].items():
        style = "--" if method == "noisy input" else "-"
        psnr_axis.plot(factors, scores["psnr"], style, marker="o", markersize=3, label=method)
        ssim_axis.plot(factors, scores["ssim"], style, marker="o", markersize=3, label=method)
    psnr_axis.set(xlabel="noise factor (std of added Gaussian)", ylabel="PSNR (dB)")
    ssim_axis.set(xlabel="noise factor (std of added Gaussian)", ylabel="mean SSIM")
    for axis in (psnr_axis, ssim_axis):
        axis.grid(alpha=0.3)
    figure.legend(*psnr_axis.get_legend_handles_labels(), loc="outside right center", fontsize=8)
    figure.suptitle("Denoising the test images (higher is better)", fontsize=11)
    return _save(figure, path)


def sparsity_histogram(path: Path, codes: Mapping[str, np.ndarray]) -> Path:
    """Histogram of non-zero code values per image, one outline per model."""
    figure = _figure(7.0, 4.0)
    axis = figure.subplots()
    largest = max(values.shape[1] for values in codes.values())
    bins = np.arange(largest + 2) - 0.5
    for name, values in codes.items():
        active = np.count_nonzero(values, axis=1)
        axis.hist(active, bins=bins, histtype="step", linewidth=1.5, label=name, density=True)
    axis.set(xlabel="non-zero code values per test image", ylabel="fraction of test images")
    axis.legend(fontsize=9)
    axis.grid(alpha=0.3)
    figure.suptitle("How many code units each image switches on", fontsize=11)
    return _save(figure, path)


def code_map_grid(path: Path, maps: Sequence[CodeMap], labels: np.ndarray) -> Path:
    """One column per feature set, PCA map on top, t-SNE map below, points coloured by digit."""
    figure = _figure(MAP_PANEL_IN * len(maps) + 0.8, 2 * MAP_PANEL_IN + 0.4)
    axes = figure.subplots(2, len(maps), squeeze=False)
    for column, code_map in enumerate(maps):
        for row, (method, xy) in enumerate((("PCA", code_map.pca), ("t-SNE", code_map.tsne))):
            axis = axes[row][column]
            points = axis.scatter(
                xy[:, 0], xy[:, 1], c=labels, cmap=DIGIT_COLOURS, vmin=-0.5, vmax=9.5, s=2
            )
            points.set_rasterized(True)
            axis.set_title(f"{code_map.title}: {method}", fontsize=9)
            axis.set_xticks([])
            axis.set_yticks([])
    colour_bar = figure.colorbar(points, ax=axes, ticks=range(10), shrink=0.8, aspect=30)
    colour_bar.set_label("digit")
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    from PIL import Image

    # Plots use few colours: a 256-colour palette PNG looks the same at a third of the size,
    # which keeps the figures committed under docs/img small.
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, format="png")
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=PALETTE_COLOURS).save(path, optimize=True)
    return path
