"""Bad inputs and outputs are refused before anything is queued: one line, non-zero, nothing left.

Run through the CLI with a broker configured: a refused command must leave no job in Redis and
no output on disk.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from PIL import Image

from tests.unit.input_support import HOSTILE_FILES

pytestmark = pytest.mark.integration
# A refusal reads a header, not the file's declared billions of items (a hang guard).
HOSTILE_REFUSAL_S = 10.0


def _corrupt_png(folder):
    path = folder / "corrupt.png"
    good = folder / "good.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(good)
    path.write_bytes(good.read_bytes()[:40])
    return path


def _empty(folder):
    path = folder / "empty.png"
    path.write_bytes(b"")
    return path


def _text_as_png(folder):
    path = folder / "notes.png"
    path.write_text("these are not pixels\n")
    return path


def _object_npy(folder):
    path = folder / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return path


def _nan_npy(folder):
    path = folder / "nan.npy"
    images = np.zeros((4, 28, 28), np.float32)
    images[2, 3, 4] = np.nan
    np.save(path, images)
    return path


def _inf_npy(folder):
    path = folder / "inf.npy"
    images = np.zeros((4, 784), np.float32)
    images[1, 0] = np.inf
    np.save(path, images)
    return path


def _wrong_size_png(folder):
    path = folder / "big.png"
    Image.fromarray(np.zeros((32, 40), np.uint8)).save(path)
    return path


BAD_INPUTS = [_corrupt_png, _empty, _text_as_png, _object_npy, _nan_npy, _inf_npy, _wrong_size_png]


@pytest.mark.parametrize("make", BAD_INPUTS, ids=lambda make: make.__name__.strip("_"))
def test_bad_input_is_refused_before_queuing(service, redis_server, tmp_path, make):
    bad = make(tmp_path)
    out = tmp_path / "out"

    result = service.aeq("denoise", str(bad), "-o", str(out))

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and bad.name in lines[0], lines
    assert not out.exists()
    assert redis_server.client().keys("aeq:*") == []


@pytest.mark.parametrize(("make", "match"), list(HOSTILE_FILES.values()), ids=list(HOSTILE_FILES))
def test_a_tiny_file_declaring_a_huge_array_is_refused_before_queuing(
    service, redis_server, tmp_path, make, match
):
    bad = make(tmp_path)
    out = tmp_path / "out"

    started = time.monotonic()
    result = service.aeq("denoise", str(bad), "-o", str(out))

    assert time.monotonic() - started < HOSTILE_REFUSAL_S
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(match, lines[0]), lines[-5:]
    assert not out.exists()
    assert redis_server.client().keys("aeq:*") == []


def test_wrong_size_is_accepted_with_resize(service, tmp_path):
    bad = _wrong_size_png(tmp_path)
    service.start_worker("one")
    result = service.aeq("denoise", str(bad), "-o", str(tmp_path / "out.npy"), "--resize")
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "out.npy").shape == (1, 28, 28)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet"], "model 'resnet' is not in"),
        (["--model", "../denoising"], "model name '../denoising'"),
        (["--version", "99"], "denoising has no version 99"),
    ],
)
def test_unknown_model_or_version_is_refused(service, mnist, redis_server, tmp_path, args, message):
    np.save(tmp_path / "digits.npy", mnist.test_images[:4])
    result = service.aeq("denoise", str(tmp_path / "digits.npy"), "-o", str(tmp_path / "o"), *args)
    assert result.returncode == 2 and message in result.stderr
    assert redis_server.client().keys("aeq:*") == []


def test_no_models_published_says_what_to_run(service, mnist, tmp_path):
    np.save(tmp_path / "digits.npy", mnist.test_images[:4])
    empty = {"AEQ_MODEL_REPOSITORY": str(tmp_path / "nothing")}
    result = service.aeq(
        "encode", str(tmp_path / "digits.npy"), "-o", str(tmp_path / "c.npy"), env=empty
    )
    assert result.returncode == 2 and "no models published" in result.stderr
    assert "aeq train all" in result.stderr


def test_existing_output_is_refused_unless_overwrite(service, mnist, redis_server, tmp_path):
    np.save(tmp_path / "digits.npy", mnist.test_images[:8])
    target = tmp_path / "out.npy"
    target.write_bytes(b"precious")
    refused = service.aeq("denoise", str(tmp_path / "digits.npy"), "-o", str(target))
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert target.read_bytes() == b"precious"
    assert redis_server.client().keys("aeq:*") == []
    service.start_worker("one")
    replaced = service.aeq(
        "denoise", str(tmp_path / "digits.npy"), "-o", str(target), "--overwrite"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert np.load(target).shape == (8, 28, 28)


def test_empty_folder_is_refused(service, tmp_path):
    (tmp_path / "nothing").mkdir()
    result = service.aeq("denoise", str(tmp_path / "nothing"), "-o", str(tmp_path / "out"))
    assert result.returncode == 2 and "nothing" in result.stderr
    assert not (tmp_path / "out").exists()


def test_files_skipped_inside_a_folder_are_reported(service, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "digit.png")
    (folder / "README.txt").write_text("not an image\n")
    service.start_worker("one")
    result = service.aeq("denoise", str(folder), "-o", str(tmp_path / "out.npy"))
    assert result.returncode == 0, result.stderr
    assert "skipped 1 file(s)" in result.stderr and "README.txt" in result.stderr
    assert np.load(tmp_path / "out.npy").shape == (1, 28, 28)
