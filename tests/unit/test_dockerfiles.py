"""Checks of the Dockerfiles, .dockerignore and the image requirement chooser, with no engine.

hadolint lints each Dockerfile; the structural rules (pinned bases, non-root user, dependencies
before code, no secrets) are read from the files; the build context that .dockerignore leaves is
rebuilt here and aeq's wheel is built from it the way the images' `wheel` stage does.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
# Stand-ins for the registry's base images, built from Debian packages by scripts/compose-test.sh.
STAND_IN_DOCKERFILES = sorted((DOCKER / "stand-in").glob("*.Dockerfile"))
HADOLINT_CONFIG = DOCKER / "hadolint.yaml"
VENV_BIN = Path(sys.executable).parent
IMAGE_UID = "10001"
# Each image's last stage (the one compose builds) and the pyproject choice it installs.
FINAL_STAGE = {
    "train.Dockerfile": "train",
    "worker-gpu.Dockerfile": "worker",
    "worker.Dockerfile": "worker",
}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL", re.IGNORECASE)
WHEEL_TIMEOUT_S = 120


# FROM ${ARG:-default}: the base is a build argument, the default when it is empty or unset.
BASE_ARGUMENT = re.compile(r"\$\{(?P<arg>[A-Z_]+):-(?P<default>[^}]+)\}")


def _stages(dockerfile: Path) -> list[tuple[str, str, list[str]]]:
    """(base, name, instructions) of each stage; instructions with continuation lines joined.

    A base given as ``${ARG:-default}`` reads as its default; instructions before the first FROM
    (the base-image ARGs) are left out.
    """
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    stages: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"FROM (\S+)(?: AS (\S+))?", line)
        if match:
            argument = BASE_ARGUMENT.fullmatch(match[1])
            stages.append((argument["default"] if argument else match[1], match[2] or "", []))
        elif stages:
            stages[-1][2].append(line)
    return stages


def _load_requirements_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_requirements", DOCKER / "requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


requirements = _load_requirements_module()


def test_every_image_has_a_dockerfile() -> None:
    assert [path.name for path in DOCKERFILES] == sorted(FINAL_STAGE)


@pytest.mark.parametrize(
    "dockerfile", DOCKERFILES + STAND_IN_DOCKERFILES, ids=lambda path: path.parent.name + path.name
)
def test_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [VENV_BIN / "hadolint", "--config", HADOLINT_CONFIG, dockerfile],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_are_justified() -> None:
    lines = HADOLINT_CONFIG.read_text().splitlines()
    assert "failure-threshold: style" in lines, "every finding fails, down to style"
    for index, line in enumerate(lines):
        if re.fullmatch(r"\s*- DL\d+", line):
            assert lines[index - 1].lstrip().startswith("#"), f"{line.strip()} has no reason"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_base_images_are_pinned(dockerfile: Path) -> None:
    stages = _stages(dockerfile)
    names = {name for _, name, _ in stages}
    for base, _, _ in stages:
        if base in names:
            continue
        image, _, tag = base.partition(":")
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{base}: pin a full version, not a moving tag"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_builds_offline_against_any_base(dockerfile: Path) -> None:
    """No frontend image to pull (no `# syntax` line); every external base is a build argument,
    declared without a value before the first FROM, so that empty means the pinned default."""
    text = dockerfile.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    stage_names = set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.MULTILINE))
    preamble = text.split("\nFROM ", 1)[0]
    for base in re.findall(r"^FROM (\S+)", text, re.MULTILINE):
        if base in stage_names:
            continue
        argument = BASE_ARGUMENT.fullmatch(base)
        assert argument, f"{base}: FROM ${{ARG:-pinned default}}"
        assert re.search(rf"^ARG {argument['arg']}$", preamble, re.MULTILINE), base


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_pip_trusts_the_optional_ca_secret_and_bakes_nothing_in(dockerfile: Path) -> None:
    """Each pip install that reaches the index may use the `ca` BuildKit secret; nothing else
    mentions it (no ENV, no COPY), so the bundle is never in a layer."""
    installs = 0
    for _, _, instructions in _stages(dockerfile):
        for line in instructions:
            if line.startswith("RUN") and "pip install" in line and "--no-deps" not in line:
                installs += 1
                assert line.startswith("RUN --mount=type=secret,id=ca "), line
                assert "if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi" in line
            elif not line.startswith("RUN --mount=type=secret"):
                assert "PIP_CERT" not in line and "/run/secrets" not in line, line
    assert installs


def test_gpu_image_is_cuda_13_with_cudnn_and_the_matching_onnxruntime() -> None:
    base = _stages(DOCKER / "worker-gpu.Dockerfile")[0][0]
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base), base
    constraints = (DOCKER / "gpu-constraints.txt").read_text()
    assert re.search(r"^onnxruntime-gpu==1\.31\.\d+$", constraints, re.MULTILINE), (
        "onnxruntime-gpu 1.31 is the CUDA 13 + cuDNN 9 build; move it with the base image"
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_runs_as_the_unprivileged_user(dockerfile: Path) -> None:
    stages = {name: instructions for _, name, instructions in _stages(dockerfile)}
    text = dockerfile.read_text()
    assert f"--uid {IMAGE_UID}" in text
    for name, instructions in stages.items():
        users = [line.split()[1] for line in instructions if line.startswith("USER ")]
        if name in {"worker", "train", "flower"}:
            assert users and users[-1] == f"{IMAGE_UID}:{IMAGE_UID}", f"{name} ends as {users}"
    final = _stages(dockerfile)[-1][1]
    assert final == FINAL_STAGE[dockerfile.name]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dependencies_are_installed_before_the_code_is_copied(dockerfile: Path) -> None:
    stages = _stages(dockerfile)
    by_name = {name: (base, instructions) for base, name, instructions in stages}
    base, deps = by_name["deps"]
    copies = [line for line in deps if line.startswith("COPY")]
    assert copies and all("pyproject.toml" in line and " . " not in line for line in copies)
    assert any("pip install -r requirements.txt" in line for line in deps)
    wheel_base, wheel = by_name["wheel"]
    assert wheel_base == "deps", "the code layer builds on the dependency layer"
    assert "COPY . /src" in wheel
    for name in ("worker", "flower", "train"):
        if name in by_name:
            assert by_name[name][0] in {"deps", "app"}, f"{name}: no source tree in the image"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_no_secrets_are_baked_in(dockerfile: Path) -> None:
    for _, _, instructions in _stages(dockerfile):
        for line in instructions:
            if line.startswith(("ENV ", "ARG ")):
                assert not SECRET_WORDS.search(line), line
            if line.startswith(("COPY ", "ADD ")):
                assert ".env" not in line, line


def test_cpu_images_leave_out_the_cuda_builds() -> None:
    worker = (DOCKER / "worker.Dockerfile").read_text()
    train = (DOCKER / "train.Dockerfile").read_text()
    gpu = (DOCKER / "worker-gpu.Dockerfile").read_text()
    assert "requirements.py pyproject.toml --cpu-only" in worker
    assert "--extra train --cpu-only" in train
    assert "--cpu-only" not in gpu and "-c gpu-constraints.txt" in gpu
    assert "sh cuda-libraries.sh check" in gpu, "the CUDA provider's libraries all resolve"
    assert '! python -c "import tensorflow"' in worker, "the build proves TensorFlow is absent"


def test_worker_healthcheck_pings_the_node_name_of_the_cmd() -> None:
    text = (DOCKER / "worker.Dockerfile").read_text()
    cmd = re.search(r'^CMD \["aeq", "worker".*"--hostname", "([^"]+)"', text, re.MULTILINE)
    assert cmd, "the image's default command starts a worker with a node name"
    node = cmd[1].replace("%h", "$HOSTNAME")
    assert f'inspect ping --destination \\"{node}\\"' in text


@pytest.mark.parametrize(
    ("script", "shell", "dockerfile", "command"),
    [
        ("train-all.sh", "sh", "train.Dockerfile", "aeq-train-all"),
        ("gpu-workers.sh", "bash", "worker-gpu.Dockerfile", "aeq-gpu-workers"),
    ],
)
def test_scripts_are_installed_and_valid_shell(
    script: str, shell: str, dockerfile: str, command: str
) -> None:
    path = DOCKER / script
    assert path.stat().st_mode & 0o111, "executable"
    assert path.read_text().splitlines()[0].endswith(shell)
    assert "set -eu" in path.read_text()
    result = subprocess.run([shell, "-n", path], capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    installed = f"COPY --chmod=0755 docker/{script} /usr/local/bin/{command}"
    assert installed in (DOCKER / dockerfile).read_text()


@pytest.mark.parametrize(
    ("source", "expected"), [("image", ""), ("wheels", "onnxruntime-gpu[cuda,cudnn]\n")]
)
def test_cuda_libraries_come_from_the_image_or_the_wheels(source: str, expected: str) -> None:
    script = DOCKER / "cuda-libraries.sh"
    result = subprocess.run(
        ["sh", script, "requirements", source], capture_output=True, text=True, timeout=10
    )
    assert (result.returncode, result.stdout) == (0, expected)
    result = subprocess.run(["sh", script, "requirements", "conda"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr


# --- the training stage -------------------------------------------------------------------------

FAKE_RECORDING_AEQ = """#!/bin/sh
echo "${AEQ_DATA_DIR:-keras} $*" >> "$LOG"
"""


@pytest.mark.parametrize(("data_dir", "source"), [(None, "keras"), ("/mnist", "/mnist")])
def test_train_all_trains_then_exports_into_the_repository(
    tmp_path: Path, data_dir: str | None, source: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aeq").write_text(FAKE_RECORDING_AEQ)
    (bin_dir / "aeq").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path / "log")}
    env |= {"AEQ_TRAINING_DIR": "/trained", "AEQ_MODEL_REPOSITORY": "/models"}
    if data_dir:
        env["AEQ_DATA_DIR"] = data_dir
    result = subprocess.run(
        [DOCKER / "train-all.sh", "--epochs", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "log").read_text().splitlines() == [
        f"{source} train all --out /trained --overwrite --epochs 2",
        f"{source} export all --from /trained --repository /models",
        f"{source} models",
    ]


def test_train_all_stops_at_the_first_failure(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "aeq").write_text('#!/bin/sh\necho "$*" >> "$LOG"\nexit 2\n')
    (bin_dir / "aeq").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path / "log")}
    env |= {"AEQ_TRAINING_DIR": "/trained", "AEQ_MODEL_REPOSITORY": "/models"}
    result = subprocess.run(
        [DOCKER / "train-all.sh"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert (tmp_path / "log").read_text().splitlines() == ["train all --out /trained --overwrite"]


# --- one worker per GPU ------------------------------------------------------------------------

FAKE_NVIDIA_SMI = """#!/bin/sh
printf '0, GPU-aaaa\\n1, GPU-bbbb\\n'
"""
# A stand-in for `aeq worker`: records its arguments and device, then runs until TERM, except the
# worker of GPU-bbbb, which fails after a moment when FAIL_SECOND is set.
FAKE_AEQ = """#!/bin/sh
echo "$CUDA_VISIBLE_DEVICES $*" >> "$LOG"
trap 'echo "stopped $CUDA_VISIBLE_DEVICES" >> "$LOG"; exit 0' TERM
if [ -n "${FAIL_SECOND:-}" ] && [ "$CUDA_VISIBLE_DEVICES" = GPU-bbbb ]; then sleep 0.5; exit 3; fi
while :; do sleep 0.05; done
"""


def _fake_gpu_host(tmp_path: Path, gpus: bool = True) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {"aeq": FAKE_AEQ, "nvidia-smi": FAKE_NVIDIA_SMI if gpus else None}
    for name, text in fakes.items():
        if text:
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path / "log")}


def test_gpu_workers_start_one_worker_per_gpu_and_stop_together(tmp_path: Path) -> None:
    environment = {**_fake_gpu_host(tmp_path), "FAIL_SECOND": "1"}
    result = subprocess.run(
        [DOCKER / "gpu-workers.sh", "--require-gpu", "--loglevel", "info"],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
    )
    assert result.returncode == 3, "the failed worker's status"
    log = sorted((tmp_path / "log").read_text().splitlines())
    assert log == [
        "GPU-aaaa worker --concurrency 1 --hostname aeq-gpu0@%h --require-gpu --loglevel info",
        "GPU-bbbb worker --concurrency 1 --hostname aeq-gpu1@%h --require-gpu --loglevel info",
        "stopped GPU-aaaa",
    ]


def test_gpu_workers_forward_a_stop_to_every_worker(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [DOCKER / "gpu-workers.sh"], env=_fake_gpu_host(tmp_path), stderr=subprocess.PIPE
    )
    log = tmp_path / "log"
    deadline = time.monotonic() + 10
    while (
        not log.exists() or len(log.read_text().splitlines()) < 2
    ) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) != 0
    assert {"stopped GPU-aaaa", "stopped GPU-bbbb"} <= set(log.read_text().splitlines())


def test_gpu_workers_refuse_a_host_without_gpus(tmp_path: Path) -> None:
    result = subprocess.run(
        [DOCKER / "gpu-workers.sh", "--require-gpu"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_fake_gpu_host(tmp_path, gpus=False),
    )
    assert result.returncode == 1
    assert "no GPU visible" in result.stderr
    assert not (tmp_path / "log").exists(), "no worker started"


# --- the requirement chooser ---------------------------------------------------------------


def _names(lines: list[str]) -> set[str]:
    return {requirements.distribution_name(line) for line in lines}


def test_requirements_follow_pyproject() -> None:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)
    declared = _names(project["project"]["dependencies"])
    chosen = requirements.image_requirements(ROOT / "pyproject.toml", [], cpu=False)
    assert _names(chosen) == declared | {"setuptools"}
    assert chosen[0].startswith("setuptools"), "the build backend, to build the wheel offline"


def test_cpu_requirements_swap_in_the_cpu_builds() -> None:
    chosen = requirements.image_requirements(ROOT / "pyproject.toml", ["train"], cpu=True)
    names = _names(chosen)
    assert "onnxruntime-gpu" not in names
    assert "onnxruntime" in names and "tf2onnx" in names
    onnxruntime = next(line for line in chosen if line.startswith("onnxruntime"))
    assert ";" not in onnxruntime, "the CPU build on every platform"
    tensorflow = [line for line in chosen if line.startswith("tensorflow")]
    assert tensorflow == [
        "tensorflow-cpu>=2.21; platform_machine == 'x86_64'",
        "tensorflow>=2.21; platform_machine != 'x86_64'",
    ]


@pytest.mark.parametrize(
    ("machine", "expected"),
    [("x86_64", {"onnxruntime", "tensorflow-cpu"}), ("aarch64", {"onnxruntime", "tensorflow"})],
)
def test_cpu_requirements_are_valid_pep_508_and_pick_one_build(
    machine: str, expected: set[str]
) -> None:
    """What pip will make of the lines, per platform (the images build for either)."""
    chosen = requirements.image_requirements(ROOT / "pyproject.toml", ["train"], cpu=True)
    platform = {"platform_machine": machine, "platform_system": "Linux", "sys_platform": "linux"}
    picked = set()
    for line in chosen:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(platform):
            picked.add(requirement.name)
    assert picked & {"onnxruntime", "onnxruntime-gpu", "tensorflow", "tensorflow-cpu"} == expected


def test_gpu_requirements_pick_the_cuda_build_on_linux_x86_64() -> None:
    chosen = requirements.image_requirements(ROOT / "pyproject.toml", [], cpu=False)
    platform = {"platform_machine": "x86_64", "platform_system": "Linux"}
    picked = {
        Requirement(line).name
        for line in chosen
        if Requirement(line).marker is None or Requirement(line).marker.evaluate(platform)
    }
    assert "onnxruntime-gpu" in picked and "onnxruntime" not in picked


def test_requirements_refuse_an_unknown_extra(capsys: pytest.CaptureFixture[str]) -> None:
    assert requirements.main([str(ROOT / "pyproject.toml"), "--extra", "nope"]) == 2
    assert "no extra 'nope'" in capsys.readouterr().err


# --- the build context ------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, line.lstrip("!").strip("/")))
    return rules


def _segment_regex(segment: str) -> str:
    """One path segment of a .dockerignore pattern: ``*``, ``?`` and ``[...]`` stay in it."""
    regex, index = "", 0
    while index < len(segment):
        char = segment[index]
        if char == "[":
            end = segment.index("]", index)
            regex += segment[index : end + 1]
            index = end
        else:
            regex += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        index += 1
    return regex


def _matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any folder above it; ``**`` spans folders."""
    segments = pattern.split("/")
    regex = ""
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
        else:
            regex += _segment_regex(segment) + ("" if last else "/")
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[: i + 1])) for i in range(len(parts)))


