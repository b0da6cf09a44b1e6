"""The anomaly-score measurement of docs/RESULTS.md ("Anomaly scores"), as one command.

    python -m aeq.evaluation.anomaly --repository REPO --data MNIST_IDX \
        --fashion /usr/share/datasets/fashion-mnist --out reports/anomaly

``REPO`` holds a ``conv`` model trained on MNIST digits 0-8 only (``aeq train conv --digits 0-8``,
then ``aeq export conv``). Every score goes through ``aeq.score`` (local mode: the very code a
worker runs). Measured, on the MNIST test set:

1. digit 9 as the anomaly: ROC AUC of the conv model's MSE (and of 1 - SSIM) separating the 9s
   from the other digits, against the AUC of PCA's reconstruction MSE at the conv model's code
   size (128 components for the 4x4x8 code), PCA fitted on the same training digits 0-8;
2. Fashion-MNIST as the anomaly: AUC of the same scores separating the Fashion-MNIST test set
   from the MNIST test set;
3. a calibration: ``aeq.score(..., calibrate=True)`` on the digits 0-8 of the first half of the
   test set, then the share of the second half's 9s and of its other digits above the 99th
   percentile (detections and false alarms);
4. the picture of the 10 worst-scored items of the MNIST test set (``--top``'s picture), with
   their labels.

It prints a Markdown table and writes ``anomaly.json`` and ``anomaly-top.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from aeq.core.catalog import MODELS
from aeq.core.idx import read_idx
from aeq.core.settings import load_settings

MODEL = "conv"
ANOMALOUS_DIGIT = 9
TOP_ITEMS = 10
CALIBRATION_PERCENTILE = 99.0


def roc_auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """The probability that a positive scores above a negative (ties count half): ROC AUC."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([negatives, positives]))
    positive_ranks = ranks[len(negatives) :].sum()
    count = len(positives)
    return float((positive_ranks - count * (count + 1) / 2) / (count * len(negatives)))


