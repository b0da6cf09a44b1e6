"""``aeq models``: the table, ``--json``, the empty repository; it never loads TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from aeq.core.catalog import Graph
from aeq.repository import ModelRepository

TIMEOUT_S = 120
# Parity errors per graph of the fake versions below; the table shows the largest.
PARITY = {"autoencoder": 1.5e-7, "encoder": 9.5e-7, "decoder": 2.0e-7}


def fake_config(code_dim: int, test_mse: float, data_source: str | None = None) -> dict:
    tensor = {"name": "image", "dtype": "float32", "dims": [-1, 784]}
    return {
        "graphs": {
            graph.value: {
                "file": f"{graph.value}.onnx",
                "inputs": [tensor],
                "outputs": [tensor],
                "parity_max_abs_diff": PARITY[graph.value],
            }
            for graph in Graph
        },
        "code_dim": code_dim,
        "opset": 17,
        "training": {"test_mse": test_mse, "collapsed": False}
        | ({"data_source": data_source} if data_source else {}),
    }


def publish_fake(
    repository: ModelRepository, model: str, code_dim: int, test_mse: float, size=1, data=None
):
    source = repository.root.parent / "source"
    source.mkdir(exist_ok=True)
    files = {}
    for graph in Graph:
        files[f"{graph.value}.onnx"] = path = source / f"{graph.value}.onnx"
        path.write_bytes(b"x" * size)
    return repository.publish(model, files, fake_config(code_dim, test_mse, data))


@pytest.fixture
def repository(tmp_path):
    repository = ModelRepository(tmp_path / "repository")
    publish_fake(repository, "vanilla", 64, 0.0123)
    publish_fake(repository, "vanilla", 64, 0.0089, size=10_000)
    publish_fake(repository, "conv", 128, 0.0071, data="IDX folder /data/fashion")
    return repository


def invoke(*args: str):
    return CliRunner().invoke(cli.app, list(args), terminal_width=120)


def test_table_shows_versions_code_dim_mse_data_parity_and_size(repository):
    result = invoke("models", "--repository", str(repository.root))
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if "│" in line}
    assert set(rows) == {"conv", "vanilla"}
    vanilla = [cell.strip() for cell in rows["vanilla"].split("│")[1:-1]]
    size_kb = sum(p.stat().st_size for p in repository.get("vanilla").path.iterdir()) / 1024
    assert vanilla == [
        "vanilla", "1, 2", "64", "0.0089", "-", "9.5e-07", f"{size_kb:.1f} KB"
    ]  # fmt: skip
    conv = [cell.strip() for cell in rows["conv"].split("│")[1:-1]]
    assert conv[:5] == ["conv", "1", "128", "0.0071", "fashion"]


def test_json_lists_every_model_for_scripts(repository):
    result = invoke("models", "--repository", str(repository.root), "--json")
    assert result.exit_code == 0, result.output
    listed = {item["model"]: item for item in json.loads(result.output)}
    assert sorted(listed) == ["conv", "vanilla"]
    vanilla = listed["vanilla"]
    assert vanilla["versions"] == [1, 2] and vanilla["latest"] == 2
    assert vanilla["code_dim"] == 64 and vanilla["test_mse"] == 0.0089
    assert vanilla["parity_max_abs_diff"] == max(PARITY.values())
    assert vanilla["opset"] == 17 and vanilla["trained_on"] is None
    assert listed["conv"]["trained_on"] == "IDX folder /data/fashion"
    assert Path(vanilla["path"]) == repository.root / "vanilla" / "2"
    assert vanilla["size_bytes"] > 3 * 10_000


def test_an_empty_repository_says_how_to_fill_it(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("models", "--repository", str(tmp_path / "empty"))
    assert result.exit_code == 0
    assert "no models published" in result.output and "aeq export all" in result.output
    result = invoke("models", "--repository", str(tmp_path / "empty"), "--json")
    assert json.loads(result.output) == []


@pytest.mark.parametrize("as_json", [[], ["--json"]])
def test_a_repository_that_is_not_there_is_a_usage_error(tmp_path, as_json):
    result = invoke("models", "--repository", str(tmp_path / "nothing"), *as_json)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: no model repository at ")
    assert len(result.stderr.splitlines()) == 1


def test_aeq_models_never_imports_tensorflow(repository):
    script = textwrap.dedent(
        f"""
        import sys
        import cli, aeq.repository
        sys.argv = ["aeq", "models", "--json", "--repository", {str(repository.root)!r}]
        try:
            cli.app()
        except SystemExit as stop:
            assert not stop.code, stop.code
        heavy = sorted({{"tensorflow", "keras", "tf2onnx"}} & set(sys.modules))
        assert not heavy, f"aeq models imported {{heavy}}"
        """
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("AEQ_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [item["model"] for item in json.loads(result.stdout)] == ["conv", "vanilla"]
