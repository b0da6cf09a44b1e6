"""The report's measurements, one function per section, each returning plain data for metrics.json.

1. ``reconstruction``: MSE/PSNR of each model on the clean test images, next to PCA at the same
   code size and to the mean training image.
2. ``denoising``: PSNR/SSIM against the clean images, at several noise factors, of the noisy input,
   every model, PCA projections and a median filter.
3. ``sparsity_section``: how many code values are exactly zero, per model.
4. ``features``: k-NN test accuracy with codes, PCA coordinates or raw pixels as features.

The models' outputs on the clean images are computed once (``run_models``) and shared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aeq.core.catalog import PIXELS_PER_IMAGE
from aeq.core.noise import add_noise
from aeq.evaluation.baselines import MEDIAN_WINDOW_PX, PcaBaseline, median_filter
from aeq.evaluation.dataset import EvalData
from aeq.evaluation.metrics import mean_ssim, mse, psnr_from_mse, sparsity
from aeq.evaluation.served import ServedModel, quantized

# The noise factors of the denoising table (standard deviation of the added Gaussian noise).
NOISE_FACTORS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
# PCA sizes always reported: the dense models' 64-d code and the conv model's 4x4x8 = 128.
REFERENCE_PCA_SIZES = (64, 128)
# For denoising, PCA may also pick its own size; the candidates, chosen on noisy training images.
PCA_DENOISING_CANDIDATES = (8, 16, 32, 64, 128)
# Neighbours of the k-NN classifier (scikit-learn's default, Euclidean distance).
KNN_NEIGHBOURS = 5
# How many test images a figure shows side by side.
SAMPLE_IMAGES = 10

NOISY_INPUT = "noisy input"
MEDIAN = f"median filter {MEDIAN_WINDOW_PX}x{MEDIAN_WINDOW_PX}"
PCA_BEST = "PCA, best k"


def pca_label(components: int) -> str:
    """How tables name a PCA projection: ``PCA-64``."""
    return f"PCA-{components}"


@dataclass
class ModelOutputs:
    """One model's outputs on the clean images, computed once and shared by the sections."""

    model: ServedModel
    reconstruction: np.ndarray
    test_codes: np.ndarray
    train_codes: np.ndarray


def run_models(models: Sequence[ServedModel], data: EvalData) -> dict[str, ModelOutputs]:
    """Reconstruct the test images and encode the training and test images with every model."""
    return {
        model.name: ModelOutputs(
            model=model,
            reconstruction=model.reconstruct(data.test_images),
            test_codes=model.encode(data.test_images),
            train_codes=model.encode(data.train_images),
        )
        for model in models
    }


def pca_sizes(models: Sequence[ServedModel]) -> list[int]:
    """PCA sizes the report uses: the reference sizes, the denoising candidates and every
    undercomplete model's code size."""
    sizes = set(REFERENCE_PCA_SIZES) | set(PCA_DENOISING_CANDIDATES)
    sizes |= {model.code_dim for model in models if model.code_dim < PIXELS_PER_IMAGE}
    return sorted(sizes)


def same_size_pca(code_dim: int, pca: PcaBaseline) -> int | None:
    """The PCA size a model is compared with: its code size, if PCA was fitted that large.

    An overcomplete code (the denoising model's 7x7x32 = 1568 > 784 pixels) has none: PCA
    with 784 components is the identity.
    """
    return code_dim if code_dim in pca.sizes else None