def measure(repository: Path, data: Path, fashion: Path, out: Path) -> dict[str, Any]:
    """Run the four measurements; write ``anomaly.json`` and ``anomaly-top.png`` into ``out``."""
    import aeq
    from aeq.evaluation.baselines import PcaBaseline
    from training.data import load_mnist
    from worker.scoring import item_scores

    mnist = load_mnist(data)
    fashion_images = _fashion_test_images(fashion)
    normal = mnist.train_labels != ANOMALOUS_DIGIT
    code_size = MODELS[MODEL].code_dim
    pca = PcaBaseline(mnist.train_images[normal] / 255.0, [code_size])

    def pca_mse(images: np.ndarray) -> np.ndarray:
        rebuilt = pca.reconstruct(images / 255.0, code_size)
        pixels = np.rint(rebuilt * 255.0).astype(np.uint8)
        return item_scores(images, pixels)[:, 0]

    test, labels = mnist.test_images, mnist.test_labels
    aeq.reconstruct(test[:512], MODEL, repository=repository, broker_url="")  # sessions made
    started = time.perf_counter()
    aeq.reconstruct(test, MODEL, repository=repository, broker_url="")
    reconstruct_s = time.perf_counter() - started
    scores = aeq.score(test, MODEL, repository=repository, broker_url="")
    score_s = time.perf_counter() - started - reconstruct_s
    fashion_scores = aeq.score(fashion_images, MODEL, repository=repository, broker_url="")
    nines = labels == ANOMALOUS_DIGIT
    pca_test, pca_fashion = pca_mse(test), pca_mse(fashion_images)
    results: dict[str, Any] = {
        "model": scores.label,
        "data": mnist.source,
        "pca_components": code_size,
        "pca_fitted_on": int(normal.sum()),
        "digit_9": {
            "test_items": len(test),
            "nines": int(nines.sum()),
            "auc_conv_mse": roc_auc(scores.mse[~nines], scores.mse[nines]),
            "auc_conv_1_minus_ssim": roc_auc(-scores.ssim[~nines], -scores.ssim[nines]),
            "auc_pca_mse": roc_auc(pca_test[~nines], pca_test[nines]),
            "mean_mse_conv_by_digit": [
                float(scores.mse[labels == digit].mean()) for digit in range(10)
            ],
        },
        "fashion": {
            "items": len(fashion_images),
            "auc_conv_mse": roc_auc(scores.mse, fashion_scores.mse),
            "auc_conv_1_minus_ssim": roc_auc(-scores.ssim, -fashion_scores.ssim),
            "auc_pca_mse": roc_auc(pca_test, pca_fashion),
        },
        "calibration": _calibrated(repository, test, labels),
        "top": _top_picture(repository, test, labels, scores, out),
        "seconds_local": {"reconstruct": reconstruct_s, "score": score_s},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "anomaly.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _fashion_test_images(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("t10k-images*"))
    if not files:
        raise SystemExit(f"no t10k-images file in {folder} (apt-get install dataset-fashion-mnist)")
    return read_idx(str(files[0]))


def _calibrated(repository: Path, test: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Calibrate on the first half's digits 0-8; count the second half's items above p99."""
    import aeq

    half = len(test) // 2
    clean = test[:half][labels[:half] != ANOMALOUS_DIGIT]
    aeq.score(clean, MODEL, repository=repository, broker_url="", calibrate=True)
    later = aeq.score(test[half:], MODEL, repository=repository, broker_url="")
    above = later.above(CALIBRATION_PERCENTILE)
    levels = dict(later.calibration.percentiles) if later.calibration else {}
    nines = labels[half:] == ANOMALOUS_DIGIT
    return {
        "calibrated_on": len(clean),
        "percentile": CALIBRATION_PERCENTILE,
        "threshold_mse": levels[CALIBRATION_PERCENTILE],
        "nines_above": [int(above[nines].sum()), int(nines.sum())],
        "others_above": [int(above[~nines].sum()), int((~nines).sum())],
    }


def _top_picture(
    repository: Path, test: np.ndarray, labels: np.ndarray, scores: Any, out: Path
) -> dict[str, Any]:
    """Draw the worst items as ``aeq score --top`` does; return their labels."""
    from aeq.client.scoring import draw_worst
    from aeq.files.memory import images_from_array
    from aeq.repository import ModelRepository

    settings = load_settings().with_overrides(model_repository=repository)
    version = ModelRepository(repository).get(MODEL)
    out.mkdir(parents=True, exist_ok=True)
    path = draw_worst(
        settings, version, images_from_array(test), scores, TOP_ITEMS, out / "anomaly-top.png"
    )
    worst = scores.worst(TOP_ITEMS)
    return {"picture": str(path), "labels": labels[worst].tolist(), "items": worst.tolist()}


def markdown(results: dict[str, Any]) -> str:
    """The results as the table docs/RESULTS.md shows."""
    nine, fashion, calibration = results["digit_9"], results["fashion"], results["calibration"]
    k = results["pca_components"]
    lines = [
        f"| anomaly (vs MNIST test) | {results['model']} MSE | {results['model']} 1 - SSIM "
        f"| PCA-{k} MSE |",
        "| --- | ---: | ---: | ---: |",
        f"| digit 9 ({nine['nines']} of {nine['test_items']} test digits) "
        f"| {nine['auc_conv_mse']:.3f} | {nine['auc_conv_1_minus_ssim']:.3f} "
        f"| {nine['auc_pca_mse']:.3f} |",
        f"| Fashion-MNIST test ({fashion['items']} items) | {fashion['auc_conv_mse']:.3f} "
        f"| {fashion['auc_conv_1_minus_ssim']:.3f} | {fashion['auc_pca_mse']:.3f} |",
        "",
        f"Calibrated on {calibration['calibrated_on']} known-good test digits (first half, 0-8): "
        f"p{calibration['percentile']:g} MSE {calibration['threshold_mse']:.4g}; in the second "
        f"half, {calibration['nines_above'][0]} of {calibration['nines_above'][1]} nines and "
        f"{calibration['others_above'][0]} of {calibration['others_above'][1]} other digits "
        "are above it.",
        "Mean conv MSE by digit: "
        + ", ".join(f"{d}: {m:.4f}" for d, m in enumerate(nine["mean_mse_conv_by_digit"]))
        + ".",
        f"Local mode, {nine['test_items']} items: reconstruct "
        f"{results['seconds_local']['reconstruct']:.2f} s, score "
        f"{results['seconds_local']['score']:.2f} s.",
        f"Labels of the {len(results['top']['labels'])} worst-scored test digits: "
        f"{' '.join(map(str, results['top']['labels']))}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m aeq.evaluation.anomaly")
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="MNIST IDX folder or .npz")
    parser.add_argument("--fashion", type=Path, required=True, help="Fashion-MNIST IDX folder")
    parser.add_argument("--out", type=Path, default=Path("reports/anomaly"))
    args = parser.parse_args(argv)
    results = measure(args.repository, args.data, args.fashion, args.out)
    print(markdown(results))
    print(f"\nwritten: {args.out / 'anomaly.json'}, {results['top']['picture']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
