"""Small real ONNX models for the worker's unit tests, published into a real model repository.

The models are ``aeq.bench.tiny_models`` (built with ``onnx.helper``, no TensorFlow): graphs with
the published names, dtypes and dims of ``aeq export``'s graphs and simple known maths, so a test
can compute the expected output with numpy (``expected``):

    encoder:      code = relu(flatten(image) @ W)                     (N, code_dim)
    decoder:      reconstruction = reshape(sigmoid(code @ V))           (N, *input_dims)
    autoencoder:  reconstruction = decoder(encoder(image))
"""

from __future__ import annotations

import numpy as np

from aeq.bench.tiny_models import build_graph, publish_tiny, tiny_repository, weights
from aeq.core.catalog import Graph, ModelSpec
from aeq.queue.lost_messages import queue_lists
from aeq.queue.protocol import QUEUE

__all__ = ["build_graph", "expected", "publish_tiny", "random_images", "tiny_repository"]


def expected(spec: ModelSpec, graph: Graph, inputs: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the tiny graph computes, in float64 numpy (flat outputs)."""
    encoder, decoder = weights(spec, seed)
    flat = inputs.reshape(len(inputs), -1).astype(np.float64)
    if graph is Graph.DECODER:
        return 1 / (1 + np.exp(-(flat @ decoder)))
    code = np.maximum(flat @ encoder, 0)
    if graph is Graph.ENCODER:
        return code
    return 1 / (1 + np.exp(-(code @ decoder)))


def random_images(count: int, seed: int = 0) -> np.ndarray:
    """``count`` random uint8 images (N, 28, 28)."""
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28), dtype=np.uint8)


def pop_next_message(client) -> bytes | None:
    """Take the next chunk message as a worker's BRPOP does: the oldest of the first non-empty
    of the queue's priority lists."""
    for name in queue_lists(QUEUE):
        raw = client.rpop(name)
        if raw is not None:
            return raw
    return None
