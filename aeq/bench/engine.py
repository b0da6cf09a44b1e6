"""Section 1, inference engines: TensorFlow's paths against ONNX Runtime on the same inputs.

Per model and batch size, in one process on the same float32 inputs, measured round-robin
(``aeq.bench.timing``): Keras ``predict``, a direct Keras call, a ``tf.function`` (and the same with
XLA), ONNX Runtime's default session, the worker's session (``worker.inference.Engine``, the one
the service runs) and the tuned session. Every path returns a NumPy array, as the service needs.

The tuned session comes from a sweep of session options (``aeq.bench.sessions``) at the sweep batch
sizes: each option varied alone around the default, then the best values together; the fastest
configuration at the largest batch is "tuned". The report says which options helped. The
exported graphs carry export's rewrites (``export.rewrites``); where those change a graph, the
tuned session also runs the graph as tf2onnx converts it, without them (``ort_tf2onnx``), so
what the rewrites gain stays on record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from aeq.bench.data import Images
from aeq.bench.models import BenchModel
from aeq.bench.sessions import OrtConfig, combine_best, one_factor_configs
from aeq.bench.timing import Plan, Rate, compare
from aeq.core.catalog import Graph
from aeq.core.settings import load_settings

TF_ENGINES = ("keras_predict", "keras_call", "tf_function", "tf_function_xla")
ORT_DEFAULT = "ort_default"
ORT_WORKER = "ort_worker"
ORT_TUNED = "ort_tuned"
# The tuned session on the graph as tf2onnx converts it, before export's rewrites (only for
# models where they change something: the convolutional ones). Not a candidate for "best ORT":
# the service runs the exported graph.
ORT_TF2ONNX = "ort_tf2onnx"
ORT_ENGINES = (ORT_DEFAULT, ORT_WORKER, ORT_TUNED, ORT_TF2ONNX)
PARITY_ITEMS = 64


def tensorflow_paths(model: Any) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Keras ``predict``, a direct call, a ``tf.function`` and an XLA ``tf.function``."""
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)]

    def call(inputs: Any) -> Any:
        return model(inputs, training=False)

    graph = tf.function(call, input_signature=signature)
    xla = tf.function(call, input_signature=signature, jit_compile=True)
    return {
        "keras_predict": lambda x: model.predict(x, batch_size=len(x), verbose=0),
        "keras_call": lambda x: call(x).numpy(),
        "tf_function": lambda x: graph(x).numpy(),
        "tf_function_xla": lambda x: xla(x).numpy(),
    }


