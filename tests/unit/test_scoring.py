"""Anomaly scores: the metrics against hand-computed values, the worker's score path, the scores
files, the calibration in the repository, ``aeq.score`` and ``aeq score`` in local mode.

Real ONNX Runtime on the tiny models of ``worker_support``; a real redis-server for the worker.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner
from worker_support import random_images, tiny_repository

import aeq
import cli
from aeq.core.catalog import SCORE_METRICS, Operation
from aeq.core.errors import JobError, OutputExistsError, RepositoryError, UsageError
from aeq.core.settings import Settings
from aeq.files.score_files import (
    MIN_CALIBRATION_ITEMS,
    Scores,
    calibration_of,
    open_score_output,
    write_top_picture,
)
from aeq.queue.jobs import JobSpec, JobStore
from aeq.queue.protocol import ChunkMessage, encode_array
from aeq.repository import CALIBRATION_FILE, Calibration
from worker.inference import CPU_PROVIDER, Engine
from worker.processing import WorkerContext, process_chunk
from worker.scoring import PSNR_CAP_DB, SSIM_K1, SSIM_K2, item_scores, run_chunk

C1, C2 = SSIM_K1**2, SSIM_K2**2


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    return tiny_repository(tmp_path_factory.mktemp("models") / "repository")


@pytest.fixture(scope="module")
def engine():
    return Engine(Settings(providers=(CPU_PROVIDER,)))


@pytest.fixture(autouse=True)
def local_environment(monkeypatch, repository):
    monkeypatch.delenv("AEQ_BROKER_URL", raising=False)
    monkeypatch.delenv("AEQ_RESULT_BACKEND", raising=False)
    monkeypatch.setenv("AEQ_MODEL_REPOSITORY", str(repository.root))
    monkeypatch.setenv("AEQ_PROVIDERS", "cpu")


def constant(*levels: int) -> np.ndarray:
    return np.stack([np.full((28, 28), level, np.uint8) for level in levels])


# -- the metrics, by hand ------------------------------------------------------------------------


def test_a_perfect_reconstruction_scores_zero_error_capped_psnr_and_ssim_one():
    images = random_images(3)
    scores = item_scores(images, images.copy())
    assert scores.dtype == np.float32 and scores.shape == (3, len(SCORE_METRICS))
    np.testing.assert_allclose(scores, [[0.0, PSNR_CAP_DB, 1.0]] * 3, atol=1e-6)


def test_black_against_white_is_the_largest_error():
    ((mse, psnr, ssim_value),) = item_scores(constant(0), constant(255))
    # mse 1, psnr 10 log10(1/1) = 0; SSIM with both variances 0: C1 / (0 + 1 + C1).
    assert mse == pytest.approx(1.0) and psnr == pytest.approx(0.0, abs=1e-6)
    assert ssim_value == pytest.approx(C1 / (1 + C1), rel=1e-5)


def test_one_pixel_off_by_full_scale():
    reconstruction = constant(0)
    reconstruction[0, 5, 9] = 255
    ((mse, psnr, _),) = item_scores(constant(0), reconstruction)
    assert mse == pytest.approx(1 / 784, rel=1e-6)
    assert psnr == pytest.approx(10 * math.log10(784), rel=1e-6)  # 28.94 dB


def test_ssim_of_two_flat_grey_levels():
    # x = 0.2, y = 0.4 everywhere: no variance, so SSIM = (2xy + C1) / (x^2 + y^2 + C1).
    ((mse, _, ssim_value),) = item_scores(constant(51), constant(102))
    assert mse == pytest.approx(0.04, rel=1e-6)
    assert ssim_value == pytest.approx((0.16 + C1) / (0.2 + C1), rel=1e-5)


def test_ssim_of_a_stripe_pattern_against_its_inverse():
    # Columns alternate 0 and 1 (255): every 7x7 window holds 3 or 4 bright columns of 7. Its
    # inverse has the mirrored statistics and a covariance of minus the variance.
    stripes = np.zeros((1, 28, 28), np.uint8)
    stripes[:, :, ::2] = 255
    inverse = 255 - stripes
    ((_, _, ssim_value),) = item_scores(stripes, inverse)
    expected = []
    for bright in (4, 3):  # windows starting on a bright column hold 4, the others 3
        mean = bright / 7
        variance = (49 / 48) * (mean - mean**2)
        luminance = (2 * mean * (1 - mean) + C1) / (mean**2 + (1 - mean) ** 2 + C1)
        structure = (-2 * variance + C2) / (2 * variance + C2)
        expected.append(luminance * structure)
    # 22 window columns, 11 starting on each kind.
    assert ssim_value == pytest.approx(np.mean(expected), rel=1e-5)


def test_ssim_is_scikit_images_structural_similarity():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(3)
    images = random_images(8, seed=1)
    noise = rng.integers(-70, 70, images.shape)
    rebuilt = np.clip(images.astype(int) + noise, 0, 255).astype(np.uint8)
    expected = [
        metrics.structural_similarity(a / 255.0, b / 255.0, data_range=1.0)
        for a, b in zip(images, rebuilt, strict=True)
    ]
    np.testing.assert_allclose(item_scores(images, rebuilt)[:, 2], expected, atol=1e-6)


def test_mismatched_arrays_are_refused():
    with pytest.raises(ValueError, match="same"):
        item_scores(random_images(2), random_images(3))
    with pytest.raises(ValueError, match="uint8"):
        item_scores(random_images(2).astype(np.float32), random_images(2))


# -- where scores are computed --------------------------------------------------------------------


def test_run_chunk_scores_the_reconstruction_the_engine_makes(repository, engine):
    version = repository.get("conv")
    images = random_images(20, seed=2)
    result = run_chunk(engine, version, Operation.SCORE, images)
    reconstructed = engine.run(version, Operation.RECONSTRUCT, images).array
    np.testing.assert_array_equal(result.array, item_scores(images, reconstructed))
    assert result.provider == CPU_PROVIDER and result.seconds > 0
    # The other operations are the engine's own.
    np.testing.assert_array_equal(
        run_chunk(engine, version, Operation.ENCODE, images).array,
        engine.run(version, Operation.ENCODE, images).array,
    )


def test_a_worker_stores_twelve_bytes_an_item_for_a_score_chunk(redis_client, repository, engine):
    settings = Settings(model_repository=repository.root, providers=(CPU_PROVIDER,))
    context = WorkerContext(settings, JobStore(redis_client, 600), repository, engine, "w")
    images = random_images(10, seed=5)
    spec = JobSpec(Operation.SCORE, "conv", 1, 10, 10, repository.get("conv").code_dim)
    job = context.store.create(spec)
    context.store.put_chunk(job, 0, encode_array(images), [str(i) for i in range(10)])
    context.store.end_submission(job, 1)
    message = ChunkMessage.for_array(job, 0, Operation.SCORE, "conv", 1, images).to_wire()

    assert process_chunk(context, message)["state"] == "done"

    raw = context.store.output(job, 0)
    assert len(raw) == 10 * len(SCORE_METRICS) * 4
    expected = run_chunk(engine, repository.get("conv"), Operation.SCORE, images).array
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32).reshape(10, -1), expected)


# -- scores files ---------------------------------------------------------------------------------

SCORES = np.array([[0.1, 10, 0.5], [0.3, 5.2, 0.1], [0.1, 10, 0.6], [0.2, 7, 0.3]], np.float32)
NAMES = ["a", "b", "c", "d"]


def calibration(pairs=((50.0, 0.15), (99.0, 0.25))) -> Calibration:
    return Calibration.of("mse", pairs, 1000, "clean.npy")


def test_ranks_go_worst_first_and_ties_keep_input_order():
    scores = Scores.of(SCORES, NAMES, "conv", 2, None)
    assert scores.rank.tolist() == [3, 1, 4, 2]
    assert scores.worst(2).tolist() == [1, 3]
    with pytest.raises(UsageError, match="not calibrated"):
        scores.above(99.0)


def test_above_and_exceeding_count_items_past_the_calibrated_percentiles():
    scores = Scores.of(SCORES, NAMES, "conv", 2, calibration())
    assert scores.above(99.0).tolist() == [False, True, False, False]
    assert [(e.percentile, e.items) for e in scores.exceeding()] == [(50.0, 2), (99.0, 1)]
    assert scores.over_percentile() == [None, 99.0, None, 50.0]
    with pytest.raises(UsageError, match="percentiles 50, 99"):
        scores.above(95.0)


def write_scores(path, chunks=((2, 4), (0, 2)), calib=None, overwrite=False):
    with open_score_output(path, 4, "conv", 2, calib, overwrite) as writer:
        for start, stop in chunks:  # out of order, as chunks finish
            writer.write(start, NAMES[start:stop], SCORES[start:stop])
        writer.commit()
    return writer


def test_csv_lists_items_worst_first_with_rank_name_model_and_percentile(tmp_path):
    write_scores(tmp_path / "s.csv", calib=calibration())
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [(r["rank"], r["item"], r["name"]) for r in rows] == [
        ("1", "1", "b"),
        ("2", "3", "d"),
        ("3", "0", "a"),
        ("4", "2", "c"),
    ]
    assert rows[0]["model"] == "conv@2" and float(rows[0]["mse"]) == pytest.approx(0.3)
    assert [r["over_percentile"] for r in rows] == ["99.0", "50.0", "", ""]


def test_json_holds_the_model_calibration_exceeding_and_items(tmp_path):
    write_scores(tmp_path / "s.json", calib=calibration())
    data = json.loads((tmp_path / "s.json").read_text())
    assert (data["model"], data["version"], data["metrics"]) == ("conv", 2, list(SCORE_METRICS))
    assert data["exceeding"] == [
        {"percentile": 50.0, "threshold": 0.15, "items": 2},
        {"percentile": 99.0, "threshold": 0.25, "items": 1},
    ]
    assert [item["name"] for item in data["items"]] == ["b", "d", "a", "c"]
    assert data["items"][0] == {
        "rank": 1,
        "item": 1,
        "name": "b",
        "mse": 0.3,
        "psnr": 5.2,
        "ssim": 0.1,
        "model": "conv@2",
        "over_percentile": 99.0,
    }


def test_npy_keeps_input_order_with_names_and_ranks_beside_it(tmp_path):
    write_scores(tmp_path / "s.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy", allow_pickle=False), SCORES)
    sidecar = json.loads((tmp_path / "s.npy.json").read_text())
    assert sidecar["names"] == NAMES and sidecar["ranks"] == [3, 1, 4, 2]
    assert sidecar["calibration"] is None and sidecar["exceeding"] is None


def test_missing_items_write_nothing_and_outputs_are_not_replaced_unasked(tmp_path):
    target = tmp_path / "out" / "s.csv"
    with pytest.raises(JobError, match="1 of 4 items never arrived"):
        write_scores(target, chunks=((0, 3),))
    assert not (tmp_path / "out").exists()
    write_scores(target)
    with pytest.raises(OutputExistsError):
        write_scores(target)
    write_scores(target, overwrite=True)
    assert sorted(p.name for p in target.parent.iterdir()) == ["s.csv"]


def test_other_suffixes_are_refused(tmp_path):
    with pytest.raises(UsageError, match=".csv, .json or .npy"):
        open_score_output(tmp_path / "s.png", 4, "conv", 1, None, False)


def test_the_top_picture_is_input_reconstruction_difference_per_row(tmp_path):
    from PIL import Image

    items, rebuilt = constant(200, 0), constant(50, 0)
    write_top_picture(tmp_path / "top.png", items, rebuilt)
    picture = np.asarray(Image.open(tmp_path / "top.png"))
    assert picture.shape == (3 * (2 * 28 + 2), 3 * (3 * 28 + 4))
    assert picture[0, 0] == 200 and picture[0, 3 * 30] == 50 and picture[0, 3 * 60] == 150
    assert picture[3 * 30, 3 * 60] == 0 and picture[3 * 28, 0] == 255  # row 2; the gap


# -- calibration ----------------------------------------------------------------------------------


def test_calibration_records_mse_percentiles(repository):
    scores = np.zeros((200, 3), np.float32)
    scores[:, 0] = np.arange(200) / 1000
    recorded = calibration_of(scores, "clean.npy")
    levels = dict(recorded.percentiles)
    assert levels[50.0] == pytest.approx(0.0995) and levels[99.0] == pytest.approx(0.19701)
    assert (recorded.metric, recorded.items, recorded.source) == ("mse", 200, "clean.npy")
    with pytest.raises(UsageError, match=f"at least {MIN_CALIBRATION_ITEMS}"):
        calibration_of(scores[:99], "few")


def test_the_repository_keeps_a_calibration_per_version(tmp_path):
    repository = tiny_repository(tmp_path / "repository")
    version = repository.get("conv")
    assert version.calibration() is None
    repository.record_calibration(version, calibration())
    repository.record_calibration(version, calibration(((99.0, 0.5),)))
    assert version.calibration().percentiles == ((99.0, 0.5),)
    assert sorted(p.name for p in version.path.iterdir() if p.name.startswith(".")) == []
    (version.path / CALIBRATION_FILE).write_text("{}")
    with pytest.raises(RepositoryError, match="not an aeq score calibration"):
        version.calibration()


def test_a_calibration_that_cannot_be_written_is_a_repository_error_and_leaves_nothing(tmp_path):
    repository = tiny_repository(tmp_path / "repository")
    version = repository.get("conv")
    # A folder in the way fails the rename for any user, root included (a read-only mount would
    # not stop root).
    (version.path / CALIBRATION_FILE / "in-the-way").mkdir(parents=True)
    with pytest.raises(RepositoryError, match="cannot record the calibration of conv@1"):
        repository.record_calibration(version, calibration())
    assert sorted(p.name for p in version.path.iterdir() if p.name.startswith(".")) == []


# -- aeq.score and aeq score ---------------------------------------------------------------------


def test_aeq_score_returns_ranked_scores_and_calibrates(repository, engine, tmp_path):
    repository = tiny_repository(tmp_path / "repository")
    images = random_images(150, seed=7)
    scores = aeq.score(images, repository=repository.root, chunk_size=64)
    expected = run_chunk(engine, repository.get("conv"), Operation.SCORE, images).array
    np.testing.assert_array_equal(np.stack([scores.mse, scores.psnr, scores.ssim], 1), expected)
    assert scores.label == "conv@1" and scores.names[0] == "images_00000"
    assert scores.calibration is None and sorted(scores.rank) == list(range(1, 151))

    calibrated = aeq.score(images, repository=repository.root, calibrate=True)
    assert calibrated.calibration == repository.get("conv").calibration()
    assert calibrated.above(99.0).sum() == 2  # 150 items: 1.5 of them above the 99th
    with pytest.raises(UsageError, match="at least 100"):
        aeq.score(images[:10], repository=repository.root, calibrate=True)


def test_the_cli_scores_calibrates_and_draws_the_worst(tmp_path):
    repository = tiny_repository(tmp_path / "repository")
    images = random_images(120, seed=8)
    np.save(tmp_path / "in.npy", images)
    runner = CliRunner()
    base = ["--repository", str(repository.root)]
    calibrated = runner.invoke(cli.app, ["score", "--calibrate", str(tmp_path / "in.npy"), *base])
    assert calibrated.exit_code == 0, calibrated.output
    assert "calibrated conv@1 on 120 known-good items" in calibrated.output

    out = tmp_path / "s.csv"
    args = ["score", str(tmp_path / "in.npy"), "-o", str(out), "--top", "5", *base]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "2 over p99" in result.output and (tmp_path / "s-top.png").is_file()
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 120 and rows[0]["rank"] == "1"

    refused = runner.invoke(cli.app, ["score", str(tmp_path / "in.npy"), "-o", "x.png", *base])
    assert refused.exit_code == 2 and ".csv, .json or .npy" in refused.output
    no_output = runner.invoke(cli.app, ["score", str(tmp_path / "in.npy"), "--top", "3", *base])
    assert no_output.exit_code == 2 and "--top draws beside the scores" in no_output.output
