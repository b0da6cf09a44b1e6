"""What ``aeq score`` writes: the items' scores, ranked, as CSV, JSON or ``.npy``; and the picture
of the worst ones.

Scores are 12 bytes an item, so the writer keeps them in memory as chunks arrive (in any order)
and writes the whole file at ``commit``, staged beside the target and renamed into place
(``aeq.files.staging``); ``abort``, or leaving its ``with`` block without a commit, leaves
nothing behind. Items are ranked by MSE, worst first (rank 1); ties keep input order.

- ``.csv``: one row per item, worst first: ``rank, item`` (its position in the input), ``name``,
  ``mse``, ``psnr``, ``ssim``, ``model`` (``model@version``), ``over_percentile`` (the highest
  calibrated percentile the item's MSE is above; empty if none, or the model is not calibrated).
- ``.json``: ``{"format": "aeq-scores", "model", "version", "metrics", "ranked_by", "count",
  "calibration", "exceeding", "items": [...]}`` with the items as in the CSV.
- ``.npy``: float32 ``(N, 3)`` (mse, psnr, ssim) in input order, as every aeq array output, with a
  sidecar ``<file>.npy.json`` holding what the JSON holds but with ``names`` and ``ranks`` lists
  in input order instead of ``items``.

``exceeding`` lists, per calibrated percentile, its MSE threshold and how many items are above it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from aeq.core.catalog import SCORE_METRICS
from aeq.core.durable import fsync_file, remove_quietly
from aeq.core.errors import AeqError, JobError, UsageError
from aeq.files import staging
from aeq.files.code_files import sidecar_path
from aeq.files.memory import ArrayWriter
from aeq.files.png import encode_gray_batch
from aeq.repository import Calibration

SCORES_FORMAT = "aeq-scores"
SCORES_FORMAT_VERSION = 1
SCORE_SUFFIXES = (".csv", ".json", ".npy")
RANKED_BY = "mse"
# The percentiles ``aeq score --calibrate`` records.
CALIBRATION_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)
# Fewer known-good items than this give a 99th percentile that is only their maximum.
MIN_CALIBRATION_ITEMS = 100
# The top-K picture: each 28x28 panel drawn this many times larger, panels this far apart.
PICTURE_SCALE = 3
PICTURE_GAP_PX = 2
_SIGNIFICANT_DIGITS = 7


@dataclass(frozen=True)
class Exceeding:
    """How many items scored above one calibrated percentile."""

    percentile: float
    threshold: float
    items: int


@dataclass(frozen=True)
class Scores:
    """A whole job's scores in input order, with each item's rank (what ``aeq.score`` returns).

        >>> scores = aeq.score(images)
        >>> scores.mse[:3], scores.rank[:3]      # per item, in input order
        >>> images[scores.worst(16)]             # the 16 worst reconstructed items, worst first
        >>> scores.above(99.0).sum()             # items past the calibrated 99th percentile

    Attributes:
        scores: float32 ``(N, len(SCORE_METRICS))``.
        names: the item names.
        rank: int64 ``(N,)``, 1 for the worst reconstructed item.
        model: the model name.
        version: the model version.
        calibration: the version's calibration, if it has one.
    """

    scores: np.ndarray
    names: list[str]
    rank: np.ndarray
    model: str
    version: int
    calibration: Calibration | None

    @classmethod
    def of(
        cls,
        scores: np.ndarray,
        names: list[str],
        model: str,
        version: int,
        calibration: Calibration | None,
    ) -> Scores:
        """Rank ``scores`` by MSE, worst first, ties in input order."""
        order = worst_first(scores)
        ranks = np.empty(len(scores), np.int64)
        ranks[order] = np.arange(1, len(scores) + 1)
        return cls(scores, names, ranks, model, version, calibration)

    @property
    def mse(self) -> np.ndarray:
        """float32 ``(N,)``: each item's mean squared error against its reconstruction."""
        return self.scores[:, SCORE_METRICS.index("mse")]

    @property
    def psnr(self) -> np.ndarray:
        """float32 ``(N,)``: each item's PSNR in dB (100 for a perfect reconstruction)."""
        return self.scores[:, SCORE_METRICS.index("psnr")]

    @property
    def ssim(self) -> np.ndarray:
        """float32 ``(N,)``: each item's SSIM with its reconstruction (1 = identical)."""
        return self.scores[:, SCORE_METRICS.index("ssim")]

    @property
    def label(self) -> str:
        """``model@version``."""
        return f"{self.model}@{self.version}"

    def worst(self, count: int) -> np.ndarray:
        """The input positions of the ``count`` worst reconstructed items, worst first."""
        return worst_first(self.scores)[:count]

    def above(self, percentile: float) -> np.ndarray:
        """bool ``(N,)``: which items' MSE is above the calibrated ``percentile``.

        Raises:
            UsageError: the version has no calibration, or not at that percentile.
        """
        if self.calibration is None:
            raise UsageError(
                f"{self.label} is not calibrated: run aeq.score(clean_images, calibrate=True) "
                "or 'aeq score --calibrate CLEAN...' first"
            )
        thresholds = dict(self.calibration.percentiles)
        if float(percentile) not in thresholds:
            recorded = ", ".join(f"{p:g}" for p in thresholds)
            raise UsageError(
                f"{self.label} is calibrated at percentiles {recorded}, not {percentile}"
            )
        return self.mse > thresholds[float(percentile)]

    def exceeding(self) -> list[Exceeding]:
        """Per calibrated percentile, how many items are above it (empty: not calibrated)."""
        if self.calibration is None:
            return []
        return [
            Exceeding(percentile, threshold, int(np.count_nonzero(self.mse > threshold)))
            for percentile, threshold in self.calibration.percentiles
        ]

    def over_percentile(self) -> list[float | None]:
        """Per item: the highest calibrated percentile its MSE is above, or ``None``."""
        highest: list[float | None] = [None] * len(self.scores)
        for entry in self.exceeding():
            for item in np.flatnonzero(self.mse > entry.threshold):
                highest[item] = entry.percentile
        return highest


