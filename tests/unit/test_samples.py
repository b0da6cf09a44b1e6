"""aeq samples: the README's inputs, made from MNIST test digits, clean or noisy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aeq.core.errors import OutputExistsError
from aeq.files.inputs import open_images
from aeq.samples import mnist_test_digits, noisy_pixels, samples


@pytest.fixture
def mnist_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = np.zeros(20, np.uint8)
    np.savez(path, x_train=images, y_train=labels, x_test=images[:10], y_test=labels[:10])
    return path


def test_noisy_samples_are_the_test_digits_with_the_articles_noise(mnist_npz, tmp_path):
    samples(tmp_path / "noisy.npy", count=6, noise=0.5, seed=1, data=mnist_npz, overwrite=False)
    written = np.load(tmp_path / "noisy.npy")
    clean = mnist_test_digits(6, mnist_npz)
    assert written.shape == (6, 28, 28) and written.dtype == np.uint8
    np.testing.assert_array_equal(written, noisy_pixels(clean, 0.5, 1))
    assert np.abs(written.astype(int) - clean).mean() > 20  # really noisy


def test_samples_as_a_png_folder_are_a_valid_job_input(mnist_npz, tmp_path):
    samples(tmp_path / "digits", count=5, noise=0.0, seed=0, data=mnist_npz, overwrite=False)
    source = open_images([tmp_path / "digits"])
    assert source.total == 5
    ((_, pixels),) = source.chunks(5)
    np.testing.assert_array_equal(pixels, mnist_test_digits(5, mnist_npz))


def test_samples_never_replace_an_output_unasked(mnist_npz, tmp_path):
    (tmp_path / "noisy.npy").write_bytes(b"mine")
    with pytest.raises(OutputExistsError):
        samples(tmp_path / "noisy.npy", count=2, noise=0.5, seed=0, data=mnist_npz, overwrite=False)
    assert (tmp_path / "noisy.npy").read_bytes() == b"mine"
