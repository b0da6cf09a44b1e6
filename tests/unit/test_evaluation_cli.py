"""``aeq evaluate`` end to end on a tiny model repository and tiny MNIST-shaped data.

The fixture trains each catalogued model for one short epoch and publishes it with the real
exporter (this imports TensorFlow, in the test process only). The command itself runs in a
subprocess, the way a user runs it, which also checks that it never imports TensorFlow.
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from export_support import generated_images, write_trained

from aeq.core.catalog import MODELS, Graph
from aeq.core.noise import add_noise
from aeq.evaluation import claims, experiments, report
from aeq.evaluation.metrics import psnr_from_mse
from aeq.repository import ModelRepository
from export import exporter

TRAIN_IMAGES = 300  # > 128, so PCA-128 (the conv model's code size) can be fitted
TEST_IMAGES = 120
PARITY_IMAGES = 32
# Runs the CLI and fails if anything it did imported TensorFlow.
RUN_CLI = (
    "import sys\n"
    "from cli import app\n"
    "try:\n"
    "    app(sys.argv[1:], prog_name='aeq')\n"
    "except SystemExit as done:\n"
    "    code = done.code or 0\n"
    "assert 'tensorflow' not in sys.modules, 'aeq evaluate imported tensorflow'\n"
    "sys.exit(code)\n"
)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes, gzipped (the MNIST distribution format)."""
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(dim).to_bytes(4, "big") for dim in array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("mnist")
    parts = {
        "train": (generated_images(TRAIN_IMAGES, seed=11), np.arange(TRAIN_IMAGES) % 10),
        "t10k": (generated_images(TEST_IMAGES, seed=12), np.arange(TEST_IMAGES) % 10),
    }
    for stem, (images, labels) in parts.items():
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", np.round(images * 255))
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    trained = tmp_path_factory.mktemp("trained")
    root = tmp_path_factory.mktemp("repository")
    images = generated_images(256 + PARITY_IMAGES, seed=13)
    published = ModelRepository(root)
    for name in MODELS:
        write_trained(trained, name, images[:256])
        exporter.export_model(name, trained, published, images[256:], "generated strokes")
    return root


