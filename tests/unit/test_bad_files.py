"""Every bad input is refused before anything is queued, with one line naming the file and why."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import resource
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aeq.core.errors import InputError
from aeq.files.inputs import open_codes, open_images
from aeq.repository import ModelRepository
from tests.unit.input_support import (
    HOSTILE_FILES,
    SIDE,
    digits,
    huge_png,
    idx_header,
    npy_header,
    save_png,
    write_idx,
)
from tests.unit.worker_support import tiny_repository


def refused(paths: list[Path], match: str, resize: bool = False) -> str:
    """Assert that opening ``paths`` raises one InputError line naming the culprit file."""
    with pytest.raises(InputError, match=match) as caught:
        open_images(paths, resize=resize)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- Image files ----------------------------------------------------------------------------


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(digits(1)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def test_truncated_png(tmp_path: Path) -> None:
    data = _png_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    message = refused([path], "corrupt or truncated")
    assert str(path) in message


def test_png_with_a_flipped_byte_in_its_pixel_data(tmp_path: Path) -> None:
    data = bytearray(_png_bytes())
    idat = data.index(b"IDAT")
    data[idat + 20] ^= 0xFF
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    assert str(path) in refused([path], "corrupt or truncated")


def test_png_with_a_broken_chunk_checksum(tmp_path: Path) -> None:
    data = bytearray(_png_bytes())
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    data[idat + 4 + length] ^= 0xFF  # the IDAT CRC: pixels decode, only the checksum says no
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    assert str(path) in refused([path], r"corrupt or truncated: .*checksum")


@pytest.mark.parametrize("length", [10, 20, 40])
def test_png_cut_inside_its_header(tmp_path: Path, length: int) -> None:
    (tmp_path / "stub.png").write_bytes(_png_bytes()[:length])
    refused([tmp_path / "stub.png"], r"stub\.png is corrupt or truncated")


def test_truncated_jpeg(tmp_path: Path) -> None:
    Image.fromarray(digits(1)[0]).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    assert str(tmp_path / "cut.jpg") in refused([tmp_path / "cut.jpg"], "corrupt or truncated")


def test_empty_file(tmp_path: Path) -> None:
    for name in ("empty.png", "empty.npy", "empty.npz", "empty-idx3-ubyte"):
        (tmp_path / name).touch()
        refused([tmp_path / name], rf"{name} is empty \(0 bytes\)")


def test_text_with_an_image_extension(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    refused([tmp_path / "notes.png"], r"notes\.png is not a PNG, JPEG or BMP image")


def test_other_image_formats_renamed_to_png_are_refused(tmp_path: Path) -> None:
    Image.fromarray(digits(1)[0]).save(tmp_path / "gif.png", format="GIF")
    refused([tmp_path / "gif.png"], r"gif\.png is not a PNG, JPEG or BMP image")


def test_wrong_size_without_resize(tmp_path: Path) -> None:
    save_png(tmp_path / "small.png", np.zeros((27, 28), np.uint8))
    refused([tmp_path / "small.png"], r"small\.png is 28x27 pixels, not 28x28 \(pass --resize")


def test_bad_file_inside_a_folder_is_named(tmp_path: Path) -> None:
    save_png(tmp_path / "in" / "a.png", digits(1)[0])
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "sub" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    save_png(tmp_path / "in" / "c.png", digits(1)[0])
    assert str(tmp_path / "in" / "sub" / "b.png") in refused([tmp_path / "in"], "b.png")


def test_first_bad_input_is_the_one_reported(tmp_path: Path) -> None:
    good = save_png(tmp_path / "good.png", digits(1)[0])
    (tmp_path / "bad1.png").touch()
    (tmp_path / "bad2.png").write_text("x")
    refused([good, tmp_path / "bad1.png", tmp_path / "bad2.png"], "bad1")


# --- Paths ----------------------------------------------------------------------------------


def test_no_inputs_at_all() -> None:
    refused([], "no input given")


def test_missing_path(tmp_path: Path) -> None:
    refused([tmp_path / "nowhere.png"], r"nowhere\.png does not exist")


def test_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    refused([tmp_path / "link.png"], r"link\.png does not exist")


def test_unreadable_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    refused([tmp_path / "file" / "x.png"], r"cannot read .*file/x\.png: Not a directory")


def test_unreadable_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_png(tmp_path / "locked.png", digits(1)[0])
    real_open = Image.open

    def denied(file: object, *args: object, **kwargs: object) -> Image.Image:
        if Path(str(file)) == path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)  # type: ignore[arg-type]

    # The tests run as root, which chmod cannot lock out; fail the open the way the OS would.
    monkeypatch.setattr(Image, "open", denied)
    refused([path], r"cannot read .*locked\.png: Permission denied")


def test_folder_without_usable_files(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hi")
    save_png(tmp_path / "docs" / ".hidden.png", digits(1)[0])
    refused([tmp_path / "docs"], r"folder .*docs holds no PNG.*\(1 other files skipped\)")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    refused([tmp_path / "nothing"], "holds no PNG")


def test_unsupported_file_given_directly(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("1,2,3")
    refused([tmp_path / "data.csv"], r"data\.csv is not an input aeq reads")


# --- Arrays ---------------------------------------------------------------------------------


def test_npy_holding_python_objects_is_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "objects.npy"
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = {"a": 1}, [1, 2]
    np.save(path, objects, allow_pickle=True)
    message = refused([path], r"objects\.npy holds Python objects")
    assert "never unpickles" in message


def test_npz_holding_python_objects(tmp_path: Path) -> None:
    objects = np.array([digits(1)[0], "x"], dtype=object)
    np.savez(tmp_path / "o.npz", images=objects, allow_pickle=True)
    refused([tmp_path / "o.npz"], r"o\.npz\[images\] holds Python objects")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_refused(tmp_path: Path, value: float) -> None:
    images = digits(4).astype(np.float32) / 255
    images[2, 3, 4] = value
    np.save(tmp_path / "bad.npy", images)
    refused([tmp_path / "bad.npy"], r"bad\.npy holds NaN or infinite values \(first in item 2\)")


def test_floats_outside_0_1(tmp_path: Path) -> None:
    np.save(tmp_path / "raw.npy", digits(3).astype(np.float32))  # 0-255 as floats: not scaled
    message = refused([tmp_path / "raw.npy"], r"raw\.npy holds values from 0 to 2\d\d")
    assert "floats must be in [0, 1]" in message


def test_integers_outside_0_255(tmp_path: Path) -> None:
    images = digits(3).astype(np.int16)
    images[1, 0, 0] = -1
    np.save(tmp_path / "neg.npy", images)
    refused([tmp_path / "neg.npy"], r"neg\.npy holds values from -1 .*first bad in item 1")
    np.save(tmp_path / "wide.npy", np.full((2, SIDE, SIDE), 1000, np.uint16))
    refused([tmp_path / "wide.npy"], r"integers must be in 0-255")


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((3, SIDE, SIDE), bool), "dtype bool"),
        (np.zeros((3, SIDE, SIDE), np.complex64), "dtype complex64"),
        (np.zeros((3, 27, SIDE), np.uint8), r"28x27 images, not 28x28 \(pass --resize"),
        (np.zeros((3, 100), np.float32), r"shape \(3, 100\).*N x 784"),
        (np.zeros((3, 64), np.float32), "codes\\? decode them"),
        (np.zeros((SIDE, SIDE), np.uint8), r"shape \(28, 28\)"),
        (np.zeros(784, np.uint8), r"shape \(784,\)"),
        (np.zeros((0, SIDE, SIDE), np.uint8), "holds no images"),
        (np.zeros((2, 2, SIDE, SIDE), np.uint8), r"shape \(2, 2, 28, 28\)"),
        (np.zeros((), np.uint8), r"holds no images"),
    ],
    ids=["bool", "complex", "27x28", "flat100", "codes", "single", "1-d", "empty", "4-d", "0-d"],
)
def test_bad_array_dtype_or_shape(tmp_path: Path, array: np.ndarray, match: str) -> None:
    np.save(tmp_path / "a.npy", array)
    assert str(tmp_path / "a.npy") in refused([tmp_path / "a.npy"], match)


def test_structured_dtype(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.zeros(3, dtype=[("x", np.uint8), ("y", np.float32)]))
    refused([tmp_path / "s.npy"], "structured dtype")


def test_fortran_order_is_refused_with_a_hint(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.asfortranarray(digits(3)))
    refused([tmp_path / "f.npy"], r"Fortran order.*ascontiguousarray")


def test_truncated_and_padded_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", digits(4))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-100])
    refused([tmp_path / "t.npy"], r"t\.npy is truncated")
    (tmp_path / "t.npy").write_bytes(data + b"extra")
    refused([tmp_path / "t.npy"], r"t\.npy has trailing data")


def test_not_an_npy_file(tmp_path: Path) -> None:
    (tmp_path / "fake.npy").write_text("hello")
    refused([tmp_path / "fake.npy"], r"fake\.npy is not a valid \.npy array")


def test_npz_that_is_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "fake.npz").write_text("hello")
    refused([tmp_path / "fake.npz"], r"fake\.npz is not a readable \.npz archive")


def test_npz_with_a_corrupted_member(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", images=digits(10))  # stored: the bytes are the pixels
    data = bytearray((tmp_path / "c.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "c.npz").write_bytes(bytes(data))
    refused([tmp_path / "c.npz"], r"c\.npz\[images\].*(CRC|corrupt|Bad)")


def _garbled_at_the_start_of_its_data(path: Path, member: str) -> Path:
    """Overwrite the first compressed bytes of a zip member (deflate then fails at once)."""
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo(member).header_offset
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[offset + 26 : offset + 30])
    start = offset + 30 + name_length + extra_length
    data[start : start + 4] = b"\xff" * 4
    path.write_bytes(bytes(data))
    return path


def test_npz_whose_deflated_member_is_garbage_from_the_start(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "g.npz", images=digits(3))
    _garbled_at_the_start_of_its_data(tmp_path / "g.npz", "images.npy")
    refused([tmp_path / "g.npz"], r"cannot read .*g\.npz\[images\]: .*invalid block type")
    np.savez_compressed(tmp_path / "c.npz", codes=np.zeros((2, 4), np.float32), version=2)
    _garbled_at_the_start_of_its_data(tmp_path / "c.npz", "version.npy")
    codes_refused(tmp_path / "c.npz", r"cannot read .*c\.npz\[version\]: .*invalid block type")


def test_npz_with_ambiguous_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "mnist.npz", x_train=digits(2), x_test=digits(2), y_train=np.arange(2))
    message = refused([tmp_path / "mnist.npz"], r"mnist\.npz holds several arrays")
    assert "x_test, x_train, y_train" in message and "'images'" in message


def test_npz_names_that_do_not_fit(tmp_path: Path) -> None:
    np.savez(tmp_path / "n.npz", images=digits(3), names=np.array(["a", "b"]))
    refused([tmp_path / "n.npz"], r"n\.npz\[names\] must hold 3 strings")


# --- IDX --------------------------------------------------------------------------------------


def test_idx_labels_file_gets_a_hint(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    refused([path], r"labels-idx1-ubyte\.gz is an IDX labels file.*pass the images file")


def test_truncated_idx(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte", digits(5))
    path.write_bytes(path.read_bytes()[:-10])
    refused([path], r"idx3-ubyte is truncated")
    zipped = tmp_path / "t10k-images-idx3-ubyte.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    refused([zipped], r"idx3-ubyte\.gz is truncated")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", digits(50))
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # the CRC of the uncompressed data, checked only at the end
    path.write_bytes(bytes(data))
    refused([path], r"cannot read .*idx3-ubyte\.gz")


def test_gzip_whose_compressed_data_is_garbage_from_the_start(tmp_path: Path) -> None:
    whole = gzip.compress(bytes(100))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(whole[:10] + b"\xff" * 20 + whole[-8:])  # gzip header intact, deflate not
    refused([path], r"cannot read IDX file .*idx3-ubyte\.gz: .*invalid block type")


def test_idx_of_another_type(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + (4).to_bytes(4, "big") + bytes(16))
    refused([path], r"IDX type 0x0d is not unsigned bytes")


def test_idx_with_a_bad_magic_number(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04 not idx at all")
    refused([path], r"is not an IDX file \(bad magic number\)")


# --- Codes ------------------------------------------------------------------------------------


def codes_refused(path: Path, match: str) -> None:
    with pytest.raises(InputError, match=match) as caught:
        open_codes(path)
    assert "\n" not in str(caught.value)


def test_codes_with_nan(tmp_path: Path) -> None:
    codes = np.zeros((4, 8), np.float32)
    codes[3, 1] = np.nan
    np.save(tmp_path / "c.npy", codes)
    codes_refused(tmp_path / "c.npy", r"c\.npy holds NaN or infinite values \(first in code 3\)")


@pytest.mark.parametrize(
    "array", [np.zeros((3, 8), np.int32), np.zeros((3, 2, 4), np.float32), np.zeros((0, 8))]
)
def test_codes_of_the_wrong_kind(tmp_path: Path, array: np.ndarray) -> None:
    np.save(tmp_path / "c.npy", array)
    codes_refused(tmp_path / "c.npy", r"c\.npy holds .*codes must be a non-empty N x code_dim")


def test_codes_sidecar_that_does_not_fit(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.zeros((3, 8), np.float32))
    sidecar = tmp_path / "c.npy.json"
    sidecar.write_text(json.dumps({"format": "aeq-codes", "names": ["a", "b"]}))
    codes_refused(tmp_path / "c.npy", r"names 2 items but the array holds 3")
    sidecar.write_text(json.dumps({"format": "aeq-codes", "code_dim": 64}))
    codes_refused(tmp_path / "c.npy", r"codes of 64 numbers, the array has 8")
    sidecar.write_text(json.dumps({"format": "aeq-codes", "version": "2"}))
    codes_refused(tmp_path / "c.npy", r"\"version\" must be a int")
    sidecar.write_text("{not json")
    codes_refused(tmp_path / "c.npy", r"cannot read the codes metadata .*c\.npy\.json")
    sidecar.write_text(json.dumps({"names": []}))
    codes_refused(tmp_path / "c.npy", r"is not aeq codes metadata")


def test_codes_npz_metadata_of_the_wrong_kind(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", codes=np.zeros((2, 4), np.float32), model=np.array([1, 2]))
    codes_refused(tmp_path / "c.npz", r"c\.npz\[model\] must be a single str")


def test_codes_from_the_wrong_kind_of_file(tmp_path: Path) -> None:
    save_png(tmp_path / "x.png", digits(1)[0])
    codes_refused(tmp_path / "x.png", r"codes must be a \.npy or \.npz file")
    codes_refused(tmp_path / "missing.npy", r"missing\.npy does not exist")
    with zipfile.ZipFile(tmp_path / "two.npz", "w") as archive:
        archive.writestr("a.npy", b"")
        archive.writestr("b.npy", b"")
    codes_refused(tmp_path / "two.npz", r"several arrays \(a, b\) but none named 'codes'")


# --- Headers that declare more than the file holds -------------------------------------------

# What opening a refused file may allocate: a read block (4 MiB) and change, never per item.
OPEN_PEAK_BYTES = 16 * 2**20


def refused_within_memory(paths: list[Path], match: str) -> str:
    """``refused``, also asserting that opening allocated at most ``OPEN_PEAK_BYTES``."""
    tracemalloc.start()
    try:
        message = refused(paths, match)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < OPEN_PEAK_BYTES, f"opening allocated {peak / 2**20:.0f} MiB"
    return message


def test_a_gzip_that_holds_less_than_it_plausibly_declares_stops_at_its_first_short_block(
    tmp_path: Path,
) -> None:
    # 800 KB of noise does not compress, so a million images (784 MB) is within deflate's
    # 1032:1 of the file's size: only reading can tell, and names must not be made up front.
    noise = np.random.default_rng(0).integers(0, 256, 800_000, dtype=np.uint8).tobytes()
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header((1_000_000, SIDE, SIDE)) + noise, compresslevel=1))
    refused_within_memory(
        [path], r"idx3-ubyte\.gz is truncated: its header promises 1000000 items, .* after 1020"
    )


def _with_listed_sizes(path: Path, file_size: int | None = None, compress_size: int | None = None):
    """Rewrite the sizes a zip's central directory lists for its only member (where zipfile
    reads them), leaving the data as it is."""
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")
    for value, offset in ((compress_size, 20), (file_size, 24)):
        if value is not None:
            data[entry + offset : entry + offset + 4] = value.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_zip_directory_listing_more_than_its_member_can_unpack_to(
    tmp_path: Path, compression: int
) -> None:
    declared = npy_header((5_000_000, SIDE, SIDE))  # 3.9 GB, what the directory will claim
    with zipfile.ZipFile(tmp_path / "lie.npz", "w", compression) as archive:
        archive.writestr("images.npy", declared + bytes(SIDE * SIDE))
    _with_listed_sizes(tmp_path / "lie.npz", file_size=len(declared) + 5_000_000 * SIDE * SIDE)
    refused_within_memory(
        [tmp_path / "lie.npz"], r"lie\.npz\[images\] is corrupt: the archive says \d+ compressed"
    )


def test_a_zip_directory_listing_more_compressed_bytes_than_the_file_holds(
    tmp_path: Path,
) -> None:
    np.savez_compressed(tmp_path / "cut.npz", images=digits(3))
    _with_listed_sizes(tmp_path / "cut.npz", compress_size=2**31)
    refused_within_memory([tmp_path / "cut.npz"], r"cut\.npz\[images\] is truncated")


def test_a_npz_member_whose_header_declares_more_than_the_member_holds(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "short.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", npy_header((1000, SIDE, SIDE)) + bytes(SIDE * SIDE))
    refused_within_memory(
        [tmp_path / "short.npz"],
        r"short\.npz\[images\] is truncated: its header promises 784000 bytes of data, "
        r"the archive member holds 784$",
    )


@pytest.mark.parametrize("descr", ["<f8", "<i8", "|u1"])
def test_a_npy_declaring_more_than_int64_can_count(tmp_path: Path, descr: str) -> None:
    (tmp_path / "wrap.npy").write_bytes(npy_header((2**62, SIDE, SIDE), descr))
    refused_within_memory([tmp_path / "wrap.npy"], r"wrap\.npy is truncated: .*holds 0$")


def test_array_items_too_large_to_be_digits_are_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "wide-idx3-ubyte"
    header = idx_header((1, 9000, 9000))
    path.write_bytes(header)
    os.truncate(path, len(header) + 9000 * 9000)  # sparse: the right size, no data written
    refused_within_memory([path], r"holds 9000x9000 images, too large to be digit images")
    with pytest.raises(InputError, match="too large"):
        open_images([path], resize=True)


# --- Hostile files through the real CLI -------------------------------------------------------

# Files of a few hundred bytes whose headers declare billions of items or pixels. The CLI runs
# under an address-space cap far below what trusting those headers would allocate, and must
# answer within seconds (a hang guard, not a timing target).
CLI_MEMORY_CAP_BYTES = 1024**3
CLI_TIMEOUT_S = 60
CLI_FAST_S = 5.0
AEQ = Path(sys.executable).parent / "aeq"


@pytest.fixture(scope="module")
def cli_repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    return tiny_repository(tmp_path_factory.mktemp("models") / "repository")


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CLI_MEMORY_CAP_BYTES, CLI_MEMORY_CAP_BYTES))


def run_capped(
    repository: ModelRepository, *args: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``aeq ARGS`` in local mode under the memory cap; the result and its wall time."""
    env = {key: value for key, value in os.environ.items() if key != "AEQ_BROKER_URL"}
    env.update(AEQ_MODEL_REPOSITORY=str(repository.root), AEQ_PROVIDERS="cpu")
    started = time.monotonic()
    result = subprocess.run(
        [str(AEQ), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        preexec_fn=_cap_memory,
    )
    return result, time.monotonic() - started


def test_the_memory_cap_leaves_room_for_a_real_job(
    tmp_path: Path, cli_repository: ModelRepository
) -> None:
    np.save(tmp_path / "good.npy", digits(10))
    result, _ = run_capped(
        cli_repository, "reconstruct", str(tmp_path / "good.npy"), "-o", str(tmp_path / "out.npy")
    )
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "out.npy").shape == (10, SIDE, SIDE)


@pytest.mark.parametrize(("make", "match"), list(HOSTILE_FILES.values()), ids=list(HOSTILE_FILES))
def test_a_tiny_file_declaring_a_huge_array_is_refused_at_once(
    tmp_path: Path,
    cli_repository: ModelRepository,
    make: Callable[[Path], Path],
    match: str,
) -> None:
    bad = make(tmp_path)
    out = tmp_path / "out"

    result, seconds = run_capped(cli_repository, "reconstruct", str(bad), "-o", str(out))

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines[-5:]
    assert re.search(match, lines[0]), lines[0]
    assert not out.exists() and os.listdir(tmp_path) == [bad.name]
    assert seconds < CLI_FAST_S


def test_a_huge_image_is_resized_within_the_memory_cap(
    tmp_path: Path, cli_repository: ModelRepository
) -> None:
    big = huge_png(tmp_path)  # converted whole, its 16-bit pixels took 1.4 GB
    out = tmp_path / "out.npy"

    result, _ = run_capped(cli_repository, "reconstruct", str(big), "--resize", "-o", str(out))

    assert result.returncode == 0, result.stderr[-2000:]
    assert np.load(out).shape == (1, SIDE, SIDE)
