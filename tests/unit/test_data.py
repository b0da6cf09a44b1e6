"""training.data: every MNIST source, their order of precedence, the errors for bad or no data.

The files are small ones written here (IDX and .npz), so the tests need no real MNIST, no keras
and no network; the keras download is replaced by a stub that fails like an offline machine.
"""

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aeq.core.errors import DataUnavailableError, InputError
from aeq.core.settings import Settings, load_settings
from training import data as data_module
from training.data import MnistData, load_mnist

TRAIN_COUNT = 12
TEST_COUNT = 5


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (TRAIN_COUNT, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, TRAIN_COUNT, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (TEST_COUNT, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, TEST_COUNT, dtype=np.uint8),
    }


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def write_idx_folder(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_NAMES.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(_idx_bytes(arrays[key])))
        else:
            (folder / name).write_bytes(_idx_bytes(arrays[key]))
    return folder


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def _assert_same(loaded: MnistData, arrays: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(loaded.train_images, arrays["x_train"])
    np.testing.assert_array_equal(loaded.train_labels, arrays["y_train"])
    np.testing.assert_array_equal(loaded.test_images, arrays["x_test"])
    np.testing.assert_array_equal(loaded.test_labels, arrays["y_test"])
    assert loaded.train_images.dtype == np.uint8 and loaded.test_labels.dtype == np.uint8


@pytest.fixture
def no_keras_cache(tmp_path, monkeypatch):
    """An empty home and keras fallback folder, and a keras download that fails as offline."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data_module, "KERAS_FALLBACK_HOME", tmp_path / "tmp-keras")

    def offline():
        raise Exception("URL fetch failure on https://example.invalid/mnist.npz")

    monkeypatch.setattr(data_module, "_keras_load_data", offline)
    return tmp_path / "home"


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_gz_or_plain(tmp_path, gz):
    arrays = _arrays()
    folder = write_idx_folder(tmp_path / "mnist", arrays, gz=gz)
    loaded = load_mnist(folder, Settings())
    _assert_same(loaded, arrays)
    assert loaded.source == f"IDX folder {folder}"


def test_keras_style_npz(tmp_path):
    arrays = _arrays()
    path = write_npz(tmp_path / "mnist.npz", arrays)
    loaded = load_mnist(path, Settings())
    _assert_same(loaded, arrays)
    assert loaded.source == f"mnist.npz {path}"


def test_the_same_data_by_any_path_has_one_fingerprint_and_other_data_another(tmp_path):
    """What 'aeq export' compares before making a model the next version of a published one."""
    arrays = _arrays()
    by_idx = load_mnist(write_idx_folder(tmp_path / "mnist", arrays), Settings())
    by_npz = load_mnist(write_npz(tmp_path / "mnist.npz", arrays), Settings())
    other = load_mnist(write_npz(tmp_path / "other.npz", _arrays(seed=1)), Settings())
    assert by_idx.path == str((tmp_path / "mnist").resolve())
    assert by_idx.fingerprint == by_npz.fingerprint != other.fingerprint
    assert by_npz.limited(10).fingerprint == by_npz.fingerprint  # a quick run, the same data
    some_digits = by_npz.with_digits([0, 1, 2, 3, 4, 5, 6, 7, 8])
    assert some_digits.fingerprint not in ("", by_npz.fingerprint)


def test_folder_holding_an_npz(tmp_path):
    arrays = _arrays()
    write_npz(tmp_path / "data" / "mnist.npz", arrays)
    _assert_same(load_mnist(tmp_path / "data", Settings()), arrays)


def test_env_var_is_used_when_no_path_is_given(tmp_path, no_keras_cache):
    arrays = _arrays()
    folder = write_idx_folder(tmp_path / "env-mnist", arrays)
    settings = load_settings({"AEQ_DATA_DIR": str(folder)})
    loaded = load_mnist(None, settings)
    _assert_same(loaded, arrays)
    assert str(folder) in loaded.source


def test_data_argument_wins_over_env_var(tmp_path):
    from_argument, from_env = _arrays(1), _arrays(2)
    argument = write_npz(tmp_path / "arg.npz", from_argument)
    env = write_idx_folder(tmp_path / "env", from_env)
    _assert_same(load_mnist(argument, Settings(data_dir=env)), from_argument)


def test_keras_cache_is_read_with_numpy(no_keras_cache):
    arrays = _arrays()
    cache = write_npz(no_keras_cache / ".keras" / "datasets" / "mnist.npz", arrays)
    loaded = load_mnist(None, Settings())
    _assert_same(loaded, arrays)
    assert loaded.source == f"keras cache {cache}"


def test_keras_home_is_where_the_cache_is_looked_for_first(no_keras_cache, tmp_path):
    arrays = _arrays()
    cache = write_npz(tmp_path / "elsewhere" / "datasets" / "mnist.npz", arrays)
    loaded = load_mnist(None, load_settings({"KERAS_HOME": str(tmp_path / "elsewhere")}))
    _assert_same(loaded, arrays)
    assert loaded.source == f"keras cache {cache}"


def test_nothing_reachable_names_the_three_ways(no_keras_cache):
    with pytest.raises(DataUnavailableError) as raised:
        load_mnist(None, Settings())
    message = str(raised.value)
    assert "\n" not in message
    for way in ("--data", "AEQ_DATA_DIR", "keras"):
        assert way in message
    assert "download failed" in message
    assert raised.value.exit_code == 2


def test_missing_keras_is_reported_as_unavailable(no_keras_cache, monkeypatch):
    def not_installed():
        raise ImportError("No module named 'keras'")

    monkeypatch.setattr(data_module, "_keras_load_data", not_installed)
    with pytest.raises(DataUnavailableError, match="keras is not installed"):
        load_mnist(None, Settings())


def test_missing_explicit_path_is_unavailable_not_a_fallback(tmp_path):
    with pytest.raises(DataUnavailableError, match="does not exist.*AEQ_DATA_DIR"):
        load_mnist(tmp_path / "nowhere", Settings())
    with pytest.raises(DataUnavailableError, match="AEQ_DATA_DIR .*nowhere does not exist"):
        load_mnist(None, Settings(data_dir=tmp_path / "nowhere"))


def test_folder_without_mnist_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither MNIST IDX files"):
        load_mnist(tmp_path / "empty", Settings())


def test_folder_missing_one_idx_file_names_it(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist", _arrays())
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(InputError, match="t10k-labels"):
        load_mnist(folder, Settings())


def test_truncated_idx_names_the_file(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist", _arrays(), gz=False)
    broken = folder / "train-images-idx3-ubyte"
    broken.write_bytes(broken.read_bytes()[:-10])
    with pytest.raises(InputError, match="train-images-idx3-ubyte"):
        load_mnist(folder, Settings())


def test_corrupt_gzip_names_the_file(tmp_path):
    folder = write_idx_folder(tmp_path / "mnist", _arrays())
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="t10k-images-idx3-ubyte.gz"):
        load_mnist(folder, Settings())


def test_labels_that_do_not_match_the_images_are_rejected(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    folder = write_idx_folder(tmp_path / "mnist", arrays)
    with pytest.raises(InputError, match=f"train-labels.*expected {TRAIN_COUNT} labels"):
        load_mnist(folder, Settings())


def test_ill_shaped_npz_images_name_the_file(tmp_path):
    arrays = _arrays()
    arrays["x_test"] = arrays["x_test"].reshape(TEST_COUNT, 784)
    path = write_npz(tmp_path / "mnist.npz", arrays)
    with pytest.raises(InputError, match=r"mnist.npz: expected images shaped \(N, 28, 28\)"):
        load_mnist(path, Settings())


def test_npz_missing_an_array(tmp_path):
    arrays = _arrays()
    del arrays["y_test"]
    with pytest.raises(InputError, match="lacks the array.*y_test"):
        load_mnist(write_npz(tmp_path / "mnist.npz", arrays), Settings())


def test_npz_with_pickled_objects_is_refused(tmp_path):
    arrays: dict[str, np.ndarray] = dict(_arrays())
    arrays["x_train"] = np.array([object()] * TRAIN_COUNT, dtype=object)
    path = write_npz(tmp_path / "mnist.npz", arrays)
    with pytest.raises(InputError, match="mnist.npz"):
        load_mnist(path, Settings())


def test_not_an_npz_at_all(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"hello")
    with pytest.raises(InputError, match="cannot read .*mnist.npz"):
        load_mnist(path, Settings())


def test_pixel_values_outside_bytes_are_rejected(tmp_path):
    arrays = _arrays()
    images = arrays["x_train"].astype(np.int32)
    images[0, 0, 0] = 300
    arrays["x_train"] = images
    with pytest.raises(InputError, match="bytes 0-255"):
        load_mnist(write_npz(tmp_path / "mnist.npz", arrays), Settings())


def test_limited_keeps_the_first_training_images_and_the_whole_test_set(tmp_path):
    arrays = _arrays()
    loaded = load_mnist(write_npz(tmp_path / "mnist.npz", arrays), Settings()).limited(4)
    np.testing.assert_array_equal(loaded.train_images, arrays["x_train"][:4])
    assert len(loaded.test_images) == TEST_COUNT
    with pytest.raises(ValueError):
        loaded.limited(0)


def test_loading_does_not_import_keras_or_tensorflow(tmp_path):
    # The TF-free evaluation and benchmark code loads MNIST through this module.
    path = write_npz(tmp_path / "mnist.npz", _arrays())
    code = (
        "import sys; from pathlib import Path; from aeq.core.settings import Settings; "
        "from training.data import load_mnist; "
        f"load_mnist(Path({str(path)!r}), Settings()); "
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
