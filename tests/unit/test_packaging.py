"""The built wheel, installed into a fresh venv, works beside a user's own ``common.py``.

The reported fault: the install put generic top-level names (``common``, ``bench``,
``evaluation``, ``demo`` ...) on ``sys.path``, so a notebook folder holding a ``common.py`` broke
``from worker.inference import Engine``. The wheel is built from a copy of the checkout (no
``build/`` left in it) and unpacked into a venv without pip; the dependencies are reused from
this venv through a ``.pth`` line, which adds the folder to ``sys.path`` without running its
``.pth`` files, so the checkout's editable install stays out of the fresh venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

from worker_support import tiny_repository

ROOT = Path(__file__).resolve().parents[2]
PIP = Path(sys.executable).parent / "pip"
BUILD_TIMEOUT_S = 300
# What the wheel puts on sys.path: the card's four names and aeq, nothing else.
TOP_LEVEL = {"aeq", "cli.py", "training", "export", "worker"}
USER_MODULES = ("common", "bench", "evaluation", "demo")

_NOTEBOOK = textwrap.dedent(
    """
    import sys
    import numpy as np

    import aeq
    from worker.inference import Engine  # what broke beside a user's common.py
    import cli

    images = np.linspace(0, 1, 3 * 784, dtype=np.float32).reshape(3, 28, 28)
    denoised = aeq.denoise(images, repository={repository!r}, broker_url="")
    assert denoised.dtype == np.uint8 and denoised.shape == (3, 28, 28), denoised.shape
    try:
        aeq.denoise(images * 2, repository={repository!r}, broker_url="")
    except aeq.InputError as error:
        print("REFUSED:", error)
    print("AEQ FROM:", aeq.__file__)
    print("VERSION:", aeq.__version__)
    """
)


def build_wheel(folder: Path) -> Path:
    """``pip wheel`` of a copy of the installed parts of the checkout."""
    source = folder / "source"
    for name in ("aeq", "training", "export", "worker"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("cli.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    command = [str(PIP), "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*command, "-w", str(folder / "dist"), str(source)],
        check=True, capture_output=True, timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip
    (wheel,) = (folder / "dist").glob("aeq-*.whl")
    return wheel


def fresh_venv(folder: Path, wheel: Path) -> Path:
    """A venv without pip holding the unpacked wheel; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(purelib)
    dependencies = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "aeq-test-dependencies.pth").write_text(dependencies + "\n")
    return python


def test_the_wheel_installs_only_aeq_and_the_four_card_names(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
    assert {name for name in top if not name.endswith(".dist-info")} == TOP_LEVEL
    assert "aeq/api.py" in zipfile.ZipFile(wheel).namelist()

    python = fresh_venv(tmp_path / "venv", wheel)
    notebook = tmp_path / "notebook"
    notebook.mkdir()
    for name in USER_MODULES:
        (notebook / f"{name}.py").write_text(f"raise RuntimeError('the user\\'s {name}.py')\n")
    repository = tiny_repository(tmp_path / "repository").root
    (notebook / "analysis.py").write_text(_NOTEBOOK.format(repository=str(repository)))
    env = {key: value for key, value in os.environ.items() if not key.startswith("AEQ_")}
    env.pop("PYTHONPATH", None)
    env["AEQ_PROVIDERS"] = "cpu"

    result = subprocess.run(
        [str(python), "analysis.py"],
        cwd=notebook, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"AEQ FROM: {tmp_path / 'venv'}" in result.stdout, result.stdout
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"VERSION: {version}" in result.stdout, result.stdout
    assert "REFUSED: the images array holds values from 0 to 2" in result.stdout, result.stdout
