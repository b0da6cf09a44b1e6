"""What a score job's client does with the scores once they are in: record a calibration, draw the
worst items.

Shared by ``aeq score`` and ``aeq.score``. The scores themselves come from the workers (or local
mode) through ``worker.scoring``; only the K items of the top-K picture are run again, here, to
draw their reconstructions: K images through one ONNX Runtime session, not a job.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aeq.core.catalog import Operation
from aeq.core.settings import Settings
from aeq.files.score_files import Scores, calibration_of, write_top_picture
from aeq.repository import Calibration, ModelRepository, ModelVersion

if TYPE_CHECKING:
    from aeq.client.client import ChunkSource

TOP_PICTURE_SUFFIX = "-top.png"
# Items read from the inputs at a time while picking the worst ones out.
PICK_CHUNK_ITEMS = 4096


def record_calibration(
    settings: Settings, version: ModelVersion, scores: Scores, source: str
) -> Calibration:
    """Record the percentiles of known-good items' scores with their model version.

    Raises:
        UsageError: too few items to calibrate with.
        RepositoryError: the version folder cannot be written.
    """
    calibration = calibration_of(scores.scores, source)
    ModelRepository(settings.model_repository).record_calibration(version, calibration)
    return calibration


def top_picture_path(output: Path) -> Path:
    """Where ``--top`` draws the worst items: ``scores.csv`` -> ``scores-top.png``."""
    return output.with_name(output.stem + TOP_PICTURE_SUFFIX)


def draw_worst(
    settings: Settings,
    version: ModelVersion,
    source: ChunkSource,
    scores: Scores,
    count: int,
    path: Path,
) -> Path:
    """Draw the ``count`` worst items (input | reconstruction | difference) into ``path``."""
    from worker.inference import Engine

    chosen = scores.worst(count)
    items = pick_items(source, chosen)
    reconstructed = Engine(settings).run(version, Operation.RECONSTRUCT, items).array
    return write_top_picture(path, items, reconstructed)


def pick_items(source: ChunkSource, positions: np.ndarray) -> np.ndarray:
    """The items at ``positions`` of ``source`` (read once more, a chunk at a time), in the
    order of ``positions``."""
    wanted = {int(position): order for order, position in enumerate(positions)}
    picked: list[np.ndarray | None] = [None] * len(positions)
    start = 0
    for _, items in source.chunks(PICK_CHUNK_ITEMS):
        for position in range(start, start + len(items)):
            if position in wanted:
                picked[wanted[position]] = items[position - start]
        start += len(items)
    missing = [int(positions[order]) for order, item in enumerate(picked) if item is None]
    if missing:
        raise ValueError(f"the inputs hold {start} items; no item {missing[0]}")
    return np.stack([item for item in picked if item is not None])
