"""The on-disk model repository, laid out the way Triton users know it.

    <repository>/<model>/<version>/autoencoder.onnx
                                   encoder.onnx
                                   decoder.onnx
                                   config.json

Versions are integers from 1; "latest" is the highest. ``config.json`` names each graph's inputs and
outputs (name, dtype, dims; -1 is the dynamic batch dimension) and records what aeq adds: code
dimension, opset, parity error, the training record, the sha256 of every file and library versions.
An ONNX model made elsewhere (``aeq export --onnx``) may publish the autoencoder graph alone, and
records the pixel range its graphs work in (``pixel_scale``) and the files it came from.

A version may also hold ``calibration.json`` (``aeq score --calibrate``): the distribution of the
``score`` operation's MSE over known-good items, as percentiles, against which later score jobs
count the items past each. It is the one file added to a published version, written beside it and
renamed into place (a reader sees the old calibration or the new, never half of one); the graphs
and ``config.json`` never change once published.

Publishing writes a staging folder and renames it into place, so a reader never sees half a
version. Reading is TensorFlow-free (the worker uses it) and hands out model bytes only after their
sha256 matches the recorded one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aeq.core.catalog import Graph, Operation
from aeq.core.durable import fsync_folder
from aeq.core.errors import IntegrityError, ModelNotFoundError, RepositoryError, UsageError
from aeq.core.pixel_scale import PixelScale, pixel_scale

CONFIG_FILE = "config.json"
CALIBRATION_FILE = "calibration.json"
CALIBRATION_FORMAT = "aeq-score-calibration"
CALIBRATION_FORMAT_VERSION = 1
_STAGING_PREFIX = ".staging-"
_PUBLISH_ATTEMPTS = 20
# A version folder is a positive integer without leading zeros ("7", never "07" or "0").
_VERSION_NAME = re.compile(r"[1-9][0-9]*")


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output: its stable name, element type and dims (-1 = any)."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorInfo:
        return cls(str(data["name"]), str(data["dtype"]), tuple(int(d) for d in data["dims"]))

    def to_json(self) -> dict[str, Any]:
        """The entry ``config.json`` lists under a graph's ``inputs`` or ``outputs``."""
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the tensor holds where its first dim is a number (ONNX models made
        elsewhere: PyTorch exports batch 1 unless told otherwise), ``None`` where it is open."""
        return fixed_batch(self.dims)


def fixed_batch(dims: Sequence[int]) -> int | None:
    """The first of ``dims`` where it is a number, ``None`` where it is open (-1) or absent."""
    return dims[0] if dims and dims[0] > 0 else None


@dataclass(frozen=True)
class GraphInfo:
    """One published ONNX graph: its file and signature."""

    graph: Graph
    file: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def input(self) -> TensorInfo:
        """The graph's single input (every aeq graph has exactly one)."""
        return self.inputs[0]

    @property
    def output(self) -> TensorInfo:
        """The graph's single output."""
        return self.outputs[0]


