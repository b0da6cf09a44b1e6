"""The article's four claims, each read against the measured numbers by a rule stated up front.

The verdicts are computed, never written by hand: each function takes the metrics (as stored in
metrics.json) and returns a ``Claim`` with its rule, verdict and the numbers behind it. A claim
whose models were not evaluated is "not measured", never "holds".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aeq.core.catalog import NOISE_FACTOR, PIXELS_PER_IMAGE
from aeq.evaluation.experiments import MEDIAN, NOISY_INPUT, PCA_BEST, pca_label

HOLDS = "holds"
PARTLY = "partly holds"
FAILS = "does not hold"
UNTESTED = "not measured"
# An undercomplete code "keeps the salient features" if k-NN on it loses at most this much
# accuracy (absolute, as a fraction) against k-NN on all 784 pixels.
SALIENT_ACCURACY_MARGIN = 0.02


@dataclass(frozen=True)
class Claim:
    """One claim of the article and what the numbers say about it.

    Attributes:
        key: short identifier.
        statement: the claim, in the article's words.
        rule: how the verdict is decided, stated before looking at the numbers.
        verdict: ``holds``, ``partly holds``, ``does not hold`` or ``not measured``.
        evidence: the numbers behind the verdict, one sentence or a few.
    """

    key: str
    statement: str
    rule: str
    verdict: str
    evidence: str

    def as_dict(self) -> dict[str, str]:
        """Plain data for metrics.json."""
        return asdict(self)


def read_claims(metrics: Mapping[str, Any]) -> list[Claim]:
    """Read all four claims against ``metrics`` (the dict written to metrics.json)."""
    return [
        salient_features(metrics),
        sparser_code(metrics),
        removes_noise(metrics),
        beats_pca(metrics),
    ]


def salient_features(metrics: Mapping[str, Any]) -> Claim:
    """Claim 1: an undercomplete code keeps the salient features of the data."""
    statement = (
        "By training an undercomplete representation, we force the autoencoder to learn the "
        "most salient features of the training data."
    )
    rule = (
        "Holds for a model whose code is smaller than the 784 pixels if k-NN on its code is at "
        f"most {SALIENT_ACCURACY_MARGIN:.0%} (absolute) less accurate than k-NN on the raw "
        "pixels: the code then keeps what tells the digits apart. Holds if every undercomplete "
        "model passes, partly if some do."
    )
    accuracy = _accuracies(metrics)
    raw = accuracy.get("raw pixels")
    small = [row for row in _recon_rows(metrics) if row["code_dim"] < PIXELS_PER_IMAGE]
    if raw is None or not small:
        return Claim("salient", statement, rule, UNTESTED, "no undercomplete model evaluated")
    passed = [
        row["model"] for row in small if accuracy[row["model"]] >= raw - SALIENT_ACCURACY_MARGIN
    ]
    parts = [
        f"{row['model']} ({row['code_dim']} values, {PIXELS_PER_IMAGE / row['code_dim']:.1f}x "
        f"fewer than pixels) {accuracy[row['model']]:.1%}, reconstruction PSNR {row['psnr']:.1f} dB"
        for row in small
    ]
    evidence = f"k-NN test accuracy: raw pixels {raw:.1%}; " + "; ".join(parts) + "."
    return Claim("salient", statement, rule, _share(len(passed), len(small)), evidence)


def sparser_code(metrics: Mapping[str, Any]) -> Claim:
    """Claim 2: the L1 activity penalty makes the code sparser than the vanilla model's."""
    statement = (
        "[With the L1 activity regularizer] the representation is now sparser compared to the "
        "vanilla autoencoder."
    )
    rule = (
        "Holds if the sparse model's test codes have a larger fraction of exact zeros and fewer "
        "non-zero units per image than the vanilla model's."
    )
    stats = metrics.get("sparsity", {})
    if "vanilla" not in stats or "sparse" not in stats:
        return Claim("sparse", statement, rule, UNTESTED, "needs both vanilla and sparse")
    vanilla, sparse = stats["vanilla"], stats["sparse"]
    sparser = (
        sparse["zero_fraction"] > vanilla["zero_fraction"]
        and sparse["active_per_image"] < vanilla["active_per_image"]
    )
    errors = {row["model"]: row["mse"] for row in _recon_rows(metrics)}
    evidence = (
        f"exact zeros: sparse {sparse['zero_fraction']:.1%} vs vanilla "
        f"{vanilla['zero_fraction']:.1%}; non-zero units per image: sparse "
        f"{sparse['active_per_image']:.1f} vs vanilla {vanilla['active_per_image']:.1f} of 64; "
        f"mean activation {sparse['mean_activation']:.3f} vs {vanilla['mean_activation']:.3f}; "
        f"units never active: {sparse['dead_units']} vs {vanilla['dead_units']}; "
        f"the price: test MSE {errors['sparse']:.4f} vs {errors['vanilla']:.4f} "
        f"({errors['sparse'] / errors['vanilla'] - 1:+.0%})."
    )
    return Claim("sparse", statement, rule, HOLDS if sparser else FAILS, evidence)


