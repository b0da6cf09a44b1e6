"""Every input kind the CLI accepts reads back as the right uint8 28 x 28 pixels, lazily."""

from __future__ import annotations

import ast
import gc
import io
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aeq.core.errors import InputError
from aeq.files.image_files import to_gray
from aeq.files.inputs import open_codes, open_images
from tests.unit.input_support import SIDE, digits, read_all, save_png, write_idx


def only_item(path: Path, resize: bool = False) -> np.ndarray:
    source = open_images([path], resize=resize)
    assert source.total == 1
    return read_all(source)[1][0]


# --- Image files and their conversions ----------------------------------------------------


def test_gray_png_reads_back_exactly(tmp_path: Path) -> None:
    pixels = digits(1)[0]
    assert np.array_equal(only_item(save_png(tmp_path / "d.png", pixels)), pixels)


def test_rgb_becomes_luma(tmp_path: Path) -> None:
    rgb = np.zeros((SIDE, SIDE, 3), np.uint8)
    rgb[:, :, 0] = 255  # pure red: ITU-R 601-2 luma 0.299 * 255 = 76
    rgb[:14, :, :] = 255  # top half white
    gray = only_item(save_png(tmp_path / "rgb.png", rgb))
    assert gray[20, 0] == 76 and gray[0, 0] == 255


def test_rgba_is_composited_over_black(tmp_path: Path) -> None:
    rgba = np.full((SIDE, SIDE, 4), 255, np.uint8)
    rgba[:, :10, 3] = 0  # transparent: background
    rgba[:, 10:20, 3] = 128  # half transparent white: half bright
    gray = only_item(save_png(tmp_path / "rgba.png", rgba))
    assert gray[0, 0] == 0 and gray[0, 15] == 128 and gray[0, 25] == 255


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path: Path) -> None:
    levels = np.array([0, 257 * 100, 32896, 65535], np.uint16)  # 8-bit 0, 100, 128, 255
    wide = np.tile(np.repeat(levels, 7), (SIDE, 1))
    path = tmp_path / "wide.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    gray = only_item(path)
    assert [gray[0, 0], gray[0, 7], gray[0, 14], gray[0, 21]] == [0, 100, 128, 255]


def test_palette_png_and_palette_with_transparency(tmp_path: Path) -> None:
    pixels = digits(1)[0]
    palette = Image.fromarray(pixels).convert("P")
    palette.save(tmp_path / "p.png")
    assert np.array_equal(only_item(tmp_path / "p.png"), pixels)
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    palette.save(tmp_path / "pt.png", transparency=palette.info["transparency"])
    transparent = np.asarray(palette) == np.asarray(palette)[0, 0]
    gray = only_item(tmp_path / "pt.png")
    assert (gray[transparent] == 0).all()
    assert np.array_equal(gray[~transparent], pixels[~transparent])


def test_bilevel_and_gray_alpha(tmp_path: Path) -> None:
    bits = np.zeros((SIDE, SIDE), bool)
    bits[5:9] = True
    gray = only_item(save_png(tmp_path / "bits.png", bits))
    assert set(np.unique(gray)) == {0, 255} and gray[6, 0] == 255
    la = np.stack([np.full((SIDE, SIDE), 200, np.uint8), np.full((SIDE, SIDE), 255, np.uint8)], -1)
    la[:, :4, 1] = 0
    gray = only_item(save_png(tmp_path / "la.png", la))
    assert gray[0, 0] == 0 and gray[0, 10] == 200


def test_jpeg_and_bmp(tmp_path: Path) -> None:
    pixels = digits(1)[0]
    Image.fromarray(pixels).save(tmp_path / "d.jpg", quality=95)
    jpeg = only_item(tmp_path / "d.jpg").astype(int)
    assert np.abs(jpeg - pixels).mean() < 4  # lossy, but the same picture
    Image.fromarray(np.stack([pixels] * 3, -1)).save(tmp_path / "d.bmp")
    assert np.array_equal(only_item(tmp_path / "d.bmp"), pixels)


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((SIDE, SIDE), np.uint8)
    pixels[:, :5] = 255  # a bright left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "r.jpg", exif=exif, quality=95)
    shown = only_item(tmp_path / "r.jpg")
    assert shown[:5].mean() > 200 and shown[-5:].mean() < 50  # the edge is now on top


def test_suffix_case_does_not_matter(tmp_path: Path) -> None:
    assert open_images([save_png(tmp_path / "UP.PNG", digits(1)[0])]).total == 1


# --- Sizes and resizing --------------------------------------------------------------------


def test_other_sizes_are_refused_without_resize(tmp_path: Path) -> None:
    path = save_png(tmp_path / "big.png", np.zeros((56, 40), np.uint8))
    with pytest.raises(InputError, match=r"big\.png is 40x56 pixels.*--resize"):
        open_images([path])


