"""The Celery app's configuration, ``aeq worker``'s launch decisions and the provider probe."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from aeq.core.errors import ProviderError, UsageError
from aeq.core.settings import Settings, load_settings
from aeq.queue.protocol import TASK_NAME
from worker import launcher
from worker.app import celery_config, make_app, restore_interval_s
from worker.inference import nvidia_device_visible
from worker.launcher import LaunchOptions, celery_argv, check_options
from worker.provider_probe import identity_model_bytes, probe, providers_in_use

BROKER = "redis://127.0.0.1:6399/0"


def test_messages_are_msgpack_or_json_never_pickle():
    config = celery_config(Settings(broker_url=BROKER))
    assert config["task_serializer"] == config["result_serializer"] == "msgpack"
    assert config["accept_content"] == config["result_accept_content"] == ["msgpack", "json"]
    assert "pickle" not in str(config)


def test_acknowledged_late_one_at_a_time():
    config = celery_config(Settings(broker_url=BROKER))
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert config["task_ignore_result"] and config["result_backend"] is None


def test_visibility_timeout_comes_from_the_settings_and_is_swept_often_enough():
    settings = load_settings({"AEQ_BROKER_URL": BROKER, "AEQ_VISIBILITY_TIMEOUT_S": "8"})
    options = celery_config(settings)["broker_transport_options"]
    assert options["visibility_timeout"] == 8
    assert options["unacked_restore_interval"] == 2.0
    assert options["unacked_restore_throttle"] == 1
    assert options["unacked_mutex_expire"] == 2.0  # a dead sweeper's lock costs one sweep
    assert restore_interval_s(3600) == 10.0  # never slower than kombu's own default
    assert restore_interval_s(1) == 0.5


def test_the_app_knows_the_chunk_task():
    app = make_app(Settings(broker_url=BROKER))
    app.loader.import_default_modules()
    assert TASK_NAME in app.tasks
    assert app.conf.task_default_queue == "aeq"


@pytest.mark.parametrize(
    ("gpu", "require_gpu", "given", "expected"),
    [
        (False, False, None, 6),  # CPU host: one process per core
        (True, False, None, 1),  # CUDA asked for and a driver visible: one process per GPU
        (False, True, None, 1),  # --require-gpu implies the GPU layout
        (False, False, 3, 3),  # --concurrency / AEQ_WORKER_CONCURRENCY win
        (True, True, 2, 2),
    ],
)
def test_default_concurrency_is_a_process_per_core_on_cpu_one_on_gpu(
    monkeypatch, gpu, require_gpu, given, expected
):
    monkeypatch.setattr(launcher, "cpu_cores", lambda: 6)
    monkeypatch.setattr(launcher, "gpu_expected", lambda providers: gpu)
    options = LaunchOptions(concurrency=given, require_gpu=require_gpu)
    chosen = launcher.resolved(Settings(broker_url=BROKER), options)
    assert chosen.concurrency == expected
    assert f"--concurrency={expected}" in celery_argv(chosen)


def test_the_environment_sets_the_concurrency_and_unset_means_automatic():
    assert load_settings({"AEQ_WORKER_CONCURRENCY": "4"}).worker_concurrency == 4
    assert load_settings({"AEQ_WORKER_CONCURRENCY": ""}).worker_concurrency is None
    assert load_settings({}).worker_concurrency is None


def test_workers_are_nice_by_default_and_the_environment_says_how_nice():
    assert load_settings({}).worker_nice == 10
    assert load_settings({"AEQ_WORKER_NICE": "0"}).worker_nice == 0
    assert load_settings({"AEQ_WORKER_NICE": "19"}).worker_nice == 19
    for bad in ("20", "-1", "low"):
        with pytest.raises(UsageError, match="AEQ_WORKER_NICE must be a whole number 0-19"):
            load_settings({"AEQ_WORKER_NICE": bad})


def test_becoming_nice_lowers_the_priority_and_never_raises_it():
    # In a child process: a process can never take back the priority it gave up.
    code = (
        "import os; from worker.launcher import become_nice; start = os.nice(0); "
        "print(become_nice(start + 5) - start, os.nice(0) - start, become_nice(0) - start)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["5", "5", "5"], result.stderr


def test_one_process_runs_the_solo_pool_more_run_prefork():
    solo = celery_argv(LaunchOptions(concurrency=1, hostname="a@b"))
    assert "--pool=solo" in solo and "--hostname=a@b" in solo
    assert "--pool=prefork" in celery_argv(LaunchOptions(concurrency=3))
    assert "--concurrency=3" in celery_argv(LaunchOptions(concurrency=3))


@pytest.mark.parametrize(
    ("settings", "options", "message"),
    [
        (Settings(), LaunchOptions(), "needs a broker"),
        (Settings(broker_url=BROKER), LaunchOptions(concurrency=0), "--concurrency"),
        (Settings(broker_url=BROKER), LaunchOptions(threads=0), "--threads"),
        (Settings(broker_url=BROKER), LaunchOptions(loglevel="loud"), "--loglevel"),
    ],
)
def test_impossible_worker_options_are_refused(settings, options, message):
    with pytest.raises(UsageError, match=message):
        check_options(settings, options)


def test_require_gpu_needs_cuda_among_the_providers():
    with pytest.raises(ProviderError, match="does not ask for CUDA"):
        launcher.require_cuda(Settings(broker_url=BROKER, providers=("CPUExecutionProvider",)))


def test_the_hand_written_probe_graph_is_valid_onnx():
    proto = onnx.load_from_string(identity_model_bytes())
    onnx.checker.check_model(proto)
    reference = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    reference.ir_version = 7
    assert identity_model_bytes() == reference.SerializeToString()
    session = onnxruntime.InferenceSession(
        identity_model_bytes(), providers=["CPUExecutionProvider"]
    )
    assert session.run(None, {"x": np.array([2.5], np.float32)})[0].tolist() == [2.5]


def test_the_probe_reports_the_provider_really_used():
    in_use = providers_in_use(["CUDAExecutionProvider", "CPUExecutionProvider"])
    if not nvidia_device_visible():
        # No GPU: asking for CUDA first still ends on the CPU, and the probe says so.
        assert in_use == ["CPUExecutionProvider"]
    assert in_use[-1] == "CPUExecutionProvider"
    assert probe(("CPUExecutionProvider",)) == ["CPUExecutionProvider"]


def test_the_solo_pool_does_not_arm_the_parent_death_signal_in_the_worker_itself():
    # The solo pool sends worker_process_init in the main process; arming there would make the
    # worker kill itself (its parent is not itself). Run in a throwaway process.
    script = (
        "import os\n"
        "from worker import app\n"
        "app._record_concurrency()\n"
        "app._die_with_the_worker()\n"
        "print('alive')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "alive", result.stderr
