"""The five autoencoders and the operations the service runs with them, declared once.

TensorFlow-free: the CLI, the worker and the tests loop over ``MODELS`` and ``OPERATIONS``; the
Keras builders live in ``training.architectures`` under the same names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

IMAGE_SIDE = 28
PIXELS_PER_IMAGE = IMAGE_SIDE * IMAGE_SIDE
# The article's denoising setup: x + 0.5 * N(0, 1), clipped back to [0, 1].
NOISE_FACTOR = 0.5
# Largest |ONNX Runtime - Keras| difference the parity gate accepts on any graph output.
PARITY_ATOL = 1e-4

# The architecture config.json records for an ONNX model made elsewhere ('aeq export --onnx'):
# not one of the five, never trained by aeq, and never published under one of their names.
FOREIGN_ARCHITECTURE = "onnx"

# Stable tensor names of every exported graph (never tf2onnx's generated ones).
IMAGE_TENSOR = "image"
CODE_TENSOR = "code"
RECONSTRUCTION_TENSOR = "reconstruction"
# What ``score`` returns per item, in this column order: the reconstruction's mean squared error
# and PSNR (dB) against the item as given, and its SSIM (7x7 window), all on pixels in [0, 1].
# Items are ranked by the first (higher = worse reconstructed = more anomalous).
SCORE_METRICS = ("mse", "psnr", "ssim")


class Graph(StrEnum):
    """The three ONNX graphs published for every model."""

    AUTOENCODER = "autoencoder"  # image -> reconstruction
    ENCODER = "encoder"  # image -> code
    DECODER = "decoder"  # code -> image


@dataclass(frozen=True)
class ModelSpec:
    """One of the article's autoencoders, as the service sees it.

    Attributes:
        name: registry key, used on the command line and in the model repository.
        input_dims: one image's shape at the autoencoder's input, batch excluded.
        code_dims: the code's shape inside the Keras model, batch excluded.
        noisy_input: trained on noisy inputs against clean targets (the denoising model).
        summary: one line for help texts and reports.
    """

    name: str
    input_dims: tuple[int, ...]
    code_dims: tuple[int, ...]
    noisy_input: bool
    summary: str

    @property
    def code_dim(self) -> int:
        """Length of the flattened code vector the encoder/decoder graphs use."""
        size = 1
        for dim in self.code_dims:
            size *= dim
        return size


_FLAT = (PIXELS_PER_IMAGE,)
_GRID = (IMAGE_SIDE, IMAGE_SIDE, 1)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("vanilla", _FLAT, (64,), False, "784-64-784 dense, one hidden layer"),
        ModelSpec("multilayer", _FLAT, (64,), False, "784-128-64-128-784 dense"),
        ModelSpec("conv", _GRID, (4, 4, 8), False, "convolutional, 4x4x8 code"),
        ModelSpec("sparse", _FLAT, (64,), False, "784-64-784 dense, L1 activity penalty"),
        ModelSpec("denoising", _GRID, (7, 7, 32), True, "convolutional, trained on noisy input"),
    )
}


class Operation(StrEnum):
    """What a job does to each item; each is a CLI verb and a Celery task kind."""

    DENOISE = "denoise"
    RECONSTRUCT = "reconstruct"
    ENCODE = "encode"
    DECODE = "decode"
    SCORE = "score"  # reconstruct, then keep only how far each item is from its reconstruction

    @property
    def graph(self) -> Graph:
        """The ONNX graph this operation runs."""
        return {
            Operation.DENOISE: Graph.AUTOENCODER,
            Operation.RECONSTRUCT: Graph.AUTOENCODER,
            Operation.ENCODE: Graph.ENCODER,
            Operation.DECODE: Graph.DECODER,
            Operation.SCORE: Graph.AUTOENCODER,
        }[self]

    @property
    def default_model(self) -> str | None:
        """The model used when ``--model`` is not given (decode: the one that made the codes)."""
        return {
            Operation.DENOISE: "denoising",
            Operation.RECONSTRUCT: "conv",
            Operation.ENCODE: "multilayer",
            Operation.DECODE: None,
            Operation.SCORE: "conv",
        }[self]


def model_spec(name: str) -> ModelSpec:
    """Look a model up by name, with the list of names in the error."""
    from aeq.core.errors import ModelNotFoundError

    try:
        return MODELS[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}; choose one of: {', '.join(MODELS)}"
        ) from None


# A published model's name: one of the five defaults', or one its user chose ('aeq train conv
# --name conv-fashion'). It names a folder of the model repository and travels in every chunk
# message, so it is a plain, portable file name.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_model_name(name: str, architecture: str | None = None) -> str:
    """``name`` if a model may be published under it (by a model of ``architecture``, if given).

    The five defaults' names stay theirs: ``conv`` is always a conv net.

    Raises:
        UsageError: not a plain name of 1-64 letters, digits, ``_.-``, or one of the five
            defaults' names taken by another architecture.
    """
    from aeq.core.errors import UsageError

    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise UsageError(
            f"model name {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    if architecture is not None and name in MODELS and name != architecture:
        raise UsageError(
            f"{name!r} is the name of the default {name} model; give the {architecture} model "
            "a name of its own"
        )
    return name
