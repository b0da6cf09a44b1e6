"""The serving side never imports TensorFlow: workers and job-submitting commands stay light.

Checked in a fresh interpreter (this test process may have TensorFlow loaded by other tests).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np
    from typer.testing import CliRunner

    sys.path.insert(0, {support!r})
    from worker_support import tiny_repository

    import cli, aeq.repository, worker.app, aeq.client.client, worker.inference, worker.tasks

    folder = Path({folder!r})
    tiny_repository(folder / "repository")
    np.save(folder / "digits.npy", np.zeros((5, 28, 28), np.uint8))
    env = {{"AEQ_MODEL_REPOSITORY": str(folder / "repository"), "AEQ_BROKER_URL": "",
           "AEQ_PROVIDERS": "cpu"}}
    runner = CliRunner()
    for args in (
        ["encode", str(folder / "digits.npy"), "-o", str(folder / "codes.npy")],
        ["decode", str(folder / "codes.npy"), "-o", str(folder / "images.npy")],
        ["denoise", str(folder / "digits.npy"), "-o", str(folder / "png")],
        ["jobs", "--help"], ["status", "--help"], ["worker", "--help"], ["models"],
    ):
        result = runner.invoke(cli.app, args, env=env)
        assert result.exit_code == 0, (args, result.output, result.exception)
    assert np.load(folder / "images.npy").shape == (5, 28, 28)
    banned = ("tensorflow", "tf2onnx", "keras")
    heavy = sorted(name for name in sys.modules if name.split(".")[0] in banned)
    print("HEAVY:", heavy)
    """
)


def test_serving_paths_never_import_tensorflow(tmp_path):
    script = _SCRIPT.format(support=str(ROOT / "tests" / "unit"), folder=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY: []" in result.stdout, result.stdout[-2000:]


_API_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import aeq

    lazy = ("tensorflow", "keras", "tf2onnx", "onnxruntime", "celery", "kombu", "redis", "PIL")
    print("ON IMPORT:", sorted({{name.split(".")[0] for name in sys.modules}} & set(lazy)))

    import numpy as np

    sys.path.insert(0, {support!r})
    from worker_support import tiny_repository

    repository = tiny_repository(Path({folder!r}) / "repository").root
    images = np.zeros((5, 28, 28), np.float32)
    aeq.denoise(images, repository=repository, broker_url="")
    codes = aeq.encode(images, repository=repository, broker_url="")
    aeq.decode(codes, model="multilayer", repository=repository, broker_url="")
    aeq.read_images(images)
    aeq.models(repository)
    banned = ("tensorflow", "tf2onnx", "keras")
    print("HEAVY:", sorted(name for name in sys.modules if name.split(".")[0] in banned))
    """
)


def test_import_aeq_is_light_and_the_python_api_never_imports_tensorflow(tmp_path):
    script = _API_SCRIPT.format(support=str(ROOT / "tests" / "unit"), folder=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ON IMPORT: []" in result.stdout, result.stdout[-2000:]
    assert "HEAVY: []" in result.stdout, result.stdout[-2000:]
