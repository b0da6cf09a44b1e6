"""Writing the report: metrics.json (every number) and report.md (tables, figures, claim readings).

The markdown is generated from the same dict that goes into metrics.json, so the two never
disagree. Non-finite numbers (a perfect PSNR is infinite) are written to JSON as ``null`` with
the reason in ``notes``, keeping metrics.json strict JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aeq.evaluation.claims import read_claims
from aeq.evaluation.experiments import NOISY_INPUT, pca_label

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
# Figure files, in the order the report shows them.
FIGURES = {
    "reconstructions": "reconstructions.png",
    "denoising_curves": "denoising_curves.png",
    "denoising_examples": "denoising_examples.png",
    "sparsity": "sparsity.png",
    "code_maps": "code_maps.png",
}


def write_metrics(folder: Path, metrics: Mapping[str, Any]) -> Path:
    """Write metrics.json (strict JSON: non-finite floats become null)."""
    path = folder / METRICS_FILE
    path.write_text(json.dumps(_finite(metrics), indent=2, allow_nan=False) + "\n")
    return path


def write_report(folder: Path, metrics: Mapping[str, Any]) -> Path:
    """Write report.md from the metrics dict (figures are linked by their file names)."""
    path = folder / REPORT_FILE
    path.write_text(render(metrics))
    return path


def render(metrics: Mapping[str, Any], image_prefix: str = "") -> str:
    """The report as markdown; ``image_prefix`` is prepended to figure file names."""
    sections = [
        _header(metrics),
        _claims(metrics),
        _reconstruction(metrics, image_prefix),
        _denoising(metrics, image_prefix),
        _sparsity(metrics, image_prefix),
        _features(metrics, image_prefix),
        _method(metrics),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def _header(metrics: Mapping[str, Any]) -> str:
    rows = [
        (
            info["label"],
            "×".join(str(d) for d in info["code_dims"]) + f" = {info['code_dim']}",
            info["training"].get("data_source"),
            info["training"].get("train_images"),
            _recipe(info["training"].get("recipe")),
            _epochs(info["training"]),
        )
        for info in metrics["models"].values()
    ]
    header = ("model", "code", "trained on", "training images", "recipe", "epochs run (kept)")
    return "\n\n".join(
        [
            f"# aeq quality report ({metrics['generated_at']})",
            f"Command: `{metrics['command']}`; git commit `{metrics.get('git_commit') or '?'}`; "
            f"took {metrics['duration_s']:.0f} s.",
            f"Evaluation data: {metrics['data']['source']}.",
            "Models, as published in the repository and run through ONNX Runtime "
            f"({_providers(metrics)}); training details from each version's training record:",
            table(header, rows),
        ]
    )


def _providers(metrics: Mapping[str, Any]) -> str:
    names = {name for info in metrics["models"].values() for name in info.get("providers", [])}
    return ", ".join(sorted(names)) or "provider not recorded"


def _recipe(recipe: Any) -> str | None:
    if isinstance(recipe, Mapping):
        return f"{recipe.get('name', '?')} ({recipe.get('loss', '?')})"
    return None if recipe is None else str(recipe)


def _epochs(training: Mapping[str, Any]) -> str | None:
    run, best = training.get("epochs_run"), training.get("best_epoch")
    if run is None:
        return None
    return f"{run} ({best})" if best is not None else str(run)


def _record_mse(row: Mapping[str, Any], models: Mapping[str, Any]) -> str | None:
    value = row["training_record_test_mse"]
    if value is None:
        return None
    test_input = models[row["model"]]["training"].get("test_input")
    return f"{value:.4g}" + (f" ({test_input} in)" if test_input not in (None, "clean") else "")


def _claims(metrics: Mapping[str, Any]) -> str:
    claims = read_claims(metrics)
    rows = [(f"**{claim.verdict}**", claim.statement, claim.evidence) for claim in claims]
    rules = "\n".join(f"- *{claim.key}*: {claim.rule}" for claim in claims)
    return (
        "## The article's claims\n\n"
        + table(("verdict", "claim", "evidence"), rows)
        + "\n\nHow each verdict is decided:\n\n"
        + rules
    )


def _reconstruction(metrics: Mapping[str, Any], prefix: str) -> str:
    section = metrics["reconstruction"]
    rows = [
        (
            row["model"],
            row["code_dim"],
            row["mse"],
            row["psnr"],
            pca_label(row["pca_components"]) if row["pca_components"] else "none (overcomplete)",
            row["pca_mse"],
            row["pca_psnr"],
            _record_mse(row, metrics["models"]),
        )
        for row in section["rows"]
    ]
    header = ("model", "code", "MSE", "PSNR dB", "same-size PCA", "PCA MSE", "PCA PSNR dB")
    baselines = [
        (pca_label(int(k)), int(k), v["mse"], v["psnr"]) for k, v in section["pca"].items()
    ]
    baselines.append(("mean training image", 0, *section["mean_image"].values()))
    return "\n\n".join(
        [
            "## 1. Reconstruction of the clean test images",
            table((*header, "test MSE in training record"), rows),
            "Baselines at every size fitted:",
            table(("baseline", "components", "MSE", "PSNR dB"), baselines),
            _figure("Test images (top) and reconstructions", FIGURES["reconstructions"], prefix),
        ]
    )


def _denoising(metrics: Mapping[str, Any], prefix: str) -> str:
    section = metrics["denoising"]
    factors = [f"{f:g}" for f in section["factors"]]
    methods = section["methods"]

    def rows(key: str) -> list[list[Any]]:
        return [[name, *scores[key]] for name, scores in methods.items()]

    sizes = ", ".join(
        f"{f}: {k}" for f, k in zip(factors, section["pca_best_components"], strict=True)
    )
    return "\n\n".join(
        [
            "## 2. Denoising",
            f"Noise: {section['noise']}, seed {section['seed']}. Every method gets the same noisy "
            f"test images; scores are against the clean ones. '{NOISY_INPUT}' is doing nothing. "
            f"'PCA, best k' uses the size that denoised noisy training images best ({sizes}).",
            "PSNR (dB):",
            table(("method", *factors), rows("psnr")),
            "Mean SSIM:",
            table(("method", *factors), rows("ssim")),
            _figure("PSNR and SSIM against noise", FIGURES["denoising_curves"], prefix),
            _figure("Examples at noise 0.5", FIGURES["denoising_examples"], prefix),
        ]
    )


def _sparsity(metrics: Mapping[str, Any], prefix: str) -> str:
    rows = [
        (
            name,
            s["code_dim"],
            s["mean_activation"],
            f"{s['zero_fraction']:.1%}",
            s["active_per_image"],
            s["active_per_image_median"],
            s["dead_units"],
        )
        for name, s in metrics["sparsity"].items()
    ]
    header = ("model", "code", "mean activation", "exact zeros", "non-zero per image (mean)")
    return "\n\n".join(
        [
            "## 3. Sparsity of the codes (test images)",
            table((*header, "(median)", "units never active"), rows),
            _figure("Non-zero code units per image", FIGURES["sparsity"], prefix),
        ]
    )


def _features(metrics: Mapping[str, Any], prefix: str) -> str:
    section = metrics["features"]
    rows = [
        (row["features"], row["kind"], row["dims"], f"{row['accuracy']:.2%}")
        for row in section["rows"]
    ]
    maps = metrics["maps"]
    return "\n\n".join(
        [
            "## 4. Codes as features",
            f"A {section['classifier']} classifier is fitted on the training images' features and "
            "labels, and its accuracy is measured on the test images' features.",
            table(("features", "kind", "dims", "k-NN test accuracy"), rows),
            f"2-D maps of {maps['points']} test images (an evenly spread subsample) by PCA and "
            f"t-SNE (scikit-learn, perplexity {maps['perplexity']:g}), coloured by digit:",
            _figure("2-D maps of the codes", FIGURES["code_maps"], prefix),
        ]
    )


def _method(metrics: Mapping[str, Any]) -> str:
    notes = "\n".join(f"- {note}" for note in metrics.get("notes", []))
    return "## How the numbers are made\n\n" + notes


def _figure(alt: str, name: str, prefix: str) -> str:
    return f"![{alt}]({prefix}{name})"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