def worst_first(scores: np.ndarray) -> np.ndarray:
    """Item indices ordered by MSE, highest first; equal scores keep input order."""
    return np.argsort(-scores[:, SCORE_METRICS.index(RANKED_BY)].astype(np.float64), kind="stable")


def calibration_of(scores: np.ndarray, source: str) -> Calibration:
    """The MSE percentiles of known-good items' scores, to record with the model version.

    Raises:
        UsageError: fewer than ``MIN_CALIBRATION_ITEMS`` items.
    """
    if len(scores) < MIN_CALIBRATION_ITEMS:
        raise UsageError(
            f"calibrating needs at least {MIN_CALIBRATION_ITEMS} known-good items, got "
            f"{len(scores)}: a 99th percentile of fewer is only their maximum"
        )
    mse = scores[:, SCORE_METRICS.index(RANKED_BY)].astype(np.float64)
    values = np.percentile(mse, CALIBRATION_PERCENTILES)
    pairs = [(p, _significant(v)) for p, v in zip(CALIBRATION_PERCENTILES, values, strict=True)]
    return Calibration.of(RANKED_BY, pairs, len(scores), source)


def open_score_output(
    path: Path | None,
    total: int,
    model: str,
    version: int,
    calibration: Calibration | None,
    overwrite: bool,
) -> ScoreWriter:
    """Start collecting ``total`` items' scores for ``path`` (``.csv``, ``.json`` or ``.npy``;
    ``None``: only collect them, for ``writer.scores`` after the commit).

    Raises:
        UsageError: another suffix.
        OutputExistsError: ``path`` (or the ``.npy``'s sidecar) exists and ``overwrite`` is false.
    """
    if path is not None:
        check_score_path(Path(path))
    return ScoreWriter(path, total, model, version, calibration, overwrite)


