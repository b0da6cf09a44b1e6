"""Model repository rules: numbering, latest, atomic and concurrent publishing, integrity checks.

TensorFlow-free: the "graphs" are small byte strings, which is all the repository cares about.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from aeq.core.catalog import Graph
from aeq.core.errors import IntegrityError, ModelNotFoundError, RepositoryError
from aeq.repository import CONFIG_FILE, ModelRepository, sha256_bytes

THREADS = 6
PROCESSES = 4
PUBLISHES_EACH = 4


def graph_config(code_dim: int = 64) -> dict:
    """A config.json body shaped like the exporter's, for the graphs below."""
    tensor = {"name": "image", "dtype": "float32", "dims": [-1, 784]}
    return {
        "graphs": {
            graph.value: {"file": f"{graph.value}.onnx", "inputs": [tensor], "outputs": [tensor]}
            for graph in Graph
        },
        "code_dim": code_dim,
    }


def graph_files(folder: Path, tag: str = "") -> dict[str, Path]:
    """Three small files standing in for the ONNX graphs."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for graph in Graph:
        path = folder / f"{graph.value}.onnx"
        path.write_bytes(f"{graph.value} {tag}".encode())
        files[path.name] = path
    return files


def publish(repository: ModelRepository, model: str, source: Path, tag: str = "", **extra):
    return repository.publish(model, graph_files(source, tag), {**graph_config(), **extra})


def test_an_empty_or_missing_repository_lists_nothing_and_says_how_to_fill_it(tmp_path):
    for root in (tmp_path, tmp_path / "absent"):
        repository = ModelRepository(root)
        assert repository.models() == []
        assert repository.versions("vanilla") == []
        with pytest.raises(ModelNotFoundError, match="no models published in .* 'aeq export all'"):
            repository.get("vanilla")


def test_versions_count_from_one_and_latest_is_the_highest(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    published = [publish(repository, "vanilla", tmp_path / "src", str(n)) for n in range(3)]
    assert [version.version for version in published] == [1, 2, 3]
    assert repository.versions("vanilla") == [1, 2, 3]
    assert repository.get("vanilla").version == 3
    second = repository.get("vanilla", 2)
    assert second.path == tmp_path / "repo" / "vanilla" / "2"
    assert second.read_verified(Graph.ENCODER) == b"encoder 1"
    assert second.config["model"] == "vanilla" and second.config["version"] == 2
    assert set(second.config["sha256"]) == {f"{graph}.onnx" for graph in Graph}
    assert second.config["published_at"].endswith("+00:00")


def test_unknown_model_and_version_messages_say_what_is_there(tmp_path):
    repository = ModelRepository(tmp_path)
    publish(repository, "vanilla", tmp_path / "src")
    publish(repository, "conv", tmp_path / "src")
    with pytest.raises(ModelNotFoundError, match="'sparse' is not in .*; published: conv, vanilla"):
        repository.get("sparse")
    with pytest.raises(ModelNotFoundError, match="vanilla has no version 4; published: 1"):
        repository.get("vanilla", 4)


def test_graph_signature_is_read_from_config(tmp_path):
    version = publish(ModelRepository(tmp_path), "vanilla", tmp_path / "src")
    info = version.graph(Graph.DECODER)
    assert info.file == "decoder.onnx"
    assert (info.input.name, info.input.dtype, info.input.dims) == ("image", "float32", (-1, 784))
    assert version.code_dim == 64 and version.label == "vanilla@1"


def test_staging_folders_and_half_written_versions_are_never_listed(tmp_path):
    repository = ModelRepository(tmp_path)
    publish(repository, "vanilla", tmp_path / "src")
    # A publisher killed mid-copy leaves a staging folder; one killed mid-way through a manual
    # copy leaves a numbered folder without config.json; neither is a version.
    staging = tmp_path / "vanilla" / ".staging-0123"
    graph_files(staging)
    (staging / CONFIG_FILE).write_text(json.dumps(graph_config()))
    graph_files(tmp_path / "vanilla" / "2")
    for odd in ("07", "0", "latest"):
        (tmp_path / "vanilla" / odd).mkdir()
        (tmp_path / "vanilla" / odd / CONFIG_FILE).write_text(json.dumps(graph_config()))
    graph_files(tmp_path / ".staging-model")
    assert repository.versions("vanilla") == [1]
    assert repository.models() == ["vanilla"]
    assert repository.get("vanilla").version == 1
    # The next publish steps over the stray "2" instead of failing.
    assert publish(repository, "vanilla", tmp_path / "src").version == 3
    assert repository.versions("vanilla") == [1, 3]


def test_a_failed_publish_leaves_nothing_behind(tmp_path):
    repository = ModelRepository(tmp_path / "repo")
    files = graph_files(tmp_path / "src")
    files["decoder.onnx"] = tmp_path / "src" / "missing.onnx"
    with pytest.raises(RepositoryError, match="cannot publish vanilla"):
        repository.publish("vanilla", files, graph_config())
    assert repository.versions("vanilla") == []
    assert list((tmp_path / "repo" / "vanilla").iterdir()) == []


@pytest.mark.parametrize("name", ["../evil.onnx", "config.json", ".hidden", ""])
def test_publish_refuses_file_names_outside_the_version_folder(tmp_path, name):
    source = tmp_path / "file"
    source.write_bytes(b"x")
    with pytest.raises(RepositoryError, match="not a plain file"):
        ModelRepository(tmp_path / "repo").publish("vanilla", {name: source}, graph_config())


def _publish_many(root: str, publisher: int) -> list[int]:
    repository = ModelRepository(Path(root))
    source = Path(root).parent / f"src-{publisher}"
    return [
        publish(repository, "vanilla", source, f"{publisher}-{n}", publisher=publisher).version
        for n in range(PUBLISHES_EACH)
    ]


def _check_concurrent_result(root: Path, per_publisher: list[list[int]]) -> None:
    everything = sorted(version for versions in per_publisher for version in versions)
    assert everything == list(range(1, len(everything) + 1)), "a version was shared or skipped"
    repository = ModelRepository(root)
    assert repository.versions("vanilla") == everything
    for publisher, versions in enumerate(per_publisher):
        for version in versions:
            published = repository.get("vanilla", version)
            assert published.config["version"] == version
            assert published.config["publisher"] == publisher
            published.verify()
    assert not list((root / "vanilla").glob(".staging-*"))


def test_concurrent_threads_never_share_a_version(tmp_path):
    root = tmp_path / "repo"
    results: list[list[int]] = [[] for _ in range(THREADS)]

    def work(index: int) -> None:
        results[index] = _publish_many(str(root), index)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check_concurrent_result(root, results)


def test_concurrent_processes_never_share_a_version(tmp_path):
    root = tmp_path / "repo"
    # spawn, not fork: the test process may have TensorFlow's threads running.
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        results = pool.starmap(_publish_many, [(str(root), index) for index in range(PROCESSES)])
    _check_concurrent_result(root, results)


def test_a_reader_never_sees_half_a_version(tmp_path):
    root = tmp_path / "repo"
    repository = ModelRepository(root)
    done = threading.Event()
    seen: set[int] = set()
    problems: list[str] = []

    def read() -> None:
        while not done.is_set():
            for version in repository.versions("vanilla"):
                try:
                    repository.get("vanilla", version).verify()
                    seen.add(version)
                except Exception as error:  # noqa: BLE001 - any failure is the finding
                    problems.append(f"version {version}: {error}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        _publish_many(str(root), 0)
        _publish_many(str(root), 1)
    finally:
        done.set()
        reader.join()
    assert problems == []
    assert repository.versions("vanilla") == list(range(1, 2 * PUBLISHES_EACH + 1))


def test_a_tampered_file_is_refused_with_a_clear_message(tmp_path):
    version = publish(ModelRepository(tmp_path), "vanilla", tmp_path / "src")
    (version.path / "encoder.onnx").write_bytes(b"encoder with a backdoor")
    assert version.read_verified(Graph.AUTOENCODER) == b"autoencoder "
    with pytest.raises(IntegrityError) as caught:
        version.read_verified(Graph.ENCODER)
    message = str(caught.value)
    assert message.startswith("vanilla@1: encoder.onnx has sha256 ")
    assert sha256_bytes(b"encoder with a backdoor")[:12] in message
    assert "changed after publishing, refusing to load it" in message
    with pytest.raises(IntegrityError, match="encoder.onnx"):
        version.verify()


def test_a_missing_file_or_missing_hash_is_an_integrity_error(tmp_path):
    repository = ModelRepository(tmp_path)
    version = publish(repository, "vanilla", tmp_path / "src")
    (version.path / "decoder.onnx").unlink()
    with pytest.raises(IntegrityError, match="vanilla@1: cannot read decoder.onnx"):
        version.read_verified(Graph.DECODER)
    config = json.loads((version.path / CONFIG_FILE).read_text())
    del config["sha256"]["encoder.onnx"]
    (version.path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(IntegrityError, match="records no sha256 for encoder.onnx"):
        repository.get("vanilla").read_verified(Graph.ENCODER)


def test_an_unreadable_config_is_a_repository_error(tmp_path):
    repository = ModelRepository(tmp_path)
    version = publish(repository, "vanilla", tmp_path / "src")
    (version.path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(RepositoryError, match="unreadable .*config.json"):
        repository.get("vanilla")
    (version.path / CONFIG_FILE).write_text("[]")
    with pytest.raises(RepositoryError, match="not an aeq model config"):
        repository.get("vanilla")
