"""Graph bytes into the model repository: the one publish step every exporter shares.

TensorFlow-free: ``aeq export`` (Keras models, ``export.exporter``), ``aeq export --onnx``
(``export.foreign``) and the benchmark's untrained models all publish through ``publish``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aeq.core.catalog import Graph
from aeq.repository import ModelRepository, ModelVersion


def graph_file(graph: Graph) -> str:
    """The file a graph is published as."""
    return f"{graph.value}.onnx"


def publish(
    repository: ModelRepository,
    name: str,
    onnx_bytes: Mapping[Graph, bytes],
    config: Mapping[str, Any],
) -> ModelVersion:
    """Publish the graphs' ONNX bytes with ``config`` as the next version of ``name``."""
    with tempfile.TemporaryDirectory(prefix=f"aeq-export-{name}-") as folder:
        files = {}
        for graph, data in onnx_bytes.items():
            files[graph_file(graph)] = path = Path(folder) / graph_file(graph)
            path.write_bytes(data)
        return repository.publish(name, files, config)
