"""``aeq export`` as a user runs it: a real ``aeq`` process, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from export_support import FIT_IMAGES, generated_images, write_record, write_trained

from aeq.repository import ModelRepository

TIMEOUT_S = 300


def run_aeq(*args: str) -> subprocess.CompletedProcess:
    """Run ``aeq`` in a fresh interpreter with no AEQ_* settings from the caller's environment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AEQ_")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def workplace(tmp_path_factory):
    """A training folder (vanilla fitted, sparse collapsed) and a small keras-style mnist.npz."""
    root = tmp_path_factory.mktemp("export-command")
    images = generated_images(FIT_IMAGES + 64, seed=3)
    write_trained(root / "trained", "vanilla", images[:FIT_IMAGES])
    (root / "trained" / "sparse").mkdir()
    model = (root / "trained" / "vanilla" / "model.keras").read_bytes()
    (root / "trained" / "sparse" / "model.keras").write_bytes(model)
    write_record(root / "trained" / "sparse", "sparse", collapsed=True, test_mse=0.1125)
    pixels = (images * 255).astype(np.uint8)
    labels = np.zeros(len(pixels), np.uint8)
    np.savez(root / "mnist.npz", x_train=pixels, y_train=labels, x_test=pixels, y_test=labels)
    return root


def test_export_all_publishes_the_good_ones_and_names_the_refused(workplace, tmp_path):
    repository = tmp_path / "repository"
    result = run_aeq(
        "export", "all", "--from", str(workplace / "trained"),
        "--repository", str(repository), "--data", str(workplace / "mnist.npz"),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"vanilla@1 published to {repository / 'vanilla' / '1'}" in result.stdout
    assert "parity max |diff|: autoencoder" in result.stdout
    assert "not trained, skipped: multilayer, conv, denoising" in result.stderr
    assert "sparse refused: sparse collapsed in training (test MSE 0.1125" in result.stderr
    assert "error: export failed for sparse" in result.stderr
    assert "Traceback" not in result.stderr
    published = ModelRepository(repository)
    assert published.models() == ["vanilla"]
    assert "mnist.npz" in published.get("vanilla").config["parity"]["data_source"]


def test_export_json_lists_what_was_published_and_what_failed(workplace, tmp_path):
    repository = tmp_path / "repository"
    result = run_aeq(
        "export", "all", "--from", str(workplace / "trained"),
        "--repository", str(repository), "--data", str(workplace / "mnist.npz"), "--json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["repository"] == str(repository) and report["failed"] == ["sparse"]
    [vanilla] = report["published"]
    assert (vanilla["model"], vanilla["version"]) == ("vanilla", 1)
    assert vanilla["path"] == str(repository / "vanilla" / "1")
    assert set(vanilla["parity_max_abs_diff"]) == {"autoencoder", "encoder", "decoder"}
    encoder_bytes = (repository / "vanilla" / "1" / "encoder.onnx").stat().st_size
    assert vanilla["size_bytes"]["encoder.onnx"] == encoder_bytes
    assert f"vanilla@1 published to {repository / 'vanilla' / '1'}" in result.stderr


def test_a_collapsed_model_fails_with_one_line_and_publishes_nothing(workplace, tmp_path):
    result = run_aeq(
        "export", "sparse", "--from", str(workplace / "trained"),
        "--repository", str(tmp_path), "--data", str(workplace / "mnist.npz"),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: sparse collapsed in training")
    assert ModelRepository(tmp_path).models() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("export", "resnet"), "error: no trained resnet model at"),
        (("export", "../x"), "error: model name '../x': use 1-64 letters"),
        (("export", "conv"), "error: no trained conv model at"),
        (("export", "all"), "error: no trained models in"),
        (
            ("export", "vanilla", "--data", "/nonexistent/mnist"),
            "/nonexistent/mnist does not exist",
        ),
    ],
)
def test_bad_requests_exit_2_with_one_line(workplace, tmp_path, args, message):
    trained = workplace / "trained" if "vanilla" in args else tmp_path
    result = run_aeq(*args, "--from", str(trained), "--repository", str(tmp_path / "repo"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "repo").exists()


def test_parity_is_checked_on_the_data_the_training_record_names(workplace, tmp_path):
    """'aeq export' without --data looked only where 'aeq train' looks by default, so a model
    trained with --data (Fashion-MNIST, say) was checked on, or failed for lack of, MNIST."""
    import shutil

    trained = tmp_path / "trained"
    shutil.copytree(workplace / "trained" / "vanilla", trained / "vanilla")
    record_path = trained / "vanilla" / "record.json"
    record = json.loads(record_path.read_text())
    record["data_path"] = str(workplace / "mnist.npz")
    record_path.write_text(json.dumps(record))
    repository = tmp_path / "repository"
    result = run_aeq("export", "vanilla", "--from", str(trained), "--repository", str(repository))
    assert result.returncode == 0, result.stderr
    parity = ModelRepository(repository).get("vanilla").config["parity"]
    assert str(workplace / "mnist.npz") in parity["data_source"]


def test_a_model_trained_on_other_data_is_not_made_the_next_version_unasked(workplace, tmp_path):
    """A conv retrained on Fashion-MNIST became conv@2 and every command that takes the latest
    version switched to it without a word (issue 11)."""
    import shutil

    trained = tmp_path / "trained"
    shutil.copytree(workplace / "trained" / "vanilla", trained / "vanilla")
    record_path = trained / "vanilla" / "record.json"

    def trained_on(source: str, fingerprint: str) -> None:
        record = json.loads(record_path.read_text())
        record |= {"data_source": source, "data_fingerprint": fingerprint}
        record_path.write_text(json.dumps(record))

    repository = tmp_path / "repository"
    export = ("export", "vanilla", "--from", str(trained), "--repository", str(repository))
    export += ("--data", str(workplace / "mnist.npz"))
    trained_on("IDX folder /x/mnist", "aaaa")
    assert run_aeq(*export).returncode == 0
    trained_on("IDX folder /x/fashion", "bbbb")
    refused = run_aeq(*export)
    assert refused.returncode == 2, refused.stderr
    (line,) = [line for line in refused.stderr.splitlines() if line.strip()]
    assert "vanilla@1" in line and "was trained on IDX folder /x/mnist" in line, line
    assert "this vanilla on IDX folder /x/fashion" in line and "--other-data" in line, line
    assert ModelRepository(repository).versions("vanilla") == [1]
    assert run_aeq(*export, "--other-data").returncode == 0
    assert run_aeq(*export).returncode == 0  # the same data as the latest version now
    assert ModelRepository(repository).versions("vanilla") == [1, 2, 3]
