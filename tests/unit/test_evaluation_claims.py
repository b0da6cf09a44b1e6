"""The claim readings follow their stated rules on constructed metrics, and the report renders
them; metrics.json stays strict JSON."""

from __future__ import annotations

import copy
import json
import math

import pytest

from aeq.evaluation import claims, report
from aeq.evaluation.experiments import MEDIAN, NOISY_INPUT, PCA_BEST

FACTORS = [0.1, 0.3, 0.5, 0.7]


def _recon_row(model, code_dim, error, pca_k, pca_error):
    return {
        "model": model,
        "label": f"{model}@1",
        "code_dim": code_dim,
        "mse": error,
        "psnr": 10 * math.log10(1 / error),
        "pca_components": pca_k,
        "pca_mse": pca_error,
        "pca_psnr": 10 * math.log10(1 / pca_error) if pca_error else None,
        "training_record_test_mse": error,
    }


def _sparsity(zero_fraction, dead=0):
    return {
        "code_dim": 64,
        "mean_activation": 1.0 - zero_fraction,
        "zero_fraction": zero_fraction,
        "active_per_image": 64 * (1 - zero_fraction),
        "active_per_image_median": 64 * (1 - zero_fraction),
        "dead_units": dead,
    }


def _method(psnr_at_half, ssim_at_half):
    return {
        "mse": [0.01] * len(FACTORS),
        "psnr": [psnr_at_half] * len(FACTORS),
        "ssim": [ssim_at_half] * len(FACTORS),
    }


@pytest.fixture
def metrics():
    """Numbers in which every claim holds."""
    return {
        "generated_at": "2026-01-01T00:00:00+00:00",
        "command": "aeq evaluate all",
        "git_commit": "abc",
        "duration_s": 1.0,
        "data": {"source": "test", "train_images": 10, "test_images": 10},
        "models": {
            name: {
                "label": f"{name}@1",
                "code_dim": dim,
                "code_dims": dims,
                "noisy_input": name == "denoising",
                "training": {"recipe": {"name": "default", "loss": "binary_crossentropy"}},
            }
            for name, dim, dims in (
                ("vanilla", 64, [64]),
                ("sparse", 64, [64]),
                ("denoising", 1568, [7, 7, 32]),
            )
        },
        "reconstruction": {
            "rows": [
                _recon_row("vanilla", 64, 0.008, 64, 0.009),
                _recon_row("sparse", 64, 0.009, 64, 0.009),
                _recon_row("denoising", 1568, 0.004, None, None),
            ],
            "pca": {"64": {"mse": 0.009, "psnr": 20.5}},
            "mean_image": {"mse": 0.1, "psnr": 10.0},
        },
        "denoising": {
            "factors": FACTORS,
            "noise": "test",
            "seed": 0,
            "pca_best_components": [64, 32, 32, 16],
            "methods": {
                NOISY_INPUT: _method(10.0, 0.3),
                "denoising": _method(21.0, 0.8),
                MEDIAN: _method(14.0, 0.5),
                PCA_BEST: _method(16.0, 0.6),
            },
        },
        "sparsity": {"vanilla": _sparsity(0.03), "sparse": _sparsity(0.5)},
        "features": {
            "classifier": "5-NN",
            "rows": [
                {"features": "raw pixels", "kind": "pixels", "dims": 784, "accuracy": 0.93},
                {"features": "PCA-64", "kind": "pca", "dims": 64, "accuracy": 0.94},
                {"features": "vanilla", "kind": "code", "dims": 64, "accuracy": 0.945},
                {"features": "sparse", "kind": "code", "dims": 64, "accuracy": 0.92},
                {"features": "denoising", "kind": "code", "dims": 1568, "accuracy": 0.95},
            ],
        },
        "maps": {"points": 10, "perplexity": 3.0},
        "notes": ["a note"],
    }


def verdicts(metrics):
    return {claim.key: claim.verdict for claim in claims.read_claims(metrics)}


def test_every_claim_holds_on_favourable_numbers(metrics):
    assert verdicts(metrics) == {
        "salient": claims.HOLDS,
        "sparse": claims.HOLDS,
        "denoise": claims.HOLDS,
        "pca": claims.HOLDS,
    }


def test_salient_features_partly_when_one_code_loses_too_much_accuracy(metrics):
    metrics["features"]["rows"][3]["accuracy"] = 0.93 - claims.SALIENT_ACCURACY_MARGIN - 0.001
    assert verdicts(metrics)["salient"] == claims.PARTLY
    for row in metrics["features"]["rows"][2:4]:
        row["accuracy"] = 0.5
    assert verdicts(metrics)["salient"] == claims.FAILS


def test_sparse_claim_fails_when_the_sparse_code_has_fewer_zeros(metrics):
    metrics["sparsity"]["sparse"] = _sparsity(0.02)
    claim = claims.sparser_code(metrics)
    assert claim.verdict == claims.FAILS
    assert "2.0%" in claim.evidence and "3.0%" in claim.evidence


def test_denoising_claim_partly_when_a_baseline_wins(metrics):
    metrics["denoising"]["methods"][MEDIAN] = _method(22.0, 0.85)
    claim = claims.removes_noise(metrics)
    assert claim.verdict == claims.PARTLY
    assert MEDIAN in claim.evidence


def test_denoising_claim_fails_when_the_output_is_worse_than_the_noisy_input(metrics):
    metrics["denoising"]["methods"]["denoising"] = _method(9.0, 0.2)
    assert verdicts(metrics)["denoise"] == claims.FAILS


def test_pca_claim_readings(metrics):
    # Vanilla wins MSE only: partly.
    metrics["features"]["rows"][2]["accuracy"] = 0.90
    assert verdicts(metrics)["pca"] == claims.PARTLY
    # PCA wins both for every model.
    metrics["reconstruction"]["rows"][0]["mse"] = 0.01
    assert verdicts(metrics)["pca"] == claims.FAILS


def test_claims_without_their_models_are_not_measured(metrics):
    bare = copy.deepcopy(metrics)
    bare["sparsity"].pop("sparse")
    bare["denoising"]["methods"].pop("denoising")
    bare["reconstruction"]["rows"] = [bare["reconstruction"]["rows"][2]]
    assert verdicts(bare) == {
        "salient": claims.UNTESTED,
        "sparse": claims.UNTESTED,
        "denoise": claims.UNTESTED,
        "pca": claims.UNTESTED,
    }


def test_report_renders_every_section_and_verdict(metrics):
    text = report.render(metrics)
    for heading in (
        "## The article's claims",
        "## 1. Reconstruction",
        "## 2. Denoising",
        "## 3. Sparsity",
        "## 4. Codes as features",
        "## How the numbers are made",
    ):
        assert heading in text
    assert text.count(f"**{claims.HOLDS}**") == 4
    assert "default (binary_crossentropy)" in text
    assert "none (overcomplete)" in text
    for name in report.FIGURES.values():
        assert f"({name})" in text


def test_metrics_json_is_strict_with_infinite_values_as_null(tmp_path, metrics):
    metrics["reconstruction"]["pca"]["784"] = {"mse": 0.0, "psnr": math.inf}
    path = report.write_metrics(tmp_path, metrics)

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    loaded = json.loads(path.read_text(), parse_constant=refuse)
    assert loaded["reconstruction"]["pca"]["784"] == {"mse": 0.0, "psnr": None}
