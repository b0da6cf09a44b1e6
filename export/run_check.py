"""The check an ONNX model made elsewhere passes before it is published, in place of Keras parity.

There is no Keras model to compare with. So ONNX Runtime (CPU provider, loaded from the very bytes
about to be published) runs each graph on real MNIST test images, in the graph's pixel scale and
layout as a worker feeds it: images to the autoencoder and the encoder, the encoder's codes to
the decoder. Every output must be finite and of the shape the graph declares. A graph whose batch
dim is a number runs in pieces of that many; one whose batch is open runs a second, smaller batch
too, since a worker feeds it any number up to 512.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from aeq.core.catalog import Graph
from aeq.core.errors import InputError
from aeq.core.pixel_scale import PixelScale
from export.geometry import dims_text

if TYPE_CHECKING:
    from export.foreign import ForeignGraph

# MNIST test images the check runs (rounded up to a multiple of every fixed batch size).
RUN_CHECK_IMAGES = 16
# The second batch size a graph with an open batch dim runs at.
OTHER_BATCH = 3
PROVIDER = "CPUExecutionProvider"
# ONNX Runtime's log severity "fatal": errors are not logged, they are raised and reported.
SILENT_LOG_LEVEL = 4
# How much of a library's (often multi-line) error message a refusal quotes.
REASON_CHARS = 200


@dataclass(frozen=True)
class RunCheck:
    """What the check ran and saw.

    Attributes:
        images: how many MNIST test images each graph ran on.
        output_range: the autoencoder's smallest and largest output value, in the graph's pixel
            scale (far outside it, the scale given is likely not the graph's).
        runtime: the ONNX Runtime version and provider that ran it.
    """

    images: int
    output_range: tuple[float, float]
    runtime: str

    def to_json(self) -> dict[str, Any]:
        """What ``config.json``'s ``run_check`` holds (the caller adds ``data_source``)."""
        return {
            "images": self.images,
            "output_range": list(self.output_range),
            "runtime": self.runtime,
        }


def images_needed(graphs: Mapping[Graph, ForeignGraph]) -> int:
    """``RUN_CHECK_IMAGES``, rounded up so that every fixed-batch graph runs whole batches."""
    step = _whole_batches(graphs)
    return -(-RUN_CHECK_IMAGES // step) * step


def run_check(
    graphs: Mapping[Graph, ForeignGraph], scale: PixelScale, images: np.ndarray
) -> RunCheck:
    """Run every graph on ``images`` (floats in [0, 1], ``images_needed`` of them).

    Raises:
        InputError: a graph does not load or run, or gives outputs that are not finite or not
            of its declared shape.
    """
    import onnxruntime

    whole = len(images) // _whole_batches(graphs) * _whole_batches(graphs)
    if not whole:
        raise ValueError(f"{len(images)} images are fewer than {images_needed(graphs)}")
    flat = np.asarray(images[:whole], np.float32).reshape(whole, -1)
    values = scale.low + flat * (scale.high - scale.low)
    reconstructions = run_graph(graphs[Graph.AUTOENCODER], values)
    if Graph.ENCODER in graphs:
        run_graph(graphs[Graph.DECODER], run_graph(graphs[Graph.ENCODER], values))
    low, high = float(reconstructions.min()), float(reconstructions.max())
    return RunCheck(len(values), (low, high), f"onnxruntime {onnxruntime.__version__}, {PROVIDER}")


def run_graph(graph: ForeignGraph, inputs: np.ndarray) -> np.ndarray:
    """Run ``graph`` on ``inputs`` (one flat row per item); its outputs, one flat row each."""
    session = _session(graph)
    shaped = inputs.reshape(len(inputs), *graph.input.dims[1:])
    batch = graph.fixed_batch or len(shaped)
    pieces = range(0, len(shaped), batch)
    outputs = [_run(graph, session, shaped[start : start + batch]) for start in pieces]
    if graph.fixed_batch is None:
        _run(graph, session, shaped[:OTHER_BATCH], " (its batch dim is open: any number goes)")
    output = np.concatenate(outputs)
    return output.reshape(len(output), -1)


def _whole_batches(graphs: Mapping[Graph, ForeignGraph]) -> int:
    """The smallest image count every graph with a fixed batch size runs in whole batches."""
    return math.lcm(*(graph.fixed_batch or 1 for graph in graphs.values()))


def error_line(error: BaseException) -> str:
    """A library's error message on one line, shortened (onnx's name a node on the next lines)."""
    line = " ".join(str(error).split()) or type(error).__name__
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"


def _session(graph: ForeignGraph) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # A failure is reported in one line of ours; ONNX Runtime's own log would add a page.
    options.log_severity_level = SILENT_LOG_LEVEL
    try:
        return onnxruntime.InferenceSession(graph.data, options, providers=[PROVIDER])
    except Exception as error:  # noqa: BLE001 - ONNX Runtime raises its own untyped errors
        raise InputError(
            f"{graph.path} does not load in ONNX Runtime {onnxruntime.__version__}: "
            f"{error_line(error)}"
        ) from None


def _run(graph: ForeignGraph, session: Any, feed: np.ndarray, note: str = "") -> np.ndarray:
    name, count = graph.path, len(feed)
    try:
        (output,) = session.run([graph.output.name], {graph.input.name: feed})
    except Exception as error:  # noqa: BLE001 - ONNX Runtime raises its own untyped errors
        raise InputError(
            f"{name} fails in ONNX Runtime on a batch of {count} MNIST test images{note}: "
            f"{error_line(error)}"
        ) from None
    declared = graph.output.dims
    if not _has_shape(output.shape, declared, count):
        raise InputError(
            f"{name} gives an output of shape {list(output.shape)} for {count} images; the "
            f"graph declares {dims_text(declared)}"
        )
    if not np.isfinite(output).all():
        raise InputError(f"{name} gives NaN or infinite values on MNIST test images")
    return np.asarray(output)


def _has_shape(shape: tuple[int, ...], declared: tuple[int, ...], count: int) -> bool:
    """``shape`` is ``declared`` with ``count`` items (open dims past the batch match any)."""
    if len(shape) != len(declared) or shape[0] != count:
        return False
    return all(want <= 0 or want == got for want, got in zip(declared[1:], shape[1:], strict=True))
