"""Small helpers the integration tests share: references computed without aeq's worker code."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

from aeq.core.catalog import Graph, model_spec
from aeq.core.noise import add_noise
from aeq.repository import ModelRepository


def noisy(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The article's corruption, back to uint8 pixels."""
    corrupted = add_noise(images.astype(np.float32) / 255.0, np.random.default_rng(seed))
    return np.rint(corrupted * 255.0).astype(np.uint8)


def psnr(images: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over a whole set of uint8 images."""
    error = np.mean((images.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / error))


def reference_run(repository: Path, model: str, graph: Graph, inputs: np.ndarray) -> np.ndarray:
    """Run one published graph with a plain ONNX Runtime session in this process.

    Images go in as float32 /255 in the model's layout; the raw float output comes back.
    """
    version = ModelRepository(repository).get(model)
    session = onnxruntime.InferenceSession(
        version.read_verified(graph), providers=["CPUExecutionProvider"]
    )
    spec = model_spec(model)
    if graph is Graph.DECODER:
        feed = inputs.astype(np.float32)
    else:
        feed = (inputs.astype(np.float32) / 255.0).reshape(len(inputs), *spec.input_dims)
    info = version.graph(graph)
    return session.run([info.output.name], {info.input.name: feed})[0]


def to_pixels(output: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(output, 0, 1) * 255).astype(np.uint8).reshape(len(output), 28, 28)


def assert_same_pixels(actual: np.ndarray, expected: np.ndarray) -> None:
    """The worker's pixels against a reference run: same shape, at most one grey level apart.

    The worker runs 512-image chunks and the reference one whole array; ONNX Runtime's CPU kernels
    may sum in another order for another batch size, and an output near a half grey level then
    rounds the other way (CI saw 15 of 1.6 million conv pixels off by one)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.abs(actual.astype(int) - expected.astype(int)).max() <= 1


def read_png_folder(folder: Path) -> tuple[list[str], np.ndarray]:
    """Every PNG in ``folder`` (sorted by name) as uint8 (N, 28, 28)."""
    files = sorted(folder.glob("*.png"))
    return [f.name for f in files], np.stack([np.asarray(Image.open(f)) for f in files])


def read_codes(path: Path) -> tuple[np.ndarray, dict]:
    """A codes ``.npy`` and its sidecar metadata."""
    codes = np.load(path, allow_pickle=False)
    meta = json.loads(Path(f"{path}.json").read_text())
    return codes, meta


def wait_for(predicate, timeout_s: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true (returned), or fail after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