def _ignored(path: str, rules: list[tuple[bool, str]]) -> bool:
    excluded = False
    for negated, pattern in rules:
        if _matches(pattern, path):
            excluded = not negated
    return excluded


def build_context() -> list[str]:
    """The files (relative to the root) that `docker build .` sends, after .dockerignore.

    Docker sends every file on disk that .dockerignore lets through, git-ignored or not.
    """
    rules = _ignore_rules()
    exceptions = [pattern for negated, pattern in rules if negated]
    sent = []
    for folder, subfolders, files in os.walk(ROOT):
        relative = Path(folder).relative_to(ROOT).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        # Skip an excluded folder unless an exception pattern could reach inside it.
        subfolders[:] = [
            name
            for name in subfolders
            if not _ignored(prefix + name, rules)
            or any(pattern.startswith(prefix + name + "/") for pattern in exceptions)
        ]
        sent += [prefix + name for name in files if not _ignored(prefix + name, rules)]
    return sorted(sent)


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    for path in (".env", ".git/config", ".venv/bin/python", "model_repository/conv/1/x.onnx"):
        assert any(_matches(p, path) and not neg for neg, p in _ignore_rules()), path
    sent = build_context()
    assert "pyproject.toml" in sent and "cli.py" in sent
    assert not [path for path in sent if path.startswith(("tests/", ".venv/", "docs/"))]


def test_the_wheel_builds_from_the_build_context(tmp_path: Path) -> None:
    """What the images' `wheel` stage does, on the files .dockerignore lets through."""
    source = tmp_path / "src"
    for path in build_context():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, source / path)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["--wheel-dir", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=WHEEL_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels.glob("aeq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    with (ROOT / "pyproject.toml").open("rb") as handle:
        setuptools_config = tomllib.load(handle)["tool"]["setuptools"]
    packages = [
        init.parent.relative_to(ROOT).as_posix()
        for top in ("aeq", "training", "export", "worker")
        for init in (ROOT / top).rglob("__init__.py")
    ]
    assert "aeq/queue" in packages and "worker" in packages
    for package in packages:
        assert f"{package}/__init__.py" in names, f"{package} missing from the image's wheel"
    for module in setuptools_config["py-modules"]:
        assert f"{module}.py" in names
