"""Helpers for the export tests: held-out images and briefly-fitted trained-model folders.

Images are real MNIST test images where ``AEQ_DATA_DIR`` points at an IDX folder (``make test``
sets it when ../shared/data/mnist exists) and generated digit-like strokes elsewhere, so the tests
run on a clean machine without internet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aeq.core.catalog import IMAGE_SIDE, MODELS
from aeq.core.settings import load_settings

FIT_IMAGES = 256
FIT_BATCH_SIZE = 64
PARITY_IMAGES = 128
# Generated images: this many random strokes, drawn on a coarse grid and scaled up, then blurred.
_STROKES = 6
_COARSE = 7


def held_out_images(count: int = PARITY_IMAGES) -> tuple[np.ndarray, str]:
    """``count`` float32 images (N, 28, 28) in [0, 1] and where they came from."""
    data_dir = load_settings().data_dir
    test_file = next(iter(sorted(data_dir.glob("t10k-images*")))) if data_dir else None
    if test_file is not None:
        from aeq.core.idx import read_idx

        return read_idx(test_file)[-count:].astype(np.float32) / 255.0, f"MNIST {test_file}"
    return generated_images(count, seed=1), "generated strokes"


def generated_images(count: int, seed: int = 0) -> np.ndarray:
    """Digit-like images: a few bright strokes on black, soft edges, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = np.zeros((count, _COARSE, _COARSE), dtype=np.float32)
    for _ in range(_STROKES):
        rows = rng.integers(1, _COARSE - 1, count)
        cols = rng.integers(1, _COARSE - 1, count)
        coarse[np.arange(count), rows, cols] = 1.0
    scale = IMAGE_SIDE // _COARSE
    images = np.kron(coarse, np.ones((scale, scale), dtype=np.float32))
    blurred = (images + np.roll(images, 1, 1) + np.roll(images, 1, 2)) / 2.0
    return np.clip(blurred, 0.0, 1.0)


def write_trained(
    folder: Path, name: str, images: np.ndarray, collapsed: bool = False, seed: int = 0
) -> Path:
    """Build ``name``, fit it one short epoch on ``images`` and save it as ``aeq train`` does."""
    import keras

    from training.architectures import build

    keras.utils.set_random_seed(seed)
    spec = MODELS[name]
    inputs = images[:FIT_IMAGES].reshape(-1, *spec.input_dims)
    model = build(name)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(inputs, inputs, batch_size=FIT_BATCH_SIZE, epochs=1, verbose=0)
    target = folder / name
    target.mkdir(parents=True, exist_ok=True)
    model.save(target / "model.keras")
    test_mse = float(np.mean((model.predict(inputs, verbose=0) - inputs) ** 2))
    write_record(target, name, collapsed=collapsed, test_mse=test_mse, seed=seed)
    return target


def write_record(
    folder: Path, name: str, collapsed: bool = False, test_mse: float = 0.05, seed: int = 0
) -> None:
    """A minimal ``record.json`` with the fields export reads and records."""
    record = {
        "model": name,
        "collapsed": collapsed,
        "test_mse": test_mse,
        "epochs_run": 1,
        "duration_s": 1.0,
        "data_source": "export tests",
        "seed": seed,
        "libraries": {},
    }
    (folder / "record.json").write_text(json.dumps(record))