@dataclass(frozen=True)
class Calibration:
    """What scores look like on known-good items: percentiles of one metric (higher = worse).

    Attributes:
        metric: the score metric, ``mse``.
        percentiles: ``(percentile, value)`` pairs, ascending; e.g. ``(99.0, 0.021)``: 99 % of the
            known-good items scored at most 0.021.
        items: how many known-good items were scored.
        source: what they were (the inputs as given on the command line).
        recorded_at: when (ISO 8601, UTC).
    """

    metric: str
    percentiles: tuple[tuple[float, float], ...]
    items: int
    source: str
    recorded_at: str

    def to_json(self) -> dict[str, Any]:
        """The plain data ``calibration.json`` holds."""
        return {
            "format": CALIBRATION_FORMAT,
            "format_version": CALIBRATION_FORMAT_VERSION,
            "metric": self.metric,
            "percentiles": [{"percentile": p, "value": v} for p, v in self.percentiles],
            "items": self.items,
            "source": self.source,
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        """Read the plain data back (``KeyError``, ``TypeError``, ``ValueError`` if malformed)."""
        if data.get("format") != CALIBRATION_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {CALIBRATION_FORMAT!r}")
        pairs = tuple(
            (float(entry["percentile"]), float(entry["value"])) for entry in data["percentiles"]
        )
        return cls(
            metric=str(data["metric"]),
            percentiles=tuple(sorted(pairs)),
            items=int(data["items"]),
            source=str(data["source"]),
            recorded_at=str(data["recorded_at"]),
        )

    @classmethod
    def of(
        cls, metric: str, pairs: Sequence[tuple[float, float]], items: int, source: str
    ) -> Calibration:
        """A calibration recorded now."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(metric, tuple(sorted(pairs)), items, source, now)


@dataclass(frozen=True)
class ModelVersion:
    """One published version of one model, as recorded in its ``config.json``."""

    model: str
    version: int
    path: Path
    config: Mapping[str, Any]

    @property
    def label(self) -> str:
        """``model@version``, the way the CLI and logs name it."""
        return f"{self.model}@{self.version}"

    @property
    def code_dim(self) -> int:
        """Length of the flat code vector; 0 for a version without encoder and decoder graphs
        (an ONNX model published with ``aeq export --onnx`` alone: ``code_dim`` is null)."""
        recorded = self.config.get("code_dim")
        return 0 if recorded is None else int(recorded)

    @property
    def graphs(self) -> tuple[Graph, ...]:
        """The graphs this version publishes: all three, or the autoencoder alone."""
        return tuple(graph for graph in Graph if graph.value in self.config["graphs"])

    @property
    def operations(self) -> tuple[Operation, ...]:
        """The operations this version's graphs serve."""
        return tuple(op for op in Operation if op.graph in self.graphs)

    def check_serves(self, op: Operation) -> None:
        """Refuse ``op`` up front when this version has no graph for it (raises ``UsageError``)."""
        if op.graph not in self.graphs:
            served = ", ".join(served.value for served in self.operations)
            raise UsageError(
                f"{self.label} has no {op.graph.value} graph (published without one): it serves "
                f"{served}, not {op.value}"
            )

    @property
    def pixel_scale(self) -> PixelScale:
        """The pixel range the graphs take and give (``config.json``'s ``pixel_scale``; 0-1 for
        versions published before the field).

        Raises:
            RepositoryError: the field names no known scale.
        """
        try:
            return pixel_scale(self.config.get("pixel_scale"))
        except UsageError as error:
            raise RepositoryError(f"{self.label}: config.json {error}") from None

    def graph(self, graph: Graph) -> GraphInfo:
        """The signature of one of this version's graphs."""
        try:
            entry = self.config["graphs"][graph.value]
        except KeyError:
            raise RepositoryError(f"{self.label} has no {graph.value} graph") from None
        return GraphInfo(
            graph=graph,
            file=str(entry["file"]),
            inputs=tuple(TensorInfo.from_json(item) for item in entry["inputs"]),
            outputs=tuple(TensorInfo.from_json(item) for item in entry["outputs"]),
        )

    def read_verified(self, graph: Graph) -> bytes:
        """Return a graph's ONNX bytes after checking them against the recorded sha256.

        The bytes are read once and handed out, so what was checked is what gets loaded.

        Raises:
            IntegrityError: the file is missing or its sha256 is not the recorded one.
        """
        name = self.graph(graph).file
        try:
            data = (self.path / name).read_bytes()
        except OSError as error:
            raise IntegrityError(f"{self.label}: cannot read {name}: {error.strerror}") from None
        expected = self.config.get("sha256", {}).get(name)
        if not expected:
            raise IntegrityError(
                f"{self.label}: config.json records no sha256 for {name}; refusing to load it"
            )
        actual = sha256_bytes(data)
        if expected != actual:
            raise IntegrityError(
                f"{self.label}: {name} has sha256 {actual[:12]}…, recorded {str(expected)[:12]}…; "
                "the file was changed after publishing, refusing to load it"
            )
        return data

    def verify(self) -> None:
        """Check every graph's sha256 (raises ``IntegrityError`` on the first mismatch)."""
        for graph in self.graphs:
            self.read_verified(graph)

    def calibration(self) -> Calibration | None:
        """The score calibration recorded for this version, or ``None`` if there is none.

        Raises:
            RepositoryError: ``calibration.json`` is there but unreadable or malformed.
        """
        path = self.path / CALIBRATION_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise RepositoryError(f"cannot read {path}: {error.strerror}") from None
        try:
            return Calibration.from_json(json.loads(text))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise RepositoryError(f"{path} is not an aeq score calibration: {error}") from None


class ModelRepository:
    """A model repository folder: list, read and publish model versions."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def models(self) -> list[str]:
        """Names of the models with at least one published version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir() and not entry.name.startswith(".") and self.versions(entry.name)
        )

    def versions(self, model: str) -> list[int]:
        """Published versions of ``model``, ascending (empty if none)."""
        folder = self.root / model
        if not folder.is_dir():
            return []
        # config.json is written before the rename, so a folder without one is not a version.
        return sorted(
            int(entry.name)
            for entry in folder.iterdir()
            if _VERSION_NAME.fullmatch(entry.name) and (entry / CONFIG_FILE).is_file()
        )

    def get(self, model: str, version: int | None = None) -> ModelVersion:
        """Look up ``model`` at ``version`` (default: latest).

        Raises:
            ModelNotFoundError: nothing published, unknown model, or unknown version; the message
                says what is there instead.
        """
        versions = self.versions(model)
        if not versions:
            available = self.models()
            if not available:
                raise ModelNotFoundError(
                    f"no models published in {self.root} yet; run 'aeq train all' and "
                    "'aeq export all' (or set AEQ_MODEL_REPOSITORY)"
                )
            raise ModelNotFoundError(
                f"model {model!r} is not in {self.root}; published: {', '.join(available)}"
            )
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            listed = ", ".join(str(v) for v in versions)
            raise ModelNotFoundError(f"{model} has no version {chosen}; published: {listed}")
        path = self.root / model / str(chosen)
        return ModelVersion(model, chosen, path, _read_config(path))

    def publish(
        self, model: str, files: Mapping[str, Path], config: Mapping[str, Any]
    ) -> ModelVersion:
        """Publish ``files`` (name in the version folder -> source path) as the next version.

        ``config`` is stored as ``config.json`` with ``model``, ``version``, ``published_at`` and
        the ``sha256`` of every file added. The version appears atomically, by rename.
        """
        for name in (model, *files):
            if not name or name != Path(name).name or name.startswith(".") or name == CONFIG_FILE:
                raise RepositoryError(f"cannot publish {name!r}: not a plain file or model name")
        model_folder = self.root / model
        try:
            model_folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RepositoryError(f"cannot create {model_folder}: {error}") from None
        staging = model_folder / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            hashes = {
                name: _copy_and_hash(source, staging / name) for name, source in files.items()
            }
            return self._rename_into_place(model, staging, dict(config), hashes)
        except OSError as error:
            raise RepositoryError(f"cannot publish {model} into {self.root}: {error}") from None
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def record_calibration(self, version: ModelVersion, calibration: Calibration) -> Path:
        """Store ``calibration`` as the version's ``calibration.json``, replacing any before.

        Written to a hidden file in the version folder, synced, then renamed over the old one.

        Raises:
            RepositoryError: the version folder cannot be written (a read-only mount, ...).
        """
        target = version.path / CALIBRATION_FILE
        staged = version.path / f".{CALIBRATION_FILE}.{uuid.uuid4().hex}"
        try:
            _write_json(staged, calibration.to_json())
            os.replace(staged, target)
            fsync_folder(version.path)
        except OSError as error:
            raise RepositoryError(
                f"cannot record the calibration of {version.label} in {version.path}: "
                f"{error.strerror or error}"
            ) from None
        finally:
            if staged.exists():
                staged.unlink()
        return target

    def _rename_into_place(
        self, model: str, staging: Path, config: dict[str, Any], hashes: dict[str, str]
    ) -> ModelVersion:
        # Another publisher may take a version number between our look and our rename; the rename
        # then fails because the target exists, and we try the next number. A stray folder with that
        # number but no config.json (not a version) is stepped over the same way.
        tried = 0
        for _ in range(_PUBLISH_ATTEMPTS):
            version = max((self.versions(model) or [0])[-1], tried) + 1
            tried = version
            target = self.root / model / str(version)
            full_config = {
                **config,
                "model": model,
                "version": version,
                "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "sha256": hashes,
            }
            _write_json(staging / CONFIG_FILE, full_config)
            try:
                os.rename(staging, target)
            except OSError as error:
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise RepositoryError(f"cannot publish {model} into {self.root}: {error}") from None
            fsync_folder(target.parent)
            return ModelVersion(model, version, target, full_config)
        raise RepositoryError(f"could not find a free version number for {model} in {self.root}")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_config(version_path: Path) -> dict[str, Any]:
    try:
        config = json.loads((version_path / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RepositoryError(f"unreadable {version_path / CONFIG_FILE}: {error}") from None
    if not isinstance(config, dict) or "graphs" not in config:
        raise RepositoryError(f"{version_path / CONFIG_FILE} is not an aeq model config")
    return config


def _copy_and_hash(source: Path, target: Path) -> str:
    shutil.copyfile(source, target)
    with open(target, "rb") as stream:
        os.fsync(stream.fileno())
    return sha256_file(target)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with open(path, "w") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())
