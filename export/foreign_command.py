"""``aeq export --onnx FILE --name NAME``: the command's side of publishing a model made elsewhere.

Reads the options, hands the files to ``export.foreign`` and says what was published. Importing
this module loads neither onnx nor ONNX Runtime (``aeq -h`` stays quick) and nothing here ever
loads TensorFlow; MNIST for the run check is read with numpy (``training.data``), and only a
machine with no MNIST at all falls back to keras' download.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from aeq.core.errors import UsageError
from aeq.core.pixel_scale import DEFAULT_PIXEL_SCALE, PixelScale
from aeq.core.settings import Settings
from aeq.repository import ModelRepository
from export.geometry import dims_text
from export.validate import load_parity_images

if TYPE_CHECKING:
    from export.foreign import ForeignGraph, ForeignResult

# A reconstruction reaching this far outside the scale's range (in widths of the range) is
# likely made in another scale than --scale says; the command says so.
_SCALE_DOUBT = 0.5

_stdout = Console(highlight=False, soft_wrap=True)
_stderr = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class ForeignOptions:
    """``aeq export``'s options for a model made elsewhere."""

    onnx: Path | None
    name: str | None
    scale: PixelScale | None
    encoder: Path | None
    decoder: Path | None

    @property
    def given(self) -> bool:
        """Any of them given."""
        return bool(self.given_text)

    @property
    def given_text(self) -> str:
        """The options given, as the command line names them (``--name, --scale``)."""
        values = {
            "--onnx": self.onnx,
            "--name": self.name,
            "--scale": self.scale,
            "--encoder": self.encoder,
            "--decoder": self.decoder,
        }
        return ", ".join(option for option, value in values.items() if value is not None)


def export_foreign(
    options: ForeignOptions, settings: Settings, data: Path | None, other_data: bool, as_json: bool
) -> None:
    """Check the files, refuse another kind of model under the name unless ``other_data``, run
    them on MNIST test images (``data``, else where ``aeq train`` looks) and publish them."""
    from export import foreign
    from export.run_check import images_needed

    if options.onnx is None or options.name is None:
        raise UsageError("--onnx FILE needs --name NAME: the name to publish the model under")
    scale = options.scale or DEFAULT_PIXEL_SCALE
    model = foreign.read_model(options.name, options.onnx, scale, options.encoder, options.decoder)
    target = ModelRepository(settings.model_repository)
    if not other_data:
        foreign.refuse_other_kind(model, target)
    images, source = load_parity_images(data, settings, images_needed(model.graphs))
    with _stderr.status(f"checking {model.name} in ONNX Runtime…"):
        result = foreign.publish_foreign(model, target, images, source)
    _doubt_scale(result)
    if as_json:
        _stderr.print(f"[bold green]{result.version.label}[/] published to {result.version.path}")
        print(json.dumps(_foreign_json(result, settings.model_repository), indent=2))
    else:
        _print_foreign(result)


def _print_foreign(result: ForeignResult) -> None:
    version, check = result.version, result.check
    low, high = check.output_range
    _stdout.print(f"[bold green]{version.label}[/] published to {version.path}")
    for item in result.model.graphs.values():
        _stdout.print(f"  {escape(_graph_line(item))}")
    _stdout.print(f"  pixel scale {result.model.scale.value}; serves {_operations(result)}")
    _stdout.print(
        f"  run check: {check.images} MNIST test images, {check.runtime}: finite outputs of the "
        f"declared shapes, reconstructions from {low:.4g} to {high:.4g}"
    )


def _graph_line(item: ForeignGraph) -> str:
    """``autoencoder from ae.onnx (pytorch 2.13.0, opset 18, sha256 1a2b3c4d5e6f…): 'input.1'
    [1, 1, 28, 28] -> 'output_0' [1, 1, 28, 28], fixed batch 1``."""
    source = item.source()
    batch = f", fixed batch {item.fixed_batch}" if item.fixed_batch else ""
    return (
        f"{item.graph.value} from {source['file']} ({item.producer}, opset {item.opset}, sha256 "
        f"{source['sha256'][:12]}…): {item.input.name!r} {dims_text(item.input.dims)} -> "
        f"{item.output.name!r} {dims_text(item.output.dims)}{batch}"
    )


def _operations(result: ForeignResult) -> str:
    return ", ".join(op.value for op in result.version.operations)


def _doubt_scale(result: ForeignResult) -> None:
    """Say so when the reconstructions lie far outside the range --scale gives the graph."""
    scale = result.model.scale
    low, high = result.check.output_range
    margin = _SCALE_DOUBT * (scale.high - scale.low)
    if low < scale.low - margin or high > scale.high + margin:
        _stderr.print(
            f"[yellow]note:[/] {result.version.label}'s reconstructions of MNIST test images run "
            f"from {low:.4g} to {high:.4g}, pixel scale {scale.value} expects {scale.low:g} to "
            f"{scale.high:g}: if the graph works in another range, publish it again with --scale"
        )


def _foreign_json(result: ForeignResult, root: Path) -> dict[str, Any]:
    """What ``aeq export --onnx --json`` prints: the version published, in the shape of
    ``aeq export --json``."""
    version = result.version
    return {
        "repository": str(root),
        "published": [
            {
                "model": version.model,
                "version": version.version,
                "path": str(version.path),
                "architecture": version.config["architecture"],
                "operations": [op.value for op in version.operations],
                "pixel_scale": result.model.scale.value,
                "source": version.config["source"],
                "run_check": version.config["run_check"],
                "size_bytes": dict(result.sizes),
            }
        ],
        "failed": [],
    }