def check_score_path(path: Path) -> None:
    """Refuse an output path whose suffix names no scores file aeq writes (``UsageError``)."""
    if path.suffix.lower() not in SCORE_SUFFIXES:
        raise UsageError(f"cannot write scores to {path}: give a .csv, .json or .npy file")


class ScoreWriter:
    """Collects chunks of scores at their item offsets; writes the ranked file at ``commit``."""

    def __init__(
        self,
        path: Path | None,
        total: int,
        model: str,
        version: int,
        calibration: Calibration | None,
        overwrite: bool,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.total = total
        self.kind = "" if self.path is None else self.path.suffix.lower()[1:]
        self.model = model
        self.version = version
        self.calibration = calibration
        self._overwrite = overwrite
        for target in self._targets():
            staging.refuse_existing(target, overwrite)
        self._collected = ArrayWriter(total, (len(SCORE_METRICS),), np.dtype(np.float32))
        self._state = "open"
        self._staged: list[Path] = []
        self._created_parents: list[Path] = []
        self.scores: Scores | None = None

    def __enter__(self) -> ScoreWriter:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state == "open":
            self.abort()

    @property
    def items_written(self) -> int:
        return self._collected.items_written

    def write(self, start: int, names: Sequence[str], array: np.ndarray) -> None:
        """Keep the scores of items ``start ..``; chunks may come in any order.

        Raises:
            ValueError: the chunk does not fit (dtype, shape, range, names), or overlaps.
        """
        if self._state != "open":
            raise ValueError(f"the writer of {self.path} is already {self._state}")
        self._collected.write(start, names, array)

    def commit(self) -> Path | None:
        """Rank the scores (``self.scores``) and write the file; return its path (``None`` when
        only collecting).

        Raises:
            JobError: some items never arrived (nothing is written).
            OutputExistsError: the target appeared meanwhile and overwriting was not asked for.
            AeqError: the disk refused the data.
        """
        if self._state != "open":
            raise ValueError(f"the writer of {self.path} is already {self._state}")
        try:
            scores = self._collected.result()
        except JobError as error:
            self.abort()
            raise JobError(f"{self.path} not written: {error}") from None
        names = self._collected.names
        self.scores = Scores.of(scores, names, self.model, self.version, self.calibration)
        with staging.publishing(self.path, self.abort):
            if self.path is not None:
                self._created_parents = staging.make_parents(self.path)
                self._publish(self.path, self.scores)
        self._state = "committed"
        return self.path

    def abort(self) -> None:
        """Delete whatever was staged; idempotent."""
        if self._state != "open":
            return
        self._state = "aborted"
        staging.discard(self._staged, self._created_parents)

    def _targets(self) -> list[Path]:
        if self.path is None:
            return []
        return [self.path, sidecar_path(self.path)] if self.kind == "npy" else [self.path]

    def _publish(self, path: Path, ranked: Scores) -> None:
        if self.kind == "npy":
            sidecar = self._stage_bytes(sidecar_path(path), _sidecar_bytes(ranked))
            staged = self._stage(staging.partial_path(path, ".npy"))
            np.save(staged, ranked.scores, allow_pickle=False)
            fsync_file(staged)
            # Sidecar first, as for codes: a crash between the renames leaves a sidecar whose
            # count matches no scores, never scores paired with stale names.
            staging.place(sidecar, sidecar_path(path), self._overwrite)
            staging.place(staged, path, self._overwrite)
            return
        data = _csv_bytes(ranked) if self.kind == "csv" else _json_bytes(ranked)
        staging.place(self._stage_bytes(path, data), path, self._overwrite)

    def _stage_bytes(self, target: Path, data: bytes) -> Path:
        staged = self._stage(staging.partial_path(target))
        staged.write_bytes(data)
        fsync_file(staged)
        return staged

    def _stage(self, path: Path) -> Path:
        self._staged.append(path)
        return path


def write_top_picture(path: Path, items: np.ndarray, reconstructions: np.ndarray) -> Path:
    """Write the input | reconstruction | difference picture, one row per item, as a PNG.

    The difference panel is ``|input - reconstruction|`` per pixel (black: reconstructed exactly,
    white: a full-scale miss). Each 28x28 panel is drawn ``PICTURE_SCALE`` times larger. Written
    atomically; an existing file is replaced.

    Args:
        path: the PNG to write.
        items: uint8 ``(K, 28, 28)``, worst first.
        reconstructions: uint8 ``(K, 28, 28)`` of those items.
    """
    difference = np.abs(items.astype(np.int16) - reconstructions.astype(np.int16)).astype(np.uint8)
    picture = _picture(items, reconstructions, difference)
    (data,) = encode_gray_batch(picture[None])
    staged = staging.partial_path(path)
    try:
        staged.write_bytes(data)
        fsync_file(staged)
        staging.place(staged, path, overwrite=True)
    except OSError as error:
        remove_quietly(staged)
        raise AeqError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def _picture(*columns: np.ndarray) -> np.ndarray:
    """Panels side by side, items one under another, on white, gaps between them."""
    count, side = len(columns[0]), columns[0].shape[1]
    cell = side + PICTURE_GAP_PX
    picture = np.full((count * cell - PICTURE_GAP_PX, len(columns) * cell - PICTURE_GAP_PX), 255)
    for row in range(count):
        for column, images in enumerate(columns):
            top, left = row * cell, column * cell
            picture[top : top + side, left : left + side] = images[row]
    scaled = picture.repeat(PICTURE_SCALE, axis=0).repeat(PICTURE_SCALE, axis=1)
    return scaled.astype(np.uint8)


def _significant(value: float) -> float:
    return float(f"{float(value):.{_SIGNIFICANT_DIGITS}g}")


def _item_rows(ranked: Scores) -> list[dict[str, Any]]:
    """The items worst first, as the CSV and the JSON list them."""
    over = ranked.over_percentile()
    rows = []
    for item in worst_first(ranked.scores):
        row: dict[str, Any] = {"rank": int(ranked.rank[item]), "item": int(item)}
        row["name"] = ranked.names[item]
        for column, metric in enumerate(SCORE_METRICS):
            row[metric] = _significant(ranked.scores[item, column])
        row["model"] = ranked.label
        row["over_percentile"] = over[item]
        rows.append(row)
    return rows


def _header(ranked: Scores) -> dict[str, Any]:
    calibration = ranked.calibration
    return {
        "format": SCORES_FORMAT,
        "format_version": SCORES_FORMAT_VERSION,
        "model": ranked.model,
        "version": ranked.version,
        "metrics": list(SCORE_METRICS),
        "ranked_by": RANKED_BY,
        "count": len(ranked.scores),
        "calibration": None if calibration is None else calibration.to_json(),
        "exceeding": [asdict(entry) for entry in ranked.exceeding()] or None,
    }


def _csv_bytes(ranked: Scores) -> bytes:
    text = io.StringIO()
    columns: Sequence[str] = ("rank", "item", "name", *SCORE_METRICS, "model", "over_percentile")
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in _item_rows(ranked):
        over = row["over_percentile"]
        writer.writerow({**row, "over_percentile": "" if over is None else over})
    return text.getvalue().encode()


def _json_bytes(ranked: Scores) -> bytes:
    data = {**_header(ranked), "items": _item_rows(ranked)}
    return (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode()


def _sidecar_bytes(ranked: Scores) -> bytes:
    data = {**_header(ranked), "names": ranked.names, "ranks": ranked.rank.tolist()}
    return (json.dumps(data, ensure_ascii=False) + "\n").encode()
