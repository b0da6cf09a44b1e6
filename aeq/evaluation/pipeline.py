"""``aeq evaluate`` end to end: load the published models and MNIST, measure, draw, report.

The report is assembled in a staging folder beside the output and renamed into place at the end,
so an interrupted run leaves no half-written report behind.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from aeq.core.catalog import MODELS, NOISE_FACTOR, PIXELS_PER_IMAGE
from aeq.core.durable import staged_folder
from aeq.core.errors import ModelNotFoundError, OutputExistsError
from aeq.core.noise import add_noise
from aeq.core.settings import Settings
from aeq.evaluation import embedding, experiments, figures, report
from aeq.evaluation.baselines import MEDIAN_WINDOW_PX, PcaBaseline, median_filter
from aeq.evaluation.claims import read_claims
from aeq.evaluation.dataset import EvalData, load_eval_data
from aeq.evaluation.served import ServedModel, load, quantized
from aeq.repository import ModelRepository
from worker.inference import Engine

# --quick: enough images for every number to be computed, few enough for a test or a smoke run.
QUICK_TRAIN_IMAGES = 1000
QUICK_TEST_IMAGES = 1000
QUICK_MAP_POINTS = 300
# The dense models' codes are 64 values; the sparsity histogram shows codes up to this size.
HISTOGRAM_MAX_CODE = 128
# What the report keeps of each model's training record (the rest stays in config.json).
TRAINING_KEYS = (
    "data_source",
    "train_images",
    "validation_images",
    "recipe",
    "epochs_run",
    "best_epoch",
    "stopped_early",
    "test_mse",
    "test_input",
    "seed",
    "duration_s",
    "collapsed",
)


@dataclass(frozen=True)
class Options:
    """How ``aeq evaluate`` runs.

    Attributes:
        quick: use subsets (``QUICK_*``) instead of the full training and test sets.
        seed: seeds the noise, PCA and t-SNE.
        overwrite: replace an existing output folder.
        command: the command line, recorded in the report.
        progress: called with one line as each model loads and each stage starts and ends (the
            command prints them on stderr: a full run takes minutes).
    """

    quick: bool = False
    seed: int = 0
    overwrite: bool = False
    command: str = "aeq evaluate all"
    progress: Callable[[str], None] = lambda line: None


def model_names(repository: ModelRepository, model: str) -> list[str]:
    """The models to evaluate: ``all`` = every catalogued model with a published version.

    Raises:
        ModelNotFoundError: unknown model, or nothing published.
    """
    if model != "all":
        repository.get(model)  # raises with the list of what is published
        return [model]
    names = [name for name in MODELS if repository.versions(name)]
    if not names:
        raise ModelNotFoundError(
            f"no models published in {repository.root}; run 'aeq train all' and 'aeq export all' "
            "first (or point --repository / AEQ_MODEL_REPOSITORY at a model repository)"
        )
    return names


def evaluate(
    model: str,
    repository: ModelRepository,
    data: Path | None,
    settings: Settings,
    out: Path,
    options: Options,
) -> Path:
    """Evaluate ``model`` (or ``all``) and write the report folder ``out``; returns ``out``.

    Raises:
        OutputExistsError: ``out`` exists and ``options.overwrite`` is false.
        ModelNotFoundError, IntegrityError: a model cannot be loaded.
        DataUnavailableError, InputError: no usable MNIST.
    """
    started = time.monotonic()
    if out.exists() and not options.overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite or choose another --out")
    engine = Engine(settings)
    models = []
    for name in model_names(repository, model):
        models.append(load(repository, name, settings, engine))
        options.progress(f"loaded {models[-1].label}")
    limits = (QUICK_TRAIN_IMAGES, QUICK_TEST_IMAGES) if options.quick else (None, None)
    eval_data = load_eval_data(data, settings, *limits)
    options.progress(f"data: {eval_data.source}")
    with staged_folder(out) as staging:
        metrics = measure_and_draw(staging, models, eval_data, options)
        metrics["duration_s"] = time.monotonic() - started
        report.write_metrics(staging, metrics)
        report.write_report(staging, metrics)
    return out


def measure_and_draw(
    folder: Path, models: Sequence[ServedModel], data: EvalData, options: Options
) -> dict[str, Any]:
    """Compute every section's numbers, draw the figures into ``folder``, return the metrics."""
    timings: dict[str, float] = {}
    with _timed(timings, "models_and_pca", options.progress):
        pca = PcaBaseline(data.train_images, experiments.pca_sizes(models), options.seed)
        outputs = experiments.run_models(models, data)
    metrics: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": options.command,
        "git_commit": git_commit(),
        "data": {
            "source": data.source,
            "train_images": len(data.train_images),
            "test_images": len(data.test_images),
        },
        "models": {model.name: model_info(model) for model in models},
    }
    sections = {
        "reconstruction": lambda: experiments.reconstruction(outputs, pca, data),
        "denoising": lambda: experiments.denoising(outputs, pca, data, seed=options.seed),
        "sparsity": lambda: experiments.sparsity_section(outputs),
        "features": lambda: experiments.features(outputs, pca, data),
    }
    for name, compute in sections.items():
        with _timed(timings, name, options.progress):
            metrics[name] = compute()
    points = QUICK_MAP_POINTS if options.quick else embedding.MAP_POINTS
    with _timed(timings, "figures", options.progress):
        metrics["maps"] = draw_figures(folder, outputs, pca, data, metrics, points, options.seed)
    metrics["claims"] = [claim.as_dict() for claim in read_claims(metrics)]
    metrics["notes"] = notes(metrics)
    metrics["figures"] = sorted(path.name for path in folder.glob("*.png"))
    metrics["timings_s"] = timings
    return metrics