def error_row(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """MSE and PSNR of ``estimate`` against ``reference``."""
    error = mse(reference, estimate)
    return {"mse": error, "psnr": psnr_from_mse(error)}


def reconstruction(
    outputs: Mapping[str, ModelOutputs], pca: PcaBaseline, data: EvalData
) -> dict[str, Any]:
    """Section 1: each model's reconstruction error against PCA at its code size."""
    test = data.test_images
    pca_rows = {str(k): error_row(test, pca.reconstruct(test, k)) for k in pca.sizes}
    mean_image = np.broadcast_to(data.train_images.mean(axis=0), test.shape)
    rows = []
    for name, out in outputs.items():
        k = same_size_pca(out.model.code_dim, pca)
        training = out.model.config.get("training", {})
        rows.append(
            {
                "model": name,
                "label": out.model.label,
                "code_dim": out.model.code_dim,
                **error_row(test, out.reconstruction),
                "pca_components": k,
                "pca_mse": pca_rows[str(k)]["mse"] if k else None,
                "pca_psnr": pca_rows[str(k)]["psnr"] if k else None,
                "training_record_test_mse": training.get("test_mse"),
            }
        )
    return {"rows": rows, "pca": pca_rows, "mean_image": error_row(test, mean_image)}


def denoising(
    outputs: Mapping[str, ModelOutputs],
    pca: PcaBaseline,
    data: EvalData,
    factors: Sequence[float] = NOISE_FACTORS,
    seed: int = 0,
) -> dict[str, Any]:
    """Section 2: PSNR/SSIM against the clean test images of every method, per noise factor.

    The noise is ``aeq.core.noise.add_noise`` (the training corruption), drawn from a generator
    seeded by ``(seed, factor)`` so each factor's noisy images are reproducible on their own,
    and rounded to 8 bits as an image file would hold it; every method gets the same images.
    PCA's best size is chosen per factor on noisy *training* images, never on the test set.
    """
    methods: dict[str, dict[str, list[float]]] = {}
    best_sizes = []
    for factor in factors:
        rng = noise_rng(seed, factor)
        noisy = quantized(add_noise(data.test_images, rng, factor))
        best = best_pca_size(pca, data.train_images, rng, factor)
        best_sizes.append(best)
        for method, estimate in denoisers(outputs, pca, noisy, best).items():
            scores = methods.setdefault(method, {"mse": [], "psnr": [], "ssim": []})
            error = mse(data.test_images, estimate)
            scores["mse"].append(error)
            scores["psnr"].append(psnr_from_mse(error))
            scores["ssim"].append(mean_ssim(data.test_images, estimate))
    return {
        "factors": list(factors),
        "noise": "clip(x + factor * N(0, 1), 0, 1), as in training",
        "seed": seed,
        "pca_best_components": best_sizes,
        "methods": methods,
    }


def noise_rng(seed: int, factor: float) -> np.random.Generator:
    """The generator one noise factor's images are drawn from: the test images' noise first,
    then the training images' (for choosing PCA's size), so a figure can redraw the same noise."""
    return np.random.default_rng([seed, round(factor * 1000)])


def denoisers(
    outputs: Mapping[str, ModelOutputs], pca: PcaBaseline, noisy: np.ndarray, best_k: int
) -> dict[str, np.ndarray]:
    """Every method's estimate of the clean images from ``noisy``, by table name."""
    estimates = {NOISY_INPUT: noisy}
    for name, out in outputs.items():
        estimates[name] = out.model.reconstruct(noisy)
    for k in REFERENCE_PCA_SIZES:
        if k in pca.sizes:
            estimates[pca_label(k)] = pca.reconstruct(noisy, k)
    estimates[PCA_BEST] = pca.reconstruct(noisy, best_k)
    estimates[MEDIAN] = median_filter(noisy)
    return estimates


def best_pca_size(
    pca: PcaBaseline, train_images: np.ndarray, rng: np.random.Generator, factor: float
) -> int:
    """The PCA size (of ``PCA_DENOISING_CANDIDATES``) that best denoises noisy training images."""
    noisy = add_noise(train_images, rng, factor)
    candidates = [k for k in PCA_DENOISING_CANDIDATES if k in pca.sizes]
    errors = [mse(train_images, pca.reconstruct(noisy, k)) for k in candidates]
    return candidates[int(np.argmin(errors))]


def sparsity_section(outputs: Mapping[str, ModelOutputs]) -> dict[str, Any]:
    """Section 3: sparsity of every model's codes on the test images."""
    return {name: sparsity(out.test_codes).as_dict() for name, out in outputs.items()}


def features(
    outputs: Mapping[str, ModelOutputs], pca: PcaBaseline, data: EvalData
) -> dict[str, Any]:
    """Section 4: k-NN test accuracy with codes, PCA coordinates or raw pixels as features.

    The classifier is fitted on the training images' features and labels and scored on the test
    images' features: the same split the autoencoders and PCA were fitted on / measured on.
    """
    train_flat = data.train_images.reshape(len(data.train_images), -1)
    test_flat = data.test_images.reshape(len(data.test_images), -1)
    candidates: list[tuple[str, str, np.ndarray, np.ndarray]] = [
        ("raw pixels", "pixels", train_flat, test_flat)
    ]
    for k in REFERENCE_PCA_SIZES:
        if k in pca.sizes:
            candidates.append(
                (pca_label(k), "pca", pca.encode(data.train_images, k), pca.encode(test_flat, k))
            )
    for name, out in outputs.items():
        candidates.append((name, "code", out.train_codes, out.test_codes))
    rows = [
        {
            "features": label,
            "kind": kind,
            "dims": int(train.shape[1]),
            "accuracy": knn_accuracy(train, data.train_labels, test, data.test_labels),
        }
        for label, kind, train, test in candidates
    ]
    return {"classifier": f"{KNN_NEIGHBOURS}-nearest neighbours, Euclidean", "rows": rows}


def knn_accuracy(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray
) -> float:
    """Test accuracy of a k-NN classifier fitted on (train, train_labels)."""
    from sklearn.neighbors import KNeighborsClassifier

    neighbours = min(KNN_NEIGHBOURS, len(train))
    classifier = KNeighborsClassifier(n_neighbors=neighbours).fit(train, train_labels)
    return float(classifier.score(test, test_labels))


def sample_indices(labels: np.ndarray, count: int = SAMPLE_IMAGES) -> np.ndarray:
    """The first test image of each digit (then the next images), ``count`` in all."""
    firsts = [int(np.argmax(labels == digit)) for digit in np.unique(labels)]
    rest = [index for index in range(len(labels)) if index not in set(firsts)]
    return np.array((firsts + rest)[:count], dtype=np.int64)
