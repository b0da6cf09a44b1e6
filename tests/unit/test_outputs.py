"""Writers take chunks in any order, publish only complete outputs, and leave nothing on failure."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aeq.core.errors import AeqError, JobError, OutputExistsError, UsageError
from aeq.files.inputs import open_codes, open_images
from aeq.files.outputs import open_code_output, open_image_output
from tests.unit.input_support import SIDE, digits, read_all

CHUNK = 4


def names_for(count: int) -> list[str]:
    return [f"item{index:03d}" for index in range(count)]


def write_shuffled(writer: object, names: list[str], array: np.ndarray, seed: int = 0) -> None:
    """Write ``array`` in chunks of ``CHUNK``, in a shuffled order, like results from workers."""
    starts = list(range(0, len(array), CHUNK))
    np.random.default_rng(seed).shuffle(starts)
    for start in starts:
        stop = start + CHUNK
        writer.write(start, names[start:stop], array[start:stop])  # type: ignore[attr-defined]


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- Image outputs -------------------------------------------------------------------------


def test_npy_output_out_of_order(tmp_path: Path) -> None:
    images = digits(10)
    with open_image_output(tmp_path / "out.npy", len(images), overwrite=False) as writer:
        write_shuffled(writer, names_for(10), images)
        assert not (tmp_path / "out.npy").exists()  # only the hidden staged file so far
        assert all(name.startswith(".out.npy.partial-") for name in listing(tmp_path))
        assert writer.commit() == tmp_path / "out.npy"
    loaded = np.load(tmp_path / "out.npy", allow_pickle=False)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, images)
    assert listing(tmp_path) == ["out.npy"]


def test_npz_output_holds_images_and_names(tmp_path: Path) -> None:
    images = digits(9)
    names = [f"n{index}" for index in range(9)]
    with open_image_output(tmp_path / "out.npz", 9, overwrite=False) as writer:
        write_shuffled(writer, names, images)
        writer.commit()
    with np.load(tmp_path / "out.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["images", "names"]
        assert np.array_equal(archive["images"], images)
        assert archive["names"].tolist() == names and archive["names"].dtype.kind == "U"
    assert listing(tmp_path) == ["out.npz"]
    # aeq reads its own output back, names included.
    back_names, back = read_all(open_images([tmp_path / "out.npz"]))
    assert back_names == names and np.array_equal(back, images)


def test_png_folder_output(tmp_path: Path) -> None:
    images = digits(10)
    with open_image_output(tmp_path / "pngs", 10, overwrite=False) as writer:
        write_shuffled(writer, names_for(10), images)
        writer.commit()
    assert listing(tmp_path) == ["pngs"]
    assert listing(tmp_path / "pngs") == [f"{name}.png" for name in names_for(10)]
    for index, name in enumerate(names_for(10)):
        with Image.open(tmp_path / "pngs" / f"{name}.png") as image:
            assert image.mode == "L" and image.format == "PNG"
            assert np.array_equal(np.asarray(image), images[index])


def test_png_names_are_sanitised_and_never_escape(tmp_path: Path) -> None:
    hostile = ["../../etc/passwd", "/abs/path", "x", "X", "x", ".hidden", "a\x00b", "ü/..", "", ""]
    images = digits(len(hostile))
    out = tmp_path / "deep" / "pngs"
    with open_image_output(out, len(hostile), overwrite=False) as writer:
        write_shuffled(writer, hostile, images)
        writer.commit()
    files = listing(out)
    assert files == sorted(
        [
            "etc_passwd.png", "abs_path.png", "x.png", "X~2.png", "x~3.png", "hidden.png",
            "a_b.png", "ü.png", "item.png", "item~2.png",
        ]
    )  # fmt: skip
    assert listing(tmp_path) == ["deep"] and listing(tmp_path / "deep") == ["pngs"]
    with Image.open(out / "X~2.png") as image:
        assert np.array_equal(np.asarray(image), images[3])


def test_png_names_do_not_depend_on_arrival_order(tmp_path: Path) -> None:
    names = ["a", "a", "A", "a~2", "b/../a", "a"] * 2
    images = digits(len(names))
    contents = []
    for seed in range(4):
        out = tmp_path / f"run{seed}"
        with open_image_output(out, len(names), overwrite=False) as writer:
            write_shuffled(writer, names, images, seed=seed)
            writer.commit()
        contents.append(
            {path.name: np.asarray(Image.open(path)).tobytes() for path in out.iterdir()}
        )
    assert all(content == contents[0] for content in contents[1:])
    assert len(contents[0]) == len(names)


# --- Completeness, existing outputs, cleanup ------------------------------------------------


@pytest.mark.parametrize("target", ["out.npy", "out.npz", "pngs"])
def test_missing_items_fail_the_commit_and_leave_nothing(tmp_path: Path, target: str) -> None:
    images = digits(12)
    with open_image_output(tmp_path / target, 12, overwrite=False) as writer:
        writer.write(0, names_for(4), images[:4])
        writer.write(8, names_for(12)[8:], images[8:])
        with pytest.raises(
            JobError, match=r"4 of 12 items never arrived \(first missing: item 4\)"
        ):
            writer.commit()
    assert listing(tmp_path) == []


@pytest.mark.parametrize("target", ["out.npy", "out.npz", "pngs"])
def test_abort_leaves_nothing_not_even_created_folders(tmp_path: Path, target: str) -> None:
    writer = open_image_output(tmp_path / "new" / "sub" / target, 8, overwrite=False)
    writer.write(4, names_for(4), digits(4))
    writer.abort()
    writer.abort()  # idempotent
    assert listing(tmp_path) == []


def test_an_exception_inside_the_block_aborts(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="worker died"):
        with open_image_output(tmp_path / "pngs", 8, overwrite=False) as writer:
            writer.write(0, names_for(4), digits(4))
            raise RuntimeError("worker died")
    assert listing(tmp_path) == []


def test_leaving_the_block_without_commit_aborts(tmp_path: Path) -> None:
    with open_image_output(tmp_path / "out.npy", 4, overwrite=False) as writer:
        writer.write(0, names_for(4), digits(4))
    assert listing(tmp_path) == []
    with pytest.raises(ValueError, match="already aborted"):
        writer.commit()


@pytest.mark.parametrize("target", ["out.npy", "out.npz", "pngs"])
def test_existing_output_is_refused_before_anything_is_written(tmp_path: Path, target: str) -> None:
    existing = tmp_path / target
    existing.mkdir() if target == "pngs" else existing.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="exists; pass --overwrite to replace it") as caught:
        open_image_output(existing, 4, overwrite=False)
    assert "\n" not in str(caught.value)
    assert listing(tmp_path) == [target]


@pytest.mark.parametrize("target", ["out.npy", "out.npz", "pngs"])
def test_overwrite_replaces_only_at_commit(tmp_path: Path, target: str) -> None:
    existing = tmp_path / target
    old_images = digits(4, seed=1)
    with open_image_output(existing, 4, overwrite=False) as writer:
        writer.write(0, names_for(4), old_images)
        writer.commit()
    new_images = digits(4, seed=2)
    with open_image_output(existing, 4, overwrite=True) as writer:
        writer.write(0, names_for(4), new_images)
        assert np.array_equal(read_all(open_images([existing]))[1], old_images)  # still the old
        writer.commit()
    assert np.array_equal(read_all(open_images([existing]))[1], new_images)
    assert listing(tmp_path) == [target]


def test_overwrite_then_abort_keeps_the_old_output(tmp_path: Path) -> None:
    (tmp_path / "pngs").mkdir()
    (tmp_path / "pngs" / "keep.png").write_bytes(b"old")
    with open_image_output(tmp_path / "pngs", 4, overwrite=True) as writer:
        writer.write(0, names_for(4), digits(4))
    assert listing(tmp_path) == ["pngs"] and listing(tmp_path / "pngs") == ["keep.png"]


def test_overwrite_replaces_a_file_with_a_folder(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file where the folder goes")
    with open_image_output(tmp_path / "out", 4, overwrite=True) as writer:
        writer.write(0, names_for(4), digits(4))
        writer.commit()
    assert len(listing(tmp_path / "out")) == 4 and listing(tmp_path) == ["out"]


def test_output_that_appears_during_the_job_is_not_clobbered(tmp_path: Path) -> None:
    for target in ("out.npy", "pngs"):
        with open_image_output(tmp_path / target, 4, overwrite=False) as writer:
            writer.write(0, names_for(4), digits(4))
            if target == "pngs":
                (tmp_path / target).mkdir()
                (tmp_path / target / "theirs.txt").write_text("someone else's")
            else:
                (tmp_path / target).write_text("someone else's")
            with pytest.raises(OutputExistsError):
                writer.commit()
    assert listing(tmp_path) == ["out.npy", "pngs"]
    assert (tmp_path / "out.npy").read_text() == "someone else's"
    assert listing(tmp_path / "pngs") == ["theirs.txt"]


# --- Misuse ---------------------------------------------------------------------------------


def test_items_written_twice_are_refused(tmp_path: Path) -> None:
    with open_image_output(tmp_path / "out.npy", 8, overwrite=False) as writer:
        writer.write(0, names_for(4), digits(4))
        with pytest.raises(ValueError, match="overlap"):
            writer.write(2, names_for(4), digits(4))
        assert writer.items_written == 4


@pytest.mark.parametrize(
    ("start", "names", "array", "match"),
    [
        (0, ["a"], np.zeros((1, SIDE, SIDE), np.float32), "uint8"),
        (0, ["a"], np.zeros((1, SIDE * SIDE), np.uint8), "uint8"),
        (0, ["a", "b"], np.zeros((1, SIDE, SIDE), np.uint8), "2 names for 1 items"),
        (3, ["a", "b"], np.zeros((2, SIDE, SIDE), np.uint8), "outside"),
        (-1, ["a"], np.zeros((1, SIDE, SIDE), np.uint8), "outside"),
    ],
)
def test_chunks_that_do_not_fit_are_refused(
    tmp_path: Path, start: int, names: list[str], array: np.ndarray, match: str
) -> None:
    with open_image_output(tmp_path / "out.npy", 4, overwrite=False) as writer:
        with pytest.raises(ValueError, match=match):
            writer.write(start, names, array)


@pytest.mark.parametrize("target", ["out.png", "out.jpg", "out.txt", "out.npy.gz"])
def test_unknown_image_output_suffix(tmp_path: Path, target: str) -> None:
    with pytest.raises(UsageError, match="give a folder \\(no suffix\\) for PNGs, or a .npy/.npz"):
        open_image_output(tmp_path / target, 4, overwrite=False)
    assert listing(tmp_path) == []


def test_an_existing_folder_with_a_dot_is_a_png_folder(tmp_path: Path) -> None:
    (tmp_path / "results.v2").mkdir()
    with pytest.raises(OutputExistsError):
        open_image_output(tmp_path / "results.v2", 4, overwrite=False)


def test_unwritable_location_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(AeqError, match="cannot"):
        open_image_output(tmp_path / "file" / "out.npy", 4, overwrite=False)
    assert listing(tmp_path) == ["file"]


# --- Codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["codes.npy", "codes.npz"])
def test_codes_round_trip(tmp_path: Path, target: str) -> None:
    codes = np.random.default_rng(0).normal(size=(11, 64)).astype(np.float32)
    names = [f"digit/{index}" for index in range(11)]
    path = tmp_path / target
    with open_code_output(path, 11, 64, "multilayer", 3, overwrite=False) as writer:
        write_shuffled(writer, names, codes)
        writer.commit()
    source = open_codes(path)
    assert (source.total, source.code_dim, source.model, source.version) == (
        11,
        64,
        "multilayer",
        3,
    )
    read_names, read = read_all(source, size=5)
    assert read_names == [f"digit_{index}" for index in range(11)]
    assert read.dtype == np.float32 and np.array_equal(read, codes)
    expected = ["codes.npy", "codes.npy.json"] if target == "codes.npy" else ["codes.npz"]
    assert listing(tmp_path) == expected


def test_codes_npy_is_plain_and_its_sidecar_readable(tmp_path: Path) -> None:
    codes = np.ones((3, 4), np.float64)  # float64 in, float32 stored
    with open_code_output(tmp_path / "c.npy", 3, 4, "vanilla", 1, overwrite=False) as writer:
        writer.write(0, ["a", "b", "c"], codes)
        writer.commit()
    stored = np.load(tmp_path / "c.npy", allow_pickle=False)
    assert stored.dtype == np.float32 and stored.shape == (3, 4)
    meta = json.loads((tmp_path / "c.npy.json").read_text())
    assert meta["names"] == ["a", "b", "c"] and meta["model"] == "vanilla"
    assert meta["version"] == 1 and meta["code_dim"] == 4 and meta["count"] == 3


def test_codes_npz_arrays_are_plain(tmp_path: Path) -> None:
    with open_code_output(tmp_path / "c.npz", 2, 4, "sparse", 7, overwrite=False) as writer:
        writer.write(0, ["a", "b"], np.zeros((2, 4), np.float32))
        writer.commit()
    with np.load(tmp_path / "c.npz", allow_pickle=False) as archive:
        assert archive["model"].shape == () and str(archive["model"]) == "sparse"
        assert archive["version"].dtype == np.int64 and int(archive["version"]) == 7
        assert archive["codes"].dtype == np.float32


def test_codes_sidecar_counts_as_an_existing_output(tmp_path: Path) -> None:
    (tmp_path / "c.npy.json").write_text("{}")
    with pytest.raises(OutputExistsError, match=r"c\.npy\.json exists"):
        open_code_output(tmp_path / "c.npy", 2, 4, "vanilla", 1, overwrite=False)


def test_codes_missing_items_and_bad_chunks(tmp_path: Path) -> None:
    with open_code_output(tmp_path / "c.npy", 4, 8, "vanilla", 1, overwrite=False) as writer:
        with pytest.raises(ValueError, match=r"codes must be float \(n, 8\)"):
            writer.write(0, ["a"], np.zeros((1, 4), np.float32))
        writer.write(0, ["a", "b"], np.zeros((2, 8), np.float32))
        with pytest.raises(JobError, match="2 of 4 items never arrived"):
            writer.commit()
    assert listing(tmp_path) == []


@pytest.mark.parametrize("target", ["codes.png", "codes", "codes.json"])
def test_unknown_codes_output_suffix(tmp_path: Path, target: str) -> None:
    with pytest.raises(UsageError, match="give a .npy or .npz file"):
        open_code_output(tmp_path / target, 2, 4, "vanilla", 1, overwrite=False)


# --- Memory ---------------------------------------------------------------------------------


def test_npy_writer_does_not_map_the_output_into_memory(tmp_path: Path) -> None:
    count = 40_000  # 31 MB of output
    chunk = digits(500)
    with open_image_output(tmp_path / "big.npy", count, overwrite=False) as writer:
        for start in range(0, count, len(chunk)):
            writer.write(start, names_for(len(chunk)), chunk)
        mapped = _mapped_bytes(tmp_path)
        writer.commit()
    assert mapped < 1024 * 1024, f"{mapped} bytes of the output are mapped into the process"
    assert os.path.getsize(tmp_path / "big.npy") > count * SIDE * SIDE


def _mapped_bytes(folder: Path) -> int:
    """Resident bytes of files under ``folder`` mapped into this process (Linux smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and "-" in fields[0]:
            inside = fields[-1].startswith(str(folder))
        elif inside and fields[0] == "Rss:":
            total += int(fields[1]) * 1024
    return total


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A folder on a read-only file system (a tmpfs mounted ro: root ignores permission bits)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("name", ["out.npy", "out.npz", "pngs"])
def test_a_read_only_folder_is_one_error_not_a_traceback(read_only_folder: Path, name: str):
    """Cleaning up after the refused write used to raise its own OSError (EROFS, not ENOENT,
    for a file never created), which replaced the user's error with a traceback."""
    with pytest.raises(AeqError, match="Read-only file system"):
        open_image_output(read_only_folder / name, 4, overwrite=False)


@pytest.mark.parametrize(("suffix", "keeps_names"), [(".npy", False), (".npz", True)])
def test_only_outputs_that_write_names_keep_them(tmp_path, suffix, keeps_names):
    """A million-item job's names were its client's largest memory (111 -> 144 MiB over a
    1,000,000-image .npy job); a .npy of images never writes them."""
    import tracemalloc

    total = 1_000_000
    tracemalloc.start()
    try:
        with open_image_output(tmp_path / f"out{suffix}", total, overwrite=False) as writer:
            writer.write(0, ["a", "b"], np.zeros((2, SIDE, SIDE), np.uint8))
            held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # Which items arrived: a byte each; the names: a pointer (8 bytes) each, more once named.
    assert (held > 8 * total) is keeps_names, held
