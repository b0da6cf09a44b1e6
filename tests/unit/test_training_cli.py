"""``aeq train`` on the command line: bad model names, absent data, collapse reporting.

The error paths run the real ``aeq`` entry point in a subprocess (exit codes and the one-line
message are what users see). The collapse path stubs the training itself, so it is instant.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
import training.train
from aeq.core.errors import CollapsedModelError
from training.record import TrainingRecord

AEQ = shutil.which("aeq", path=str(Path(sys.executable).parent)) or "aeq"
# A proxy on a closed local port: a keras download attempt fails at once instead of reaching out.
CLOSED_PROXY = "http://127.0.0.1:9"


def run_aeq(args: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AEQ_") and key != "KERAS_HOME"
    }
    environment |= {"HOME": str(home), "HTTPS_PROXY": CLOSED_PROXY, "HTTP_PROXY": CLOSED_PROXY}
    environment |= {"https_proxy": CLOSED_PROXY, "http_proxy": CLOSED_PROXY} | env
    return subprocess.run(
        [AEQ, "train", *args], capture_output=True, text=True, env=environment, timeout=120
    )


def test_unknown_model_is_exit_2(tmp_path):
    result = run_aeq(["resnet"], tmp_path)
    assert result.returncode == 2
    assert "unknown model 'resnet'" in result.stderr and "vanilla" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_data_anywhere_is_exit_2_naming_the_three_ways(tmp_path):
    result = run_aeq(["vanilla", "--out", str(tmp_path / "out")], tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    for way in ("--data", "AEQ_DATA_DIR", "keras"):
        assert way in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_trained_model_is_not_replaced_without_overwrite(tmp_path):
    """'aeq train conv --data FASHION' silently replaced trained/conv (issue 11)."""
    folder = tmp_path / "out" / "conv"
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"earlier")
    (folder / "record.json").write_text('{"data_source": "IDX folder /data/fashion"}')
    result = run_aeq(["all", "--out", str(tmp_path / "out"), "--data", str(tmp_path)], tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "already holds a trained conv (trained on IDX folder /data/fashion)" in line
    assert "--overwrite" in line and "Traceback" not in result.stderr
    assert (folder / "model.keras").read_bytes() == b"earlier"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["conv"]


def test_missing_data_path_is_exit_2(tmp_path):
    result = run_aeq(["conv", "--data", str(tmp_path / "nowhere")], tmp_path)
    assert result.returncode == 2
    assert "does not exist" in " ".join(result.stderr.split())


def test_bad_option_is_exit_2(tmp_path):
    result = run_aeq(["vanilla", "--recipe", "magic", "--data", str(tmp_path)], tmp_path)
    assert result.returncode == 2
    assert "unknown recipe 'magic'" in " ".join(result.stderr.split())


def _tiny_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        y_train=np.zeros(20, np.uint8),
        x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        y_test=np.zeros(5, np.uint8),
    )
    return path


def _stub_record(name: str, collapsed: bool) -> TrainingRecord:
    return TrainingRecord(
        model=name, recipe={"name": "default"}, epochs_run=2, best_epoch=1,
        stopped_early=False, final_train_loss=0.3, final_val_loss=0.3, best_val_loss=0.3,
        validation_mse=0.11 if collapsed else 0.01, baseline_mse=0.07, collapsed=collapsed,
        test_mse=0.11 if collapsed else 0.01, test_psnr_db=9.6, test_input="clean",
        test_code_zero_fraction=0.0, data_source="stub", train_images=18, validation_images=2,
        test_images=5, seed=0, duration_s=0.1, libraries={}, created_at="2025-01-01T00:00:00",
    )  # fmt: skip


@pytest.mark.parametrize("collapsing", [set(), {"conv"}])
def test_train_all_reports_collapse_with_an_error(tmp_path, monkeypatch, collapsing):
    calls = []

    def fake_train_model(name, config, data, out_dir, verbose=2, model_name=None):
        calls.append((name, config.epochs, config.seed, config.train_limit, out_dir))
        return _stub_record(name, name in collapsing)

    monkeypatch.setattr(training.train, "train_model", fake_train_model)
    args = ["train", "all", "--data", str(_tiny_npz(tmp_path / "mnist.npz"))]
    args += ["--epochs", "2", "--seed", "5", "--limit", "10", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(cli.app, args)
    assert [call[0] for call in calls] == ["vanilla", "multilayer", "conv", "sparse", "denoising"]
    assert calls[0][1:] == (2, 5, 10, tmp_path / "out")
    if collapsing:
        assert result.exit_code == CollapsedModelError.exit_code == 1
        assert "error: conv collapsed" in result.stderr
        assert "COLLAPSED" in result.stdout
    else:
        assert result.exit_code == 0, result.output
        assert "COLLAPSED" not in result.output


def test_the_command_module_does_not_import_tensorflow():
    code = (
        "import sys, training.commands, training.recipe, training.batches, training.metrics, "
        "training.record; heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["vanilla", "--name", "conv"], "'conv' is the name of the default conv model"),
        (["vanilla", "--name", "../up"], "model name '../up': use 1-64 letters"),
        (["all", "--name", "mine"], "--name names one model"),
    ],
)
def test_bad_names_are_refused_before_anything_loads(tmp_path, args, message):
    result = run_aeq([*args, "--out", str(tmp_path / "out")], tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_trained_under_its_own_name_is_exported_and_served_under_it(tmp_path):
    """'aeq train vanilla --data FASHION' could only replace trained/vanilla and become
    vanilla@2 (issue 11): now it has a name of its own, all the way to a job."""
    data = _tiny_npz(tmp_path / "mnist.npz")
    out, repository = tmp_path / "trained", tmp_path / "repository"
    trained = run_aeq(
        ["vanilla", "--name", "strokes-vanilla", "--epochs", "1", "--data", str(data),
         "--out", str(out)], tmp_path,
    )  # fmt: skip
    assert trained.returncode in (0, 1), trained.stderr  # 1 epoch may collapse: still written
    record = json.loads((out / "strokes-vanilla" / "record.json").read_text())
    assert (record["model"], record["name"]) == ("vanilla", "strokes-vanilla")
    assert not (out / "vanilla").exists()
    record["collapsed"] = False  # what is checked here is the name, not the fit
    (out / "strokes-vanilla" / "record.json").write_text(json.dumps(record))
    env = {"HOME": str(tmp_path)}
    exported = subprocess.run(
        [AEQ, "export", "strokes-vanilla", "--from", str(out), "--repository", str(repository)],
        capture_output=True, text=True, timeout=300, env={**os.environ, **env},
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    np.save(tmp_path / "in.npy", np.zeros((3, 28, 28), np.uint8))
    served = subprocess.run(
        [AEQ, "reconstruct", str(tmp_path / "in.npy"), "-o", str(tmp_path / "out.npy"),
         "--model", "strokes-vanilla", "--repository", str(repository)],
        capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "AEQ_BROKER_URL"},
    )  # fmt: skip
    assert served.returncode == 0, served.stderr
    assert np.load(tmp_path / "out.npy").shape == (3, 28, 28)
    listed = subprocess.run(
        [AEQ, "models", "--repository", str(repository), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    (model,) = json.loads(listed.stdout)
    assert (model["model"], model["architecture"], model["latest"]) == (
        "strokes-vanilla", "vanilla", 1,
    )  # fmt: skip
