"""Section 5, arithmetic: FLOPs per image from the layer shapes, achieved GFLOP/s, distance to peak.

Counted are the multiply-adds (MACs) of the layers that do nearly all the arithmetic:

    Conv2D: H_out x W_out x C_out x k_h x k_w x C_in
    Dense:  inputs x outputs

and one MAC counts as 2 FLOPs (a multiply and an add; an FMA instruction does both, which is how
the CPU peak counts them too). Biases, activations, pooling and upsampling are left out: they are
a few operations per output value, under 2% of the total for these models.

Achieved GFLOP/s = FLOPs per image x images/s, with images/s from section 1 (the best ONNX
Runtime session, the fastest TensorFlow path and, for the convolutional models, ONNX Runtime on
the graph without export's rewrites, at the largest batch) when it ran, else from a
short measurement of ONNX Runtime's default session here. They are set against two ceilings: the
nominal peak (``aeq.bench.machine.cpu_peak``: cores x clock x FLOPs/cycle) and the best a large
float32 matrix product reaches here (``aeq.bench.machine.sgemm_gflops``), which is what the cores
really deliver when the nominal clock is not the one they run at.
"""

from __future__ import annotations

from math import prod
from typing import Any

from aeq.bench.data import Images
from aeq.bench.machine import CpuPeak
from aeq.bench.models import BenchModel
from aeq.bench.sessions import OrtConfig
from aeq.bench.timing import Plan, compare
from aeq.core.catalog import Graph

FLOPS_PER_MAC = 2
FALLBACK_BATCH = 1024


def layer_macs(layer: Any) -> int:
    """Multiply-adds one image costs in ``layer`` (0 for layers that are not Conv2D or Dense)."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        k_h, k_w, c_in, c_out = (int(d) for d in layer.kernel.shape)
        _, h_out, w_out, _ = layer.output.shape
        return int(h_out) * int(w_out) * c_out * k_h * k_w * c_in
    if kind == "Dense":
        inputs, outputs = (int(d) for d in layer.kernel.shape)
        return inputs * outputs
    return 0


def count(model: Any) -> dict[str, Any]:
    """MACs and FLOPs per image of a Keras model, with the per-layer breakdown."""
    layers = []
    for layer in model.layers:
        macs = layer_macs(layer)
        if macs:
            shape = [int(d) for d in layer.output.shape[1:]]
            layers.append({"layer": layer.name, "kind": type(layer).__name__, "out": shape,
                           "macs": macs})  # fmt: skip
    macs = sum(entry["macs"] for entry in layers)
    parameters = sum(prod(int(d) for d in weight.shape) for weight in model.weights)
    return {
        "macs": macs,
        "flops": macs * FLOPS_PER_MAC,
        "parameters": parameters,
        "layers": layers,
    }


def _measured_rates(
    models: dict[str, BenchModel], images: Images, engine: dict[str, Any] | None, plan: Plan
) -> dict[str, dict[str, Any]]:
    """Images/s per model: section 1's largest batch, or a short ORT default measurement."""
    rates: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        measured = (engine or {}).get("models", {}).get(name)
        if measured:
            batch = str(max(int(b) for b in measured["rates"]))
            by_engine, ratios = measured["rates"][batch], measured["ratios"][batch]
            chosen = [ratios["best_ort"], ratios["fastest_tf"], "ort_tf2onnx"]
            rates[name] = {"batch": int(batch), "source": "section 1"}
            rates[name].update({e: by_engine[e]["median"] for e in chosen if e in by_engine})
            continue
        session = OrtConfig().session(model.version.read_verified(Graph.AUTOENCODER))
        inputs = images.floats(FALLBACK_BATCH, model.spec.input_dims)
        feed = {session.get_inputs()[0].name: inputs}
        rate = compare({"ort": lambda s=session, f=feed: s.run(None, f)}, len(inputs), plan)
        rates[name] = {
            "batch": FALLBACK_BATCH,
            "source": "measured here",
            "ort_default": rate["ort"].median,
        }
    return rates


def run(
    models: dict[str, BenchModel],
    images: Images,
    peak: CpuPeak,
    sgemm: dict[str, Any],
    engine: dict[str, Any] | None,
    plan: Plan,
) -> dict[str, Any]:
    """Section 5 for every model."""
    rates = _measured_rates(models, images, engine, plan)
    results = {}
    for name, model in models.items():
        counted = count(model.keras_model)
        achieved = {}
        for path, images_per_s in rates[name].items():
            if path in ("batch", "source"):
                continue
            gflops = counted["flops"] * images_per_s / 1e9
            achieved[path] = {
                "images_per_s": images_per_s,
                "gflops": gflops,
                "percent_of_peak": 100.0 * gflops / peak.gflops if peak.gflops else 0.0,
                "percent_of_sgemm": 100.0 * gflops / sgemm["gflops"],
            }
        results[name] = {
            **counted,
            "batch": rates[name]["batch"],
            "rate_source": rates[name]["source"],
            "achieved": achieved,
        }
    return {
        "flops_per_mac": FLOPS_PER_MAC,
        "peak": vars(peak),
        "sgemm": sgemm,
        "models": results,
    }