def ort_path(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Run a session's one input to its one output."""
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    return lambda x: session.run([output_name], {input_name: x})[0]


def worker_session(model: BenchModel) -> Any:
    """The session one process of ``aeq worker`` runs for this model with its defaults on this
    CPU host (one process per core: one thread each)."""
    from worker.inference import CPU_PROVIDER, Engine
    from worker.launcher import default_concurrency

    settings = load_settings().with_overrides(providers=(CPU_PROVIDER,))
    concurrency = settings.worker_concurrency or default_concurrency(settings, require_gpu=False)
    return Engine(settings, concurrency).graph(model.version, Graph.AUTOENCODER).session


def sweep(model_bytes: bytes, inputs: np.ndarray, plan: Plan, cores: int) -> dict[OrtConfig, Rate]:
    """Measure the default, each one-option variation and the combination of the best."""
    configs = [OrtConfig()]
    for alternatives in one_factor_configs(cores).values():
        configs += [config for config in alternatives if config not in configs]
    rates = _measure_configs(configs, model_bytes, inputs, plan)
    combined = combine_best({config: rate.median for config, rate in rates.items()}, cores)
    if combined not in rates:
        rates.update(_measure_configs([combined], model_bytes, inputs, plan))
    return rates


def _measure_configs(
    configs: list[OrtConfig], model_bytes: bytes, inputs: np.ndarray, plan: Plan
) -> dict[OrtConfig, Rate]:
    calls = {config: ort_path(config.session(model_bytes)) for config in configs}
    contenders = {
        config.label(): (lambda call=call: call(inputs)) for config, call in calls.items()
    }
    rates = compare(contenders, len(inputs), plan)
    return {config: rates[config.label()] for config in configs}


def unrewritten_graph(model: BenchModel) -> tuple[bytes, list[str]]:
    """The autoencoder as tf2onnx converts the Keras model, and the rewrites export adds to it."""
    from export.convert import convert_graph
    from export.rewrites import rewrite_graph

    proto = convert_graph(model.keras_model, Graph.AUTOENCODER, model.spec)
    return proto.SerializeToString(), rewrite_graph(proto, model.spec.input_dims).names


def engine_paths(
    model: BenchModel, model_bytes: bytes, tuned: OrtConfig, unrewritten: bytes | None
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every contender of the comparison, by engine name."""
    paths = {
        **tensorflow_paths(model.keras_model),
        ORT_DEFAULT: ort_path(OrtConfig().session(model_bytes)),
        ORT_WORKER: ort_path(worker_session(model)),
        ORT_TUNED: ort_path(tuned.session(model_bytes)),
    }
    if unrewritten is not None:
        paths[ORT_TF2ONNX] = ort_path(tuned.session(unrewritten))
    return paths


def bench_model(
    model: BenchModel,
    images: Images,
    batches: tuple[int, ...],
    sweep_batches: tuple[int, ...],
    plan: Plan,
    cores: int,
) -> dict[str, Any]:
    """Everything section 1 measures for one model."""
    model_bytes = model.version.read_verified(Graph.AUTOENCODER)
    dims = model.spec.input_dims
    sweeps = {
        batch: sweep(model_bytes, images.floats(batch, dims), plan, cores)
        for batch in sweep_batches
    }
    largest = sweeps[max(sweep_batches)]
    tuned = max(largest, key=lambda config: largest[config].median)
    unrewritten, rewrites = unrewritten_graph(model)
    paths = engine_paths(model, model_bytes, tuned, unrewritten if rewrites else None)
    rates = {}
    for batch in batches:
        inputs = images.floats(batch, dims)
        contenders = {
            name: (lambda path=path, inputs=inputs: path(inputs)) for name, path in paths.items()
        }
        rates[str(batch)] = compare(contenders, batch, plan)
    return {
        "weights": model.weights,
        "tuned": {"label": tuned.label(), **vars(tuned)},
        "rates": {
            batch: {name: rate.to_json() for name, rate in by_engine.items()}
            for batch, by_engine in rates.items()
        },
        "ratios": {batch: ratios(by_engine) for batch, by_engine in rates.items()},
        "sweep": {
            str(batch): {config.label(): rate.to_json() for config, rate in by_config.items()}
            for batch, by_config in sweeps.items()
        },
        "parity_max_abs_diff": _parity(model, paths, images),
        "graph_rewrites": rewrites,
    }


def ratios(rates: dict[str, Any]) -> dict[str, Any]:
    """Each ONNX Runtime session over each TensorFlow path, plus best over fastest.

    "Best ORT" is the fastest of the sessions on the exported graph (default, worker, tuned) in
    this comparison, as "fastest TF" is the fastest of the TensorFlow paths: the sweep that
    picks "tuned" is itself noisy, and its pick can lose to the default when measured again.
    """
    medians = {name: _median(rate) for name, rate in rates.items()}
    fastest = max(TF_ENGINES, key=lambda name: medians[name])
    best = max(ORT_ENGINES[:3], key=lambda name: medians[name])
    table: dict[str, Any] = {"fastest_tf": fastest, "best_ort": best}
    for ort_name in [name for name in ORT_ENGINES if name in medians]:
        for tf_name in TF_ENGINES:
            table[f"{ort_name}/{tf_name}"] = medians[ort_name] / medians[tf_name]
        table[f"{ort_name}/fastest_tf"] = medians[ort_name] / medians[fastest]
    table["best_ort/fastest_tf"] = medians[best] / medians[fastest]
    return table


def _median(rate: Any) -> float:
    """A ``Rate``'s median, or the median a report's JSON recorded for one."""
    return float(rate["median"]) if isinstance(rate, dict) else rate.median


def _parity(
    model: BenchModel, paths: dict[str, Callable[[np.ndarray], np.ndarray]], images: Images
) -> float | None:
    """Largest |tf.function - ONNX Runtime tuned| on a few images (None: different weights)."""
    if not model.same_weights:
        return None
    inputs = images.floats(PARITY_ITEMS, model.spec.input_dims)
    reference = np.asarray(paths["tf_function"](inputs))
    return float(np.abs(reference - np.asarray(paths[ORT_TUNED](inputs))).max())


def run(
    models: dict[str, BenchModel],
    images: Images,
    batches: tuple[int, ...],
    sweep_batches: tuple[int, ...],
    plan: Plan,
    cores: int,
) -> dict[str, Any]:
    """Section 1 for every model."""
    return {
        "plan": vars(plan),
        "batches": list(batches),
        "sweep_batches": list(sweep_batches),
        "engines": [*TF_ENGINES, *ORT_ENGINES],
        "models": {
            name: bench_model(model, images, batches, sweep_batches, plan, cores)
            for name, model in models.items()
        },
    }
