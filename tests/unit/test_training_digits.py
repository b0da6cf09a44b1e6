"""``aeq train --digits``: training on some digits only, so the others can be scored as anomalies.

The filter itself is numpy (``MnistData.with_digits``); the command line's refusals run the real
``aeq`` entry point, before any TensorFlow is loaded.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_training_cli import run_aeq

from training.data import MnistData, digits_text, parse_digits


@pytest.mark.parametrize(
    ("text", "digits"),
    [("0-8", tuple(range(9))), ("9", (9,)), ("1,3,5", (1, 3, 5)), ("0-2, 7,1", (0, 1, 2, 7))],
)
def test_digits_are_single_digits_ranges_and_commas(text, digits):
    assert parse_digits(text) == digits


@pytest.mark.parametrize("text", ["", "10", "8-0", "a", "0-9-", "-3", "1,,2"])
def test_anything_else_is_refused(text):
    with pytest.raises(ValueError):
        parse_digits(text)


def test_digits_read_back_as_ranges():
    assert digits_text((0, 1, 2, 3, 5, 7, 8)) == "0-3,5,7-8"
    assert digits_text((4,)) == "4"


def test_with_digits_keeps_those_digits_in_training_and_test_and_says_so():
    labels = np.arange(20, dtype=np.uint8) % 10
    images = np.arange(20, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)
    data = MnistData(images, labels, images[:10], labels[:10], "IDX folder x")

    kept = data.with_digits(range(9))

    assert 9 not in kept.train_labels and 9 not in kept.test_labels
    assert len(kept.train_images) == 18 and len(kept.test_images) == 9
    np.testing.assert_array_equal(kept.train_images[:, 0, 0], np.r_[0:9, 10:19])
    assert kept.source == "IDX folder x, digits 0-8 only"
    assert data.with_digits(None) is data
    with pytest.raises(ValueError, match="within 0-9"):
        data.with_digits([10])


def test_the_command_refuses_bad_digits_before_loading_anything(tmp_path):
    result = run_aeq(["conv", "--digits", "0-12", "--out", str(tmp_path / "out")], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "digits are 0-9" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