@contextmanager
def _timed(timings: dict[str, float], key: str, progress: Callable[[str], None]) -> Iterator[None]:
    stage = key.replace("_", " ")
    progress(f"{stage}...")
    started = time.monotonic()
    yield
    timings[key] = round(time.monotonic() - started, 1)
    progress(f"{stage}: {timings[key]:.1f} s")


def model_info(model: ServedModel) -> dict[str, Any]:
    """What the report says about a model: version, code shape, the gist of its training record."""
    config = model.config
    training = config.get("training", {})
    return {
        "label": model.label,
        "code_dim": model.code_dim,
        "code_dims": list(config.get("code_dims", [model.code_dim])),
        "noisy_input": model.noisy_input,
        "providers": sorted(model.providers),
        "training": {key: training[key] for key in TRAINING_KEYS if key in training},
    }


def draw_figures(
    folder: Path,
    outputs: Mapping[str, experiments.ModelOutputs],
    pca: PcaBaseline,
    data: EvalData,
    metrics: Mapping[str, Any],
    points: int,
    seed: int,
) -> dict[str, Any]:
    """Draw every figure of the report into ``folder``; returns what the code maps used."""
    picks = experiments.sample_indices(data.test_labels)
    originals = data.test_images[picks]
    pca_k = experiments.REFERENCE_PCA_SIZES[0]
    pca_k = pca_k if pca_k in pca.sizes else max(pca.sizes)
    rows = [("test image", originals)]
    rows += [(name, out.reconstruction[picks]) for name, out in outputs.items()]
    rows.append((experiments.pca_label(pca_k), pca.reconstruct(originals, pca_k)))
    figures.image_grid(folder / report.FIGURES["reconstructions"], rows, "Reconstructions")
    figures.denoising_curves(folder / report.FIGURES["denoising_curves"], metrics["denoising"])
    draw_denoising_examples(folder, outputs, pca, data, metrics["denoising"], picks, seed)
    small = {
        name: out.test_codes
        for name, out in outputs.items()
        if out.model.code_dim <= HISTOGRAM_MAX_CODE
    }
    if small:
        figures.sparsity_histogram(folder / report.FIGURES["sparsity"], small)
    chosen = embedding.map_indices(len(data.test_images), points)
    features = {"raw pixels": data.test_images[chosen].reshape(len(chosen), PIXELS_PER_IMAGE)}
    features |= {name: out.test_codes[chosen] for name, out in outputs.items()}
    maps = embedding.code_maps(features, seed)
    figures.code_map_grid(folder / report.FIGURES["code_maps"], maps, data.test_labels[chosen])
    return {
        "points": len(chosen),
        "perplexity": min(embedding.TSNE_PERPLEXITY, (len(chosen) - 1) / 3),
    }


def draw_denoising_examples(
    folder: Path,
    outputs: Mapping[str, experiments.ModelOutputs],
    pca: PcaBaseline,
    data: EvalData,
    denoising: Mapping[str, Any],
    picks: np.ndarray,
    seed: int,
) -> None:
    """The grid of clean / noisy / denoised images at the training noise (0.5)."""
    # Redraw the table's noise for this factor, then keep the picked images.
    rng = experiments.noise_rng(seed, NOISE_FACTOR)
    noisy = quantized(add_noise(data.test_images, rng, NOISE_FACTOR))[picks]
    best_k = denoising["pca_best_components"][denoising["factors"].index(NOISE_FACTOR)]
    rows = [("test image", data.test_images[picks]), (f"noisy ({NOISE_FACTOR})", noisy)]
    rows += [(name, out.model.reconstruct(noisy)) for name, out in outputs.items()]
    rows.append((f"PCA-{best_k} (best k)", pca.reconstruct(noisy, best_k)))
    rows.append((f"median {MEDIAN_WINDOW_PX}x{MEDIAN_WINDOW_PX}", median_filter(noisy)))
    path = folder / report.FIGURES["denoising_examples"]
    figures.image_grid(path, rows, f"Denoising at noise factor {NOISE_FACTOR}")


def notes(metrics: Mapping[str, Any]) -> list[str]:
    """How the numbers are made, for the report's last section."""
    in_use = {p for info in metrics["models"].values() for p in info["providers"]}
    providers = ", ".join(sorted(in_use)) or "none"
    return [
        "Every model runs through the service's own inference engine (worker.inference.Engine): "
        "uint8 pixels in, the published ONNX graph (sha256-checked) in ONNX Runtime, uint8 "
        f"pixels out; execution provider(s): {providers}.",
        "Noisy images are rounded to 8 bits, as an image file holds them; every method in the "
        "denoising table gets these same images.",
        "MSE is the mean over all pixels of all test images (pixels in [0, 1]); PSNR = "
        "10·log10(1 / MSE), so the PSNR and MSE columns agree.",
        "SSIM is scikit-image's structural_similarity (7x7 uniform window, data range 1) per "
        "image, averaged over the test images.",
        f"PCA (scikit-learn, full SVD) is fitted on the {metrics['data']['train_images']} "
        "training images of the evaluation data (the models trained on these less their "
        "validation split); its reconstructions are clipped to [0, 1] like the models' sigmoid "
        "outputs, which can only help PCA.",
        "The denoising model's code is 7x7x32 = 1568 values, twice the 784 pixels: no same-size "
        "PCA exists (784 components reconstruct exactly), so it is compared with PCA-64/128 for "
        "scale and judged on denoising.",
        "Sparsity counts code values that are exactly 0.0 (ReLU outputs, max-pooled for conv).",
        "k-NN uses the codes as they come out of the encoder (no scaling); PCA features are the "
        "PCA coordinates.",
    ]


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` if files differ), or ``None`` outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit
