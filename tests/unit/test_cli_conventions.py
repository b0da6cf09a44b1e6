"""The conventions every ``aeq`` command keeps, each found missing once by trying it.

``-h`` as well as ``--help``; ``--version``; shell completion; ``--repository`` wherever the model
repository is read; ``--json`` wherever a command reports; flags shown as flags; usage errors as
one line; TensorFlow's start-up noise kept out; ``aeq -h`` without the heavy libraries. Where the
exit code, the streams or the installed entry point matter, the real ``aeq`` runs in a subprocess;
elsewhere Typer's CliRunner is enough. The job commands' JSON against real workers is in
tests/integration/test_job_reports.py.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner
from worker_support import random_images, tiny_repository

import cli
from aeq.client import views
from aeq.core.catalog import Operation
from aeq.queue.jobs import JobRecord, JobSpec

ROOT = Path(__file__).resolve().parents[2]
AEQ = str(Path(sys.executable).parent / "aeq")
TIMEOUT_S = 180
COMMANDS = sorted(typer.main.get_command(cli.app).commands)  # type: ignore[attr-defined]
# The commands that read the model repository, and those that report a result.
READS_REPOSITORY = (
    "export", "models", "triton", "denoise", "reconstruct", "encode", "decode", "worker",
    "evaluate",
)  # fmt: skip
REPORTS = (
    "train", "export", "evaluate", "bench", "results", "models", "triton", "status", "jobs",
)  # fmt: skip
# What TensorFlow prints on a CPU host unless aeq keeps it out (absl's banner, absl-format log
# lines such as "E0000 00:00:1796097449.116510   15319 cuda_platform.cc:52] failed call to cuInit").
TENSORFLOW_NOISE = re.compile(
    r"absl::InitializeLog|cuInit|NodeDef mentions attribute|^[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\]",
    re.MULTILINE,
)
# Modules 'aeq -h' must not load: each costs a visible fraction of a second or more.
HEAVY_MODULES = {
    "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "celery", "kombu", "redis",
    "sklearn", "skimage", "scipy", "matplotlib", "PIL",
}  # fmt: skip


def aeq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``aeq``, as a user runs it, with aeq's own variables cleared."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("AEQ_")}
    return subprocess.run(
        [AEQ, *args],
        capture_output=True,
        text=True,
        env=environment | (env or {}),
        cwd=ROOT,
        timeout=TIMEOUT_S,
    )


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli.app, list(args), env=env, terminal_width=100)


def test_every_command_takes_h_as_well_as_help():
    assert {"train", "export", "denoise", "worker", "evaluate", "bench"} <= set(COMMANDS)
    for command in [[], *[[name] for name in COMMANDS]]:
        for flag in ("-h", "--help"):
            result = invoke(*command, flag)
            assert result.exit_code == 0, (command, flag, result.output)
            assert result.stdout.startswith(f"Usage: {' '.join(['aeq', *command])} ")


def test_bool_options_show_as_flags_not_as_values():
    for name in COMMANDS:
        help_text = invoke(name, "-h").stdout
        assert "<bool>" not in help_text, name
    # A flag's help line has its name and then its help, no value placeholder.
    assert re.search(r"^  --json +Print the result as JSON", invoke("jobs", "-h").stdout, re.M)


def test_version_comes_from_the_package_metadata():
    result = aeq("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"aeq {metadata.version('aeq')}\n"


def test_shell_completion_can_be_installed_and_completes_commands_and_options():
    help_text = aeq("-h").stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text
    script = aeq("--show-completion", "bash")
    assert script.returncode == 0 and "_AEQ_COMPLETE=complete_bash" in script.stdout
    # What the installed script asks aeq when the user presses Tab.
    asked = {"_AEQ_COMPLETE": "complete_bash", "COMP_CWORD": "1", "COMP_WORDS": "aeq deno"}
    assert aeq(env=asked).stdout.split() == ["denoise"]
    asked |= {"COMP_CWORD": "2", "COMP_WORDS": "aeq denoise --repo"}
    assert aeq(env=asked).stdout.split() == ["--repository"]


def test_every_command_that_reads_the_repository_takes_repository():
    for name in READS_REPOSITORY:
        assert "--repository" in invoke(name, "-h").stdout, name


def test_repository_option_wins_over_the_environment_for_a_job(tmp_path):
    tiny_repository(tmp_path / "repository")
    np.save(tmp_path / "digits.npy", random_images(3))
    env = {"AEQ_MODEL_REPOSITORY": str(tmp_path / "elsewhere"), "AEQ_BROKER_URL": ""}
    job = ["encode", str(tmp_path / "digits.npy"), "-o", str(tmp_path / "codes.npy")]

    without = invoke(*job, env=env)
    given = invoke(*job, "--repository", str(tmp_path / "repository"), env=env)

    assert without.exit_code == 2 and "elsewhere" in without.stderr
    assert given.exit_code == 0, given.output
    assert np.load(tmp_path / "codes.npy").shape[0] == 3


def test_worker_serves_the_repository_it_is_given(tmp_path, monkeypatch):
    import worker.launcher

    started = []
    monkeypatch.setattr(
        worker.launcher, "start", lambda settings, options: started.append(settings)
    )
    env = {"AEQ_MODEL_REPOSITORY": str(tmp_path / "elsewhere"), "AEQ_BROKER_URL": "redis://x:1/0"}

    result = invoke("worker", "--repository", str(tmp_path / "mine"), env=env)

    assert result.exit_code == 0, result.output
    assert [settings.model_repository for settings in started] == [tmp_path / "mine"]


def test_every_command_that_reports_takes_json():
    for name in REPORTS:
        assert "--json" in invoke(name, "-h").stdout, name


def test_train_json_is_the_records_on_stdout_and_the_progress_on_stderr(tmp_path, monkeypatch):
    from test_training_cli import _stub_record, _tiny_npz

    import training.train

    def fake_train_model(name, config, data, out_dir, verbose=2, model_name=None):
        print(f"{name} epoch 1/1")  # what Keras prints on stdout while it fits
        return _stub_record(name, collapsed=False)

    monkeypatch.setattr(training.train, "train_model", fake_train_model)
    data = str(_tiny_npz(tmp_path / "mnist.npz"))
    result = invoke("train", "conv", "--data", data, "--out", str(tmp_path / "out"), "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["trained_into"] == str(tmp_path / "out")
    [model] = report["models"]
    assert model["model"] == "conv" and model["path"] == str(tmp_path / "out" / "conv")
    assert model["test_mse"] == 0.01 and model["collapsed"] is False
    assert "conv epoch 1/1" in result.stderr and "data:" in result.stderr


def test_bench_json_is_the_report_alone_on_stdout(tmp_path):
    # The FLOPs section alone: a few seconds, and TensorFlow is loaded as for every section.
    result = aeq("bench", "--quick", "--sections", "flops", "--out", str(tmp_path), "--json")

    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["report"] == str(tmp_path / "report.md")
    assert printed["results"] == json.loads((tmp_path / "report.json").read_text())
    assert not TENSORFLOW_NOISE.search(result.stderr), result.stderr


def test_elapsed_runs_from_submission_not_from_the_first_chunk():
    now = time.time()
    spec = JobSpec(Operation.DENOISE, "denoising", version=1, total=5, chunk_size=512, code_dim=784)
    record = JobRecord(
        id="abc123", spec=spec, queued=1, done=1, failed=0, skipped=0, items_done=5,
        cancelled=False, created_at=now - 30.0, started_at=now - 0.01, finished_at=now - 0.005,
        collected_at=None,
    )  # fmt: skip
    assert views.status_dict(record)["seconds"] == pytest.approx(29.995, abs=0.01)


@pytest.mark.parametrize(
    "args",
    [
        ["denoise", "--chunk-size", "0", "digits.npy"],
        ["nosuch"],
        ["denoise"],
        ["jobs", "--limit", "many"],
        ["models", "--repository", "/nonexistent"],
        ["train", "resnet"],
    ],
    ids=[
        "out-of-range",
        "unknown-command",
        "missing-argument",
        "not-a-number",
        "no-repository",
        "aeq-usage-error",
    ],  # fmt: skip
)
def test_usage_errors_are_one_line_and_exit_2(args):
    result = aeq(*args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_click_usage_errors_name_the_help_to_read():
    assert aeq("denoise").stderr == "error: missing argument 'inputs'; see 'aeq denoise -h'\n"
    assert aeq("nosuch").stderr == "error: no such command 'nosuch'; see 'aeq -h'\n"


def test_tensorflow_start_up_noise_stays_out_of_train(tmp_path):
    from test_training_cli import _tiny_npz

    data = str(_tiny_npz(tmp_path / "mnist.npz"))
    result = aeq("train", "vanilla", "--epochs", "1", "--limit", "64", "--data", data,
                 "--out", str(tmp_path / "out"))  # fmt: skip

    # Random pixels may well collapse (exit 1); either way the model is trained and written.
    assert result.returncode in (0, 1), result.stderr
    assert (tmp_path / "out" / "vanilla" / "record.json").is_file()
    assert not TENSORFLOW_NOISE.search(result.stderr), result.stderr


def test_tensorflow_log_level_is_set_in_one_place():
    setters = [
        path.relative_to(ROOT).as_posix()
        for folder in ("aeq", "training", "export", "worker")
        for path in (ROOT / folder).rglob("*.py")
        if "TF_CPP_MIN_LOG_LEVEL" in path.read_text()
    ]
    assert setters == ["training/tensorflow_logs.py"]


def test_help_loads_none_of_the_heavy_libraries():
    script = (
        "import sys, cli\n"
        "try:\n"
        "    cli.app(['-h'], prog_name='aeq')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY_MODULES!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_each_command_is_mapped_to_the_stage_that_registers_it():
    registered = {}
    for stage in cli.STAGES:
        app = typer.Typer()
        try:
            importlib.import_module(stage).register(app)
        except ModuleNotFoundError:
            continue
        for command in app.registered_commands:
            registered[command.name or command.callback.__name__] = stage
    assert registered == cli.COMMAND_STAGES
    assert set(COMMANDS) == set(registered)


def test_only_the_named_commands_stage_is_imported_by_the_entry_point():
    assert cli.stages_for(["/venv/bin/aeq", "status", "-h"]) == ("aeq.client.commands",)
    assert cli.stages_for(["/venv/bin/aeq", "worker"]) == ("worker.commands",)
    for argv in (["/venv/bin/aeq"], ["/venv/bin/aeq", "-h"], ["/venv/bin/aeq", "nope"],
                 ["pytest", "status"]):  # fmt: skip
        assert cli.stages_for(argv) == cli.STAGES


# The job commands' help must not load what only running a job needs (redis-py, Celery, msgpack,
# Pillow, ONNX Runtime, NumPy: ``import aeq`` loads the Python API lazily); a command line that
# names one command imports only its stage.
JOB_HELP = (["status", "-h"], ["jobs", "-h"], ["denoise", "-h"], ["worker", "-h"])
HEAVY_FOR_JOB_HELP = HEAVY_MODULES | {"msgpack", "numpy"}


@pytest.mark.parametrize("args", JOB_HELP, ids=" ".join)
def test_job_command_help_loads_none_of_the_heavy_libraries(args):
    script = (
        "import sys\n"
        f"sys.argv = ['aeq', *{args!r}]\n"
        "import cli\n"
        "try:\n"
        "    cli.app(prog_name='aeq')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY_FOR_JOB_HELP!r}))\n"
        "print(sorted(m for m in cli.STAGES if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr
    *_, heavy, stages = result.stdout.splitlines()
    assert heavy == "[]"
    assert stages == repr([cli.COMMAND_STAGES[args[0]]])