def run_evaluate(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, "evaluate", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def evaluated(repository, data_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    out = work / "report"
    done = run_evaluate(
        "all", "--repository", str(repository), "--data", str(data_dir), "--out", str(out),
        "--quick", cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / report.METRICS_FILE).read_text(), parse_constant=_refuse)
    return out, metrics, done


def _refuse(constant: str) -> None:
    raise AssertionError(f"metrics.json holds the non-JSON constant {constant}")


def test_report_folder_holds_report_metrics_and_figures(evaluated):
    out, metrics, done = evaluated
    assert str(out / "report.md") in done.stdout
    for name in report.FIGURES.values():
        figure = out / name
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert sorted(metrics["figures"]) == sorted(report.FIGURES.values())
    text = (out / "report.md").read_text()
    assert "## The article's claims" in text and "## 4. Codes as features" in text
    assert "ONNX Runtime (CPUExecutionProvider)" in text
    assert not list(out.parent.glob(".report.staging-*"))


def test_every_published_model_is_measured_with_finite_numbers(evaluated):
    _, metrics, _ = evaluated
    assert list(metrics["models"]) == list(MODELS)
    assert metrics["data"] == {
        "source": metrics["data"]["source"],
        "train_images": TRAIN_IMAGES,
        "test_images": TEST_IMAGES,
    }
    for row in metrics["reconstruction"]["rows"]:
        assert 0 < row["mse"] < 1
        assert row["psnr"] == pytest.approx(psnr_from_mse(row["mse"]))
        expected_pca = row["code_dim"] if row["code_dim"] < 784 else None
        assert row["pca_components"] == expected_pca
        if expected_pca:
            assert row["pca_mse"] == metrics["reconstruction"]["pca"][str(expected_pca)]["mse"]


def test_model_errors_match_onnx_runtime_run_directly_with_8_bit_output(
    evaluated, repository, data_dir
):
    _, metrics, _ = evaluated
    from aeq.core.idx import read_idx

    test = read_idx(data_dir / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    published = ModelRepository(repository).get("conv")
    session = onnxruntime.InferenceSession(
        published.read_verified(Graph.AUTOENCODER), providers=["CPUExecutionProvider"]
    )
    (output,) = session.run(None, {"image": test.reshape(-1, 28, 28, 1)})
    # The service hands back 8-bit images: round(clip(x, 0, 1) * 255).
    served = np.rint(np.clip(output.reshape(test.shape), 0, 1) * 255) / 255
    expected = float(np.mean((served.astype(np.float64) - test) ** 2))
    conv = next(row for row in metrics["reconstruction"]["rows"] if row["model"] == "conv")
    assert conv["mse"] == pytest.approx(expected, rel=1e-6)
    assert metrics["models"]["conv"]["providers"] == ["CPUExecutionProvider"]


def test_denoising_table_reproduces_the_noisy_input_psnr(evaluated, data_dir):
    _, metrics, _ = evaluated
    from aeq.core.idx import read_idx

    test = read_idx(data_dir / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    section = metrics["denoising"]
    assert section["factors"] == list(experiments.NOISE_FACTORS)
    noisy_psnr = section["methods"][experiments.NOISY_INPUT]["psnr"]
    for index, factor in enumerate(section["factors"]):
        noisy = add_noise(test, experiments.noise_rng(section["seed"], factor), factor)
        noisy = np.rint(noisy * 255) / 255  # stored as 8-bit images
        error = float(np.mean((noisy.astype(np.float64) - test) ** 2))
        assert noisy_psnr[index] == pytest.approx(10 * math.log10(1 / error), rel=1e-6)
    assert noisy_psnr == sorted(noisy_psnr, reverse=True)  # more noise, lower PSNR
    for method, scores in section["methods"].items():
        assert all(math.isfinite(v) for v in scores["psnr"]), method
        assert all(-1 <= v <= 1 for v in scores["ssim"]), method


def test_sparsity_features_and_claims_are_consistent(evaluated):
    _, metrics, _ = evaluated
    for name, stats in metrics["sparsity"].items():
        assert stats["code_dim"] == MODELS[name].code_dim
        assert stats["active_per_image"] == pytest.approx(
            stats["code_dim"] * (1 - stats["zero_fraction"]), rel=1e-6
        )
    rows = {row["features"]: row for row in metrics["features"]["rows"]}
    assert {"raw pixels", "PCA-64", "PCA-128", *MODELS} <= set(rows)
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in rows.values())
    assert rows["denoising"]["dims"] == 1568
    allowed = {claims.HOLDS, claims.PARTLY, claims.FAILS}  # every model present: all measured
    assert [claim["key"] for claim in metrics["claims"]] == ["salient", "sparse", "denoise", "pca"]
    assert all(claim["verdict"] in allowed for claim in metrics["claims"])


def test_progress_is_a_line_per_model_and_stage_on_stderr(evaluated):
    _, metrics, done = evaluated
    lines = done.stderr.splitlines()
    for name in MODELS:
        assert f"evaluate: loaded {name}@1" in lines
    for stage in ("models and pca", "reconstruction", "denoising", "features", "figures"):
        assert f"evaluate: {stage}..." in lines
        assert any(line.startswith(f"evaluate: {stage}: ") for line in lines), stage
    assert "evaluate:" not in done.stdout


def test_json_prints_the_report_and_its_metrics_alone_on_stdout(repository, data_dir, tmp_path):
    out = tmp_path / "report"
    done = run_evaluate(
        "vanilla", "--repository", str(repository), "--data", str(data_dir), "--out", str(out),
        "--quick", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = json.loads(done.stdout)
    assert printed["report"] == str(out / "report.md")
    assert printed["metrics"] == json.loads((out / report.METRICS_FILE).read_text())
    assert list(printed["metrics"]["models"]) == ["vanilla"]


def test_existing_output_is_refused_without_overwrite(evaluated, repository, data_dir):
    out, metrics, _ = evaluated
    done = run_evaluate(
        "vanilla", "--repository", str(repository), "--data", str(data_dir), "--out", str(out),
        "--quick", cwd=out.parent,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--overwrite" in done.stderr and "Traceback" not in done.stderr
    assert json.loads((out / report.METRICS_FILE).read_text()) == metrics


def test_unknown_model_and_empty_repository_are_one_line_errors(tmp_path, data_dir):
    done = run_evaluate("resnet", "--repository", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "unknown model 'resnet'" in done.stderr
    done = run_evaluate("all", "--repository", str(tmp_path / "empty"), cwd=tmp_path)
    assert done.returncode == 2 and "no models published" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "reports").exists()


def test_overwrite_replaces_the_whole_folder(repository, data_dir, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    done = run_evaluate(
        "sparse", "--repository", str(repository), "--data", str(data_dir), "--out", str(out),
        "--quick", "--overwrite", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "stale.png").exists()
    metrics = json.loads((out / report.METRICS_FILE).read_text())
    assert list(metrics["models"]) == ["sparse"]
    verdicts = {claim["key"]: claim["verdict"] for claim in metrics["claims"]}
    assert verdicts["sparse"] == verdicts["denoise"] == claims.UNTESTED  # vanilla/denoising absent
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report"]