def test_resize_shrinks_with_lanczos(tmp_path: Path) -> None:
    pixels = digits(1)[0]
    doubled = np.kron(pixels, np.ones((2, 2), np.uint8))  # each pixel as a 2 x 2 block
    resized = only_item(save_png(tmp_path / "big.png", doubled), resize=True)
    assert resized.shape == (SIDE, SIDE)
    assert np.abs(resized.astype(int) - pixels).mean() < 6
    expected = Image.fromarray(doubled).resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    assert np.array_equal(resized, np.asarray(expected))


def test_a_rotated_photo_of_another_size_is_named_as_shown(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: 40 wide as stored, 40 high as shown
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    with pytest.raises(InputError, match=r"r\.jpg is 30x40 pixels"):
        open_images([tmp_path / "r.jpg"])


def _large_picture(mode: str) -> Image.Image:
    """A smooth 2400 x 2100 picture (over REDUCE_ABOVE_PIXELS) in ``mode``."""
    rows, cols = np.mgrid[:2100, :2400]
    level = (np.sin(rows / 150) * np.cos(cols / 190) + 1) / 2  # 0-1, a few soft blobs
    if mode == "I;16":
        return Image.fromarray(np.rint(level * 65535).astype(np.uint16))
    gray = Image.fromarray(np.rint(level * 255).astype(np.uint8))
    if mode == "RGBA":
        picture = Image.merge("RGBA", [gray, gray, gray, gray.point(lambda v: 255 - v // 2)])
        return picture
    return gray.convert(mode)


@pytest.mark.parametrize(("mode", "suffix"), [("I;16", ".png"), ("RGBA", ".png"), ("RGB", ".jpg")])
def test_resizing_a_large_image_shrinks_it_first_and_stays_close(
    tmp_path: Path, mode: str, suffix: str
) -> None:
    picture = _large_picture(mode)
    picture.save(tmp_path / f"large{suffix}")
    with Image.open(tmp_path / f"large{suffix}") as stored:  # decoded in full, then resized
        stored.load()
        full = to_gray(stored)
    expected = np.asarray(Image.fromarray(full).resize((SIDE, SIDE), Image.Resampling.LANCZOS))
    tracemalloc.start()
    try:
        resized = only_item(tmp_path / f"large{suffix}", resize=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.abs(resized.astype(int) - expected).max() <= 2
    # No full-size NumPy copies (for 16-bit, an int64 one: 8 bytes a pixel): measured 0.6-4.3 MB
    # here (the 16-bit file's compressed chunks), 10-86 MB when the whole image was converted.
    assert peak < full.size * 3 // 2


def test_resize_leaves_28x28_untouched(tmp_path: Path) -> None:
    pixels = digits(1)[0]
    assert np.array_equal(only_item(save_png(tmp_path / "d.png", pixels), resize=True), pixels)


def test_resize_applies_to_arrays_too(tmp_path: Path) -> None:
    images = np.kron(digits(3), np.ones((1, 2, 2), np.uint8))
    np.save(tmp_path / "big.npy", images)
    with pytest.raises(InputError, match="56x56 images"):
        open_images([tmp_path / "big.npy"])
    _, pixels = read_all(open_images([tmp_path / "big.npy"], resize=True))
    assert pixels.shape == (3, SIDE, SIDE)
    assert np.abs(pixels.astype(int) - digits(3)).mean() < 6


# --- Folders --------------------------------------------------------------------------------


def test_folders_are_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    images = digits(5)
    save_png(folder / "b.png", images[0])
    save_png(folder / "a" / "2.png", images[1])
    save_png(folder / "a" / "10.png", images[2])
    save_png(folder / "a" / "z" / "deep.png", images[3])
    save_png(folder / "c.png", images[4])
    np.save(folder / "a" / "arr.npy", digits(2, seed=9))
    (folder / "notes.txt").write_text("not an image")
    save_png(folder / ".hidden.png", images[0])
    save_png(folder / ".git" / "x.png", images[0])

    source = open_images([folder])
    names, pixels = read_all(source)
    assert names == ["a_10", "a_2", "a_arr_00000", "a_arr_00001", "a_z_deep", "b", "c"]
    expected = [images[2], images[1], *digits(2, seed=9), images[3], images[0], images[4]]
    assert np.array_equal(pixels, np.stack(expected))
    assert source.skipped == [folder / "notes.txt"]  # hidden files are ignored, not listed


def test_idx_labels_in_a_folder_are_skipped(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", digits(4))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(4, dtype=np.uint8))
    source = open_images([tmp_path])
    assert source.total == 4
    assert source.skipped == [tmp_path / "t10k-labels-idx1-ubyte.gz"]


def test_several_inputs_are_concatenated_in_order_with_unique_names(tmp_path: Path) -> None:
    images = digits(4)
    first = save_png(tmp_path / "one" / "x.png", images[0])
    np.save(tmp_path / "x.npy", images[1:3])
    second = save_png(tmp_path / "two" / "x.png", images[3])
    names, pixels = read_all(open_images([first, tmp_path / "x.npy", second]))
    assert np.array_equal(pixels, images)
    assert names == ["x", "x_00000", "x_00001", "x~2"]


# --- Arrays ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(6, SIDE, SIDE), (6, SIDE * SIDE), (6, SIDE, SIDE, 1), (6, 1, SIDE, SIDE)],
    ids=["grid", "flat", "channels-last", "channels-first"],
)
def test_npy_uint8_shapes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    images = digits(6)
    np.save(tmp_path / "a.npy", images.reshape(shape))
    names, pixels = read_all(open_images([tmp_path / "a.npy"]))
    assert np.array_equal(pixels, images)
    assert names == [f"a_{index:05d}" for index in range(6)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_npy_floats_in_0_1_are_scaled_and_rounded(tmp_path: Path, dtype: type) -> None:
    images = digits(5)
    np.save(tmp_path / "f.npy", (images / 255.0).astype(dtype).reshape(5, -1))
    _, pixels = read_all(open_images([tmp_path / "f.npy"]))
    tolerance = 1 if dtype is np.float16 else 0
    assert np.abs(pixels.astype(int) - images).max() <= tolerance


def test_integer_arrays_within_0_255_are_accepted(tmp_path: Path) -> None:
    images = digits(3)
    np.save(tmp_path / "i.npy", images.astype(">i8"))  # big-endian int64, as some tools write
    assert np.array_equal(read_all(open_images([tmp_path / "i.npy"]))[1], images)


def test_npz_single_array_any_key(tmp_path: Path) -> None:
    images = digits(3)
    np.savez(tmp_path / "s.npz", whatever=images)
    names, pixels = read_all(open_images([tmp_path / "s.npz"]))
    assert np.array_equal(pixels, images) and names[0] == "s_00000"


@pytest.mark.parametrize("key", ["x_test", "x_train", "x", "arr_0"])
def test_npz_conventional_key_beside_labels(tmp_path: Path, key: str) -> None:
    images = digits(3)
    np.savez_compressed(tmp_path / "k.npz", **{key: images, "y": np.arange(3)})
    assert np.array_equal(read_all(open_images([tmp_path / "k.npz"]))[1], images)


def test_npz_images_key_and_names_win(tmp_path: Path) -> None:
    images = digits(3)
    names = np.array(["seven", "two", "../one"])
    np.savez(tmp_path / "n.npz", images=images, names=names, x_test=digits(3, seed=5))
    got_names, pixels = read_all(open_images([tmp_path / "n.npz"]))
    assert np.array_equal(pixels, images)
    assert got_names == ["seven", "two", "one"]  # sanitised


def test_idx_plain_and_gzipped(tmp_path: Path) -> None:
    images = digits(9)
    plain = write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    zipped = write_idx(tmp_path / "gz" / "train-images-idx3-ubyte.gz", images[::-1])
    names, pixels = read_all(open_images([plain, zipped]), size=4)
    assert np.array_equal(pixels, np.concatenate([images, images[::-1]]))
    assert names[0] == "t10k-images-idx3-ubyte_00000"
    assert names[-1] == "train-images-idx3-ubyte_00008"


# --- Chunks ---------------------------------------------------------------------------------


def test_chunks_have_the_asked_size_across_inputs(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", digits(5))
    save_png(tmp_path / "b.png", digits(1)[0])
    np.save(tmp_path / "c.npy", digits(6))
    source = open_images([tmp_path / "a.npy", tmp_path / "b.png", tmp_path / "c.npy"])
    sizes = [len(chunk) for _, chunk in source.chunks(4)]
    assert sizes == [4, 4, 4]
    assert all(len(names) == len(chunk) for names, chunk in source.chunks(5))
    assert [len(chunk) for _, chunk in source.chunks(5)] == [5, 5, 2]
    # Chunks can be read again, and give the same items.
    assert np.array_equal(read_all(source, 3)[1], read_all(source, 12)[1])


def test_chunk_size_must_be_positive(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", digits(2))
    with pytest.raises(ValueError):
        next(open_images([tmp_path / "a.npy"]).chunks(0))


def _peak_traced_bytes(run: object) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        run()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["npy", "npz", "idx.gz", "npy-float"])
def test_chunks_stream_instead_of_loading_the_array(tmp_path: Path, kind: str) -> None:
    count = 20_000  # 15.7 MB of pixels (63 MB as float32)
    images = np.tile(digits(100), (count // 100, 1, 1))
    suffix = {"idx.gz": "-images-idx3-ubyte.gz"}.get(kind, "." + kind.split("-")[0])
    path = tmp_path / f"big{suffix}"
    if kind == "npy":
        np.save(path, images)
    elif kind == "npy-float":
        np.save(path, images.astype(np.float32) / 255)
    elif kind == "npz":
        np.savez_compressed(path, images=images)
    else:
        write_idx(path, images)
    del images
    source = open_images([path])

    def consume() -> None:
        for _names, chunk in source.chunks(256):
            assert chunk.shape[1:] == (SIDE, SIDE)

    peak = _peak_traced_bytes(consume)
    # A chunk is 200 kB of pixels (800 kB as float32 before conversion); the array is 15.7 MB.
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while streaming {kind}"


def test_opening_a_big_array_does_not_load_it(tmp_path: Path) -> None:
    np.save(tmp_path / "big.npy", np.zeros((50_000, SIDE, SIDE), np.float32))  # 157 MB
    peak = _peak_traced_bytes(lambda: open_images([tmp_path / "big.npy"]))
    assert peak < 24 * 1024 * 1024  # 50,000 names and one scanned 4 MiB block, not 157 MB


# --- Codes ----------------------------------------------------------------------------------


def test_codes_npy_without_sidecar_get_default_names(tmp_path: Path) -> None:
    codes = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    np.save(tmp_path / "c.npy", codes)
    source = open_codes(tmp_path / "c.npy")
    assert (source.total, source.code_dim, source.model, source.version) == (5, 64, None, None)
    names, read = read_all(source, size=2)
    assert names == [f"c_{index:05d}" for index in range(5)]
    assert read.dtype == np.float32 and np.array_equal(read, codes)


def test_codes_float64_come_back_float32(tmp_path: Path) -> None:
    codes = np.linspace(-3, 3, 30).reshape(3, 10)
    np.save(tmp_path / "c.npy", codes)
    _, read = read_all(open_codes(tmp_path / "c.npy"))
    assert read.dtype == np.float32 and np.allclose(read, codes)


def test_codes_sidecar_is_read(tmp_path: Path) -> None:
    np.save(tmp_path / "c.npy", np.zeros((2, 4), np.float32))
    meta = {"format": "aeq-codes", "model": "vanilla", "version": 2, "names": ["a", "a"]}
    (tmp_path / "c.npy.json").write_text(json.dumps(meta))
    source = open_codes(tmp_path / "c.npy")
    assert (source.model, source.version, list(source.names)) == ("vanilla", 2, ["a", "a~2"])


def test_codes_npz_with_only_an_array(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, np.ones((3, 8), np.float32))
    (tmp_path / "c.npz").write_bytes(buffer.getvalue())
    source = open_codes(tmp_path / "c.npz")
    assert (source.total, source.code_dim, source.model) == (3, 8, None)


def test_codes_refuse_images(tmp_path: Path) -> None:
    np.save(tmp_path / "i.npy", digits(2))
    with pytest.raises(InputError, match=r"i\.npy.*codes must be"):
        open_codes(tmp_path / "i.npy")


# --- The readers' floor plan --------------------------------------------------------------

# Each module of aeq/files may import only modules of a lower layer: the format readers at the
# bottom, what the arrays mean above them, the CLI's arguments and the writers on top.
FILES_LAYERS = {
    "names": 0,
    "png": 0,
    "staging": 0,
    "array_files": 0,
    "image_files": 0,
    "image_parts": 1,
    "code_files": 1,
    "inputs": 2,
    "outputs": 2,
}


def _files_imports() -> dict[str, set[str]]:
    """For each module of aeq/files, the aeq.files modules it imports (anywhere in the file)."""
    folder = Path(__file__).resolve().parents[2] / "aeq" / "files"
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "aeq.files":
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aeq.files."):
                imported.add(node.module.split(".")[2])  # type: ignore[union-attr]
            elif isinstance(node, ast.Import):
                imported.update(
                    alias.name.split(".")[2]
                    for alias in node.names
                    if alias.name.startswith("aeq.files.")
                )
        graph[path.stem] = imported - {path.stem}
    return graph


def test_the_file_readers_import_one_way() -> None:
    graph = _files_imports()
    for module, imported in graph.items():
        for target in imported:
            if module in FILES_LAYERS and target in FILES_LAYERS:
                assert FILES_LAYERS[target] < FILES_LAYERS[module], f"{module} imports {target}"
    for start in graph:  # and no module reaches itself through others (new modules included)
        seen, frontier = set(), set(graph[start])
        while frontier:
            module = frontier.pop()
            assert module != start, f"aeq.files.{start} imports itself back"
            seen.add(module)
            frontier |= graph.get(module, set()) - seen
