"""Print the pip requirements of one aeq image, read from pyproject.toml.

The Dockerfiles install these in a layer of their own before the code is copied in, so a code change
rebuilds only the small last layer. pyproject.toml stays the one list of dependencies; this script
only chooses among them:

- ``--extra NAME`` adds an optional-dependency group (``train`` for the training image);
- ``--cpu-only`` swaps the CUDA builds for the CPU builds (``onnxruntime-gpu`` for ``onnxruntime``,
  ``tensorflow`` for ``tensorflow-cpu`` on x86_64), which keeps the CPU images hundreds of megabytes
  smaller: the CPU images never load CUDA, and the GPU image installs the requirements unchanged.

The build backend's requirements come first, so the image can build aeq's wheel offline with
``pip wheel --no-build-isolation``. Python 3.11+ only (tomllib); no third-party imports, because it
runs in a bare base image.

Usage: ``python requirements.py PYPROJECT [--extra NAME]... [--cpu-only]``
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

# The CUDA build of a package -> its CPU build, each with the markers that select it.
_GPU_ONNXRUNTIME = "onnxruntime-gpu"
_CPU_ONNXRUNTIME = "onnxruntime"
_TENSORFLOW = "tensorflow"
# tensorflow-cpu has wheels for x86_64 only; elsewhere plain tensorflow is the CPU build.
# (PEP 508 markers have no `not`: each side is spelled out.)
_TENSORFLOW_CPU_MARKER = "platform_machine == 'x86_64'"
_TENSORFLOW_MARKER = "platform_machine != 'x86_64'"


def distribution_name(requirement: str) -> str:
    """Return the normalised distribution name a requirement line starts with."""
    name = requirement.split(";")[0]
    for stop in "<>=!~[ (":
        name = name.split(stop)[0]
    return name.strip().lower().replace("_", "-")


def _without_marker(requirement: str) -> str:
    return requirement.split(";")[0].strip()


def cpu_only(requirements: list[str]) -> list[str]:
    """Replace the CUDA builds in ``requirements`` with their CPU builds.

    Args:
        requirements: PEP 508 requirement lines, as pyproject.toml lists them.

    Returns:
        The same list with ``onnxruntime-gpu`` dropped, ``onnxruntime`` kept on every platform, and
        ``tensorflow`` replaced by ``tensorflow-cpu`` on x86_64.
    """
    chosen: list[str] = []
    for requirement in requirements:
        name = distribution_name(requirement)
        if name == _GPU_ONNXRUNTIME:
            continue
        if name == _CPU_ONNXRUNTIME:
            chosen.append(_without_marker(requirement))
        elif name == _TENSORFLOW:
            spec = _without_marker(requirement)[len(_TENSORFLOW) :]
            chosen.append(f"tensorflow-cpu{spec}; {_TENSORFLOW_CPU_MARKER}")
            chosen.append(f"{_TENSORFLOW}{spec}; {_TENSORFLOW_MARKER}")
        else:
            chosen.append(requirement)
    return chosen


def image_requirements(pyproject: Path, extras: list[str], cpu: bool) -> list[str]:
    """Collect the requirement lines of one image from ``pyproject``.

    Args:
        pyproject: path to aeq's pyproject.toml.
        extras: optional-dependency groups to add.
        cpu: swap CUDA builds for CPU builds (see ``cpu_only``).

    Returns:
        The build backend's requirements, then the project's, then each extra's.

    Raises:
        KeyError: an extra that pyproject.toml does not define.
    """
    with pyproject.open("rb") as handle:
        project_file = tomllib.load(handle)
    optional = project_file["project"].get("optional-dependencies", {})
    requirements = list(project_file["build-system"]["requires"])
    requirements += project_file["project"]["dependencies"]
    for extra in extras:
        if extra not in optional:
            raise KeyError(f"pyproject.toml defines no extra {extra!r}")
        requirements += optional[extra]
    return cpu_only(requirements) if cpu else requirements


def main(argv: list[str] | None = None) -> int:
    """Print one image's requirements, one per line, for ``pip install -r``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--cpu-only", action="store_true")
    args = parser.parse_args(argv)
    try:
        lines = image_requirements(args.pyproject, args.extra, args.cpu_only)
    except (OSError, KeyError, tomllib.TOMLDecodeError) as error:
        print(f"requirements.py: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
