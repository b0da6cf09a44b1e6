"""Where aeq gets MNIST from, and the one shape it hands it on in.

Numpy only at module level: the TensorFlow-free evaluation and benchmark code loads MNIST through
here too. Keras is imported only on the last resort, the download.

Sources, in order (the first one given or found wins; a broken one is an error, never skipped):

1. ``data`` argument (``aeq train --data``): an IDX folder (``train-images-idx3-ubyte[.gz]``,
   ``train-labels-idx1-ubyte[.gz]``, ``t10k-…``) or a keras-style ``mnist.npz``
   (``x_train``, ``y_train``, ``x_test``, ``y_test``).
2. ``settings.data_dir`` (``AEQ_DATA_DIR``), the same two kinds.
3. The keras cache, ``<keras home>/datasets/mnist.npz`` (``~/.keras`` unless ``KERAS_HOME``), read
   with numpy.
4. ``keras.datasets.mnist.load_data()``, which downloads into that cache.

Nothing reachable: ``DataUnavailableError`` (exit 2) naming the three ways to provide data.
Example::

    data = load_mnist(Path("../shared/data/mnist"))
    data.train_images.shape  # (5000, 28, 28), uint8
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aeq.core.catalog import IMAGE_SIDE
from aeq.core.errors import DataUnavailableError, InputError
from aeq.core.idx import is_idx_path, read_idx
from aeq.core.settings import Settings, load_settings

NPZ_NAME = "mnist.npz"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# IDX file name stems; the files may end in .gz and use '-idx3-' or '.idx3-'.
IDX_STEMS = ("train-images", "train-labels", "t10k-images", "t10k-labels")
# Keras falls back to this folder when the home directory is not writable.
KERAS_FALLBACK_HOME = Path("/tmp/.keras")
HOW_TO_PROVIDE = (
    "give it one of three ways: `--data PATH` (an MNIST IDX folder or a keras mnist.npz), "
    "the AEQ_DATA_DIR environment variable (same kinds), or let keras download it "
    "(internet access; cached in ~/.keras/datasets/mnist.npz)"
)


@dataclass(frozen=True)
class MnistData:
    """MNIST as uint8 arrays, plus where it came from.

    Attributes:
        train_images: uint8 (N, 28, 28).
        train_labels: uint8 (N,).
        test_images: uint8 (M, 28, 28).
        test_labels: uint8 (M,).
        source: one line naming the source, e.g. ``"IDX folder /x/mnist"``.
        path: the folder or file it was read from, absolute ("" for a download), recorded with
            a trained model so ``aeq export`` checks parity on the same data.
        fingerprint: which data this is, whatever path it came by: a hash of the source's test
            images (and of the digits kept, if only some are): ``aeq export`` refuses to make a
            model trained on other data a new version of one already published.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    path: str = ""
    fingerprint: str = ""

    def limited(self, train_limit: int | None) -> MnistData:
        """Keep only the first ``train_limit`` training images (all of them for ``None``)."""
        if train_limit is None:
            return self
        if train_limit <= 0:
            raise ValueError(f"the training limit must be positive, got {train_limit}")
        return replace(
            self,
            train_images=self.train_images[:train_limit],
            train_labels=self.train_labels[:train_limit],
        )

    def with_digits(self, digits: Sequence[int] | None) -> MnistData:
        """Keep only the images of ``digits``, training and test alike (all for ``None``).

        What ``aeq train --digits 0-8`` trains on: a model that never saw a 9, so that 9s can be
        measured as anomalies (docs/RESULTS.md, "Anomaly scores"). The source names the digits.

        Raises:
            ValueError: a digit outside 0-9, or no training image left.
        """
        if digits is None:
            return self
        chosen = sorted(set(digits))
        if not chosen or chosen[0] < 0 or chosen[-1] > 9:
            raise ValueError(f"digits must be within 0-9, got {list(digits)}")
        train = np.isin(self.train_labels, chosen)
        test = np.isin(self.test_labels, chosen)
        if not train.any():
            raise ValueError(f"no training image is a {digits_text(chosen)}")
        return replace(
            self,
            train_images=self.train_images[train],
            train_labels=self.train_labels[train],
            test_images=self.test_images[test],
            test_labels=self.test_labels[test],
            source=f"{self.source}, digits {digits_text(chosen)} only",
            fingerprint=_fingerprint(self.fingerprint.encode(), digits_text(chosen).encode()),
        )


def parse_digits(text: str) -> tuple[int, ...]:
    """``"0-8"``, ``"1,3,5"`` or ``"0-3,7"`` as the digits they name, ascending.

    Raises:
        ValueError: not digits 0-9, ranges and commas.
    """
    digits: set[int] = set()
    for part in text.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        if not (
            low.isdigit() and len(low) == 1 and (not high or (high.isdigit() and len(high) == 1))
        ):
            raise ValueError(f"digits are 0-9, ranges like 0-8 and commas, not {text!r}")
        first, last = int(low), int(high or low)
        if first > last:
            raise ValueError(f"the range {part} runs backwards")
        digits.update(range(first, last + 1))
    return tuple(sorted(digits))


def digits_text(digits: Sequence[int]) -> str:
    """Digits as ranges: (0, 1, 2, 3, 5) -> ``"0-3,5"``."""
    parts: list[str] = []
    ordered = sorted(set(digits))
    start = previous = ordered[0]
    for digit in [*ordered[1:], None]:
        if digit is not None and digit == previous + 1:
            previous = digit
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if digit is not None:
            start = previous = digit
    return ",".join(parts)