def removes_noise(metrics: Mapping[str, Any]) -> Claim:
    """Claim 3: the denoising autoencoder removes the noise it was trained on."""
    statement = (
        "This can be done by adding some noise of the input image and make the autoencoder "
        "learn to remove it."
    )
    rule = (
        f"At noise factor {NOISE_FACTOR} (the training noise): holds if the denoising model's "
        "output has higher PSNR and SSIM than both the noisy input and the best classical "
        "baseline (median filter, PCA with its best size); partly if it only beats the noisy input."
    )
    denoising = metrics.get("denoising", {})
    methods = denoising.get("methods", {})
    if "denoising" not in methods or NOISE_FACTOR not in denoising.get("factors", []):
        return Claim("denoise", statement, rule, UNTESTED, "denoising model not evaluated at 0.5")
    at = denoising["factors"].index(NOISE_FACTOR)
    score = {name: (m["psnr"][at], m["ssim"][at]) for name, m in methods.items()}
    model, noisy = score["denoising"], score[NOISY_INPUT]
    baselines = [name for name in (MEDIAN, PCA_BEST) if name in score]
    best = max(baselines, key=lambda name: score[name][0])
    beats_noisy = model[0] > noisy[0] and model[1] > noisy[1]
    beats_best = all(model[0] > score[b][0] and model[1] > score[b][1] for b in baselines)
    verdict = HOLDS if beats_noisy and beats_best else PARTLY if beats_noisy else FAILS
    evidence = (
        f"PSNR / SSIM at noise {NOISE_FACTOR}: denoising model {model[0]:.1f} dB / {model[1]:.3f}; "
        f"noisy input {noisy[0]:.1f} dB / {noisy[1]:.3f}; best baseline ({best}) "
        f"{score[best][0]:.1f} dB / {score[best][1]:.3f}; " + _winners(denoising) + "."
    )
    return Claim("denoise", statement, rule, verdict, evidence)


def beats_pca(metrics: Mapping[str, Any]) -> Claim:
    """Claim 4: autoencoders can learn projections more useful than PCA."""
    statement = (
        "With appropriate dimensionality and sparsity constraints, autoencoders can learn data "
        "projections that are more interesting than PCA."
    )
    rule = (
        "For each model with a same-size PCA (64 or 128 components): is its test reconstruction "
        "MSE lower, and is k-NN on its code more accurate, than PCA's? Holds if some model wins "
        "both, partly if some model wins one, does not hold if PCA wins both for every model."
    )
    accuracy = _accuracies(metrics)
    compared = [row for row in _recon_rows(metrics) if row["pca_components"]]
    if not compared:
        return Claim("pca", statement, rule, UNTESTED, "no model with a same-size PCA evaluated")
    wins, parts = [], []
    for row in compared:
        pca_name = pca_label(row["pca_components"])
        recon_win = row["mse"] < row["pca_mse"]
        knn_win = pca_name in accuracy and accuracy[row["model"]] > accuracy[pca_name]
        wins.append((recon_win, knn_win))
        parts.append(
            f"{row['model']} vs {pca_name}: MSE {row['mse']:.4f} vs {row['pca_mse']:.4f}, "
            f"k-NN {accuracy[row['model']]:.1%} vs {accuracy.get(pca_name, float('nan')):.1%}"
        )
    verdict = (
        HOLDS
        if any(r and k for r, k in wins)
        else PARTLY
        if any(r or k for r, k in wins)
        else FAILS
    )
    return Claim("pca", statement, rule, verdict, "; ".join(parts) + ".")


def _recon_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(metrics.get("reconstruction", {}).get("rows", []))


def _accuracies(metrics: Mapping[str, Any]) -> dict[str, float]:
    rows = metrics.get("features", {}).get("rows", [])
    return {row["features"]: row["accuracy"] for row in rows}


def _share(passed: int, total: int) -> str:
    return HOLDS if passed == total else PARTLY if passed else FAILS


def _winners(denoising: Mapping[str, Any]) -> str:
    """Which method has the best PSNR at each noise factor, as a phrase."""
    methods: Mapping[str, Any] = denoising["methods"]
    pairs = ", ".join(
        f"{factor:g}: {max(methods, key=lambda name: methods[name]['psnr'][index])}"
        for index, factor in enumerate(denoising["factors"])
    )
    return f"best PSNR per noise factor: {pairs}"