def load_mnist(data: Path | None = None, settings: Settings | None = None) -> MnistData:
    """Load MNIST from the first source that is given or found (see the module docstring).

    Args:
        data: an IDX folder or a keras-style ``mnist.npz``; wins over everything else.
        settings: supplies ``data_dir`` (``AEQ_DATA_DIR``); read from the environment if omitted.

    Raises:
        DataUnavailableError: no source is given and none can be found or downloaded, or a
            given path does not exist.
        InputError: a source exists but is corrupt or ill-shaped (the message names the file).
    """
    settings = settings if settings is not None else load_settings()
    if data is not None:
        return load_path(Path(data), origin="--data")
    if settings.data_dir is not None:
        return load_path(settings.data_dir, origin="AEQ_DATA_DIR")
    for cache in keras_cache_candidates(settings):
        if cache.is_file():
            return replace(load_npz(cache), source=f"keras cache {cache}", path=str(cache))
    return _download()


def load_path(path: Path, origin: str = "path") -> MnistData:
    """Load MNIST from an IDX folder, a folder holding ``mnist.npz``, or an ``.npz`` file."""
    if not path.exists():
        raise DataUnavailableError(f"{origin} {path} does not exist; {HOW_TO_PROVIDE}")
    if path.is_file():
        data = load_npz(path)
    elif _idx_files(path):
        data = load_idx_folder(path)
    elif (path / NPZ_NAME).is_file():
        data = load_npz(path / NPZ_NAME)
    else:
        raise InputError(
            f"{path} holds neither MNIST IDX files ({', '.join(IDX_STEMS)}) nor {NPZ_NAME}"
        )
    return replace(data, path=str(path.resolve()))


def load_idx_folder(folder: Path) -> MnistData:
    """Read the four MNIST IDX files (``.gz`` or plain) of ``folder``."""
    found = _idx_files(folder)
    missing = [stem for stem in IDX_STEMS if stem not in found]
    if missing:
        raise InputError(f"{folder} lacks the MNIST IDX file(s) {', '.join(missing)}")
    arrays = {stem: read_idx(found[stem]) for stem in IDX_STEMS}
    return _checked(
        [(arrays[stem], found[stem]) for stem in IDX_STEMS],
        source=f"IDX folder {folder}",
    )


def load_npz(path: Path) -> MnistData:
    """Read a keras-style ``mnist.npz`` (no pickled objects allowed)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise InputError(f"{path} lacks the array(s) {', '.join(missing)}")
            arrays = [archive[key] for key in NPZ_KEYS]
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"cannot read {path} as a numpy .npz archive: {error}") from None
    return _checked([(array, path) for array in arrays], source=f"mnist.npz {path}")


def keras_cache_candidates(settings: Settings) -> list[Path]:
    """Where ``keras.datasets.mnist`` keeps its download, most likely first."""
    # Without KERAS_HOME keras uses ~/.keras, or /tmp/.keras when the home is not writable.
    homes = [settings.keras_home] if settings.keras_home else []
    homes += [Path.home() / ".keras", KERAS_FALLBACK_HOME]
    return [home / "datasets" / NPZ_NAME for home in homes]


def _idx_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not (path.is_file() and is_idx_path(path)):
            continue
        for stem in IDX_STEMS:
            if path.name.lower().startswith(stem):
                found.setdefault(stem, path)
    return found


def _checked(arrays: list[tuple[np.ndarray, Path]], source: str) -> MnistData:
    """Validate shapes and dtypes of (train images, train labels, test images, test labels)."""
    (
        (train_x, train_x_path),
        (train_y, train_y_path),
        (test_x, test_x_path),
        (test_y, test_y_path),
    ) = arrays
    train_images = _images(train_x, train_x_path)
    test_images = _images(test_x, test_x_path)
    train_labels = _labels(train_y, train_y_path, len(train_images))
    test_labels = _labels(test_y, test_y_path, len(test_images))
    fingerprint = _fingerprint(test_images.tobytes())
    return MnistData(train_images, train_labels, test_images, test_labels, source, "", fingerprint)


def _fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:16]


def _images(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or len(array) == 0:
        raise InputError(
            f"{path}: expected images shaped (N, {IMAGE_SIDE}, {IMAGE_SIDE}), got {array.shape}"
        )
    return _as_uint8(array, path)


def _labels(array: np.ndarray, path: Path, count: int) -> np.ndarray:
    if array.shape != (count,):
        raise InputError(f"{path}: expected {count} labels shaped ({count},), got {array.shape}")
    labels = _as_uint8(array, path)
    if labels.max() > 9:
        raise InputError(f"{path}: labels must be digits 0-9, found {int(labels.max())}")
    return labels


def _as_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
        raise InputError(f"{path}: expected bytes 0-255, got {array.dtype} values")
    return array.astype(np.uint8)


def _download() -> MnistData:
    """Last resort: ``keras.datasets.mnist.load_data()`` (needs keras and the internet)."""
    try:
        (train_x, train_y), (test_x, test_y) = _keras_load_data()
    except ImportError:
        raise DataUnavailableError(
            f"no MNIST found and keras is not installed to download it; {HOW_TO_PROVIDE}"
        ) from None
    except Exception as error:  # keras raises bare Exception for failed downloads
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataUnavailableError(
            f"no MNIST found and the keras download failed ({reason}); {HOW_TO_PROVIDE}"
        ) from None
    origin = Path("keras download")
    arrays = [(train_x, origin), (train_y, origin), (test_x, origin), (test_y, origin)]
    return _checked(arrays, source="keras download (cached in ~/.keras/datasets/mnist.npz)")


def _keras_load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    from training.tensorflow_logs import import_tensorflow_quietly

    import_tensorflow_quietly()  # keras loads TensorFlow
    from keras.datasets import mnist

    return mnist.load_data()
