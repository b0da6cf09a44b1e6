"""Resume points: a streamed job's staged output and the notes of what it holds for good."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from aeq.core.errors import AeqError, UsageError
from aeq.files.outputs import open_code_output, open_image_output
from aeq.files.resume import ResumeJob, ResumePoint, StoredChunk

JOB = ResumeJob("0123456789ab", "denoise", "denoising", 1, 10, 4)


def images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28), dtype=np.uint8)


def names(start: int, count: int) -> list[str]:
    return [f"item-{index}" for index in range(start, start + count)]


def test_a_point_notes_its_job_and_chunks(tmp_path):
    point = ResumePoint(tmp_path / "out.npy")
    assert not point.exists()
    point.prepare()
    assert not point.exists()  # the job is noted only once it exists
    point.record_job(JOB)
    point.note([StoredChunk(0, 0, ["a", "b"]), StoredChunk(2, 8, ["c"])])
    again = ResumePoint(tmp_path / "out.npy")
    assert again.exists() and again.job() == JOB
    assert again.stored() == [StoredChunk(0, 0, ["a", "b"]), StoredChunk(2, 8, ["c"])]
    assert point.folder.name == ".out.npy.aeq-resume"


def test_a_torn_last_note_is_cut_off_and_the_next_starts_clean(tmp_path):
    point = ResumePoint(tmp_path / "out.npy")
    point.prepare()
    point.record_job(JOB)
    point.note([StoredChunk(0, 0, ["a"])])
    with (point.folder / "chunks.jsonl").open("a") as log:
        log.write('{"chunk": 1, "start": 4, "na')  # the crash came mid-append
    assert point.stored() == [StoredChunk(0, 0, ["a"])]
    point.note([StoredChunk(1, 4, ["b"])])
    assert point.stored() == [StoredChunk(0, 0, ["a"]), StoredChunk(1, 4, ["b"])]


def test_nothing_to_resume_is_one_usage_error(tmp_path):
    with pytest.raises(UsageError, match="nothing to resume for .*out.npy"):
        ResumePoint(tmp_path / "out.npy").job()
    point = ResumePoint(tmp_path / "bad.npy")
    point.prepare()
    (point.folder / "job.json").write_text("{}")
    with pytest.raises(UsageError, match="not a resume point"):
        point.job()


@pytest.mark.parametrize("suffix", [".npy", ".npz", ""])
def test_images_resume_from_what_was_noted_and_commit_whole(tmp_path, suffix):
    target = tmp_path / f"out{suffix}"
    data = images(10)
    point = ResumePoint(target)
    writer = open_image_output(target, 10, False, point)
    point.record_job(JOB)
    writer.write(0, names(0, 4), data[0:4])
    writer.write(8, names(8, 2), data[8:10])
    assert writer.checkpoint([(0, 0, names(0, 4)), (2, 8, names(8, 2))])
    writer.write(4, names(4, 4), data[4:8])  # written, never noted: the client died here
    writer.suspend()
    writer.__exit__(None, None, None)  # a suspended writer's block ends without deleting
    assert point.exists() and not target.exists()

    resumed = open_image_output(target, 10, False, point, resuming=True)
    assert resumed.stored_chunks() == [0, 2]
    assert resumed.items_written == 6
    resumed.write(4, names(4, 4), data[4:8])
    resumed.commit()

    assert not point.folder.exists()
    if suffix == ".npy":
        np.testing.assert_array_equal(np.load(target), data)
    elif suffix == ".npz":
        with np.load(target) as archive:
            np.testing.assert_array_equal(archive["images"], data)
            assert list(archive["names"]) == names(0, 10)
    else:
        assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.png" for n in names(0, 10))


def test_png_names_noted_before_a_resume_stay_claimed(tmp_path):
    """A name taken before the resume still makes a later duplicate wait for its final name."""
    target = tmp_path / "pngs"
    data = images(4)
    point = ResumePoint(target)
    writer = open_image_output(target, 4, False, point)
    point.record_job(JOB)
    writer.write(0, ["same", "other"], data[:2])
    writer.checkpoint([(0, 0, ["same", "other"])])
    writer.suspend()
    resumed = open_image_output(target, 4, False, point, resuming=True)
    resumed.write(2, ["same", "third"], data[2:])
    resumed.commit()
    assert sorted(p.name for p in target.iterdir()) == [
        "other.png",
        "same.png",
        "same~2.png",
        "third.png",
    ]
    second = np.asarray(Image.open(target / "same~2.png"))
    np.testing.assert_array_equal(second, data[2])


def test_codes_resume_too(tmp_path):
    target = tmp_path / "codes.npz"
    codes = np.random.default_rng(1).random((6, 3), dtype=np.float32)
    point = ResumePoint(target)
    writer = open_code_output(target, 6, 3, "multilayer", 2, False, point)
    point.record_job(JOB)
    writer.write(0, names(0, 3), codes[:3])
    writer.checkpoint([(0, 0, names(0, 3))])
    writer.suspend()
    resumed = open_code_output(target, 6, 3, "multilayer", 2, False, point, resuming=True)
    resumed.write(3, names(3, 3), codes[3:])
    resumed.commit()
    with np.load(target) as archive:
        np.testing.assert_array_equal(archive["codes"], codes)
        assert list(archive["names"]) == names(0, 6)


def test_a_writer_without_a_point_checkpoints_nothing(tmp_path):
    writer = open_image_output(tmp_path / "out.npy", 2, False)
    writer.write(0, ["a", "b"], images(2))
    assert writer.checkpoint([(0, 0, ["a", "b"])]) is False
    assert writer.stored_chunks() == []
    writer.abort()


def test_an_aborted_writer_takes_its_point_with_it(tmp_path):
    target = tmp_path / "out.npy"
    point = ResumePoint(target)
    with open_image_output(target, 2, False, point) as writer:
        point.record_job(JOB)
        writer.write(0, ["a"], images(1))
        writer.checkpoint([(0, 0, ["a"])])
    assert not point.folder.exists() and list(tmp_path.iterdir()) == []


def test_a_staged_array_of_another_shape_is_refused(tmp_path):
    target = tmp_path / "out.npy"
    point = ResumePoint(target)
    writer = open_image_output(target, 4, False, point)
    point.record_job(JOB)
    writer.suspend()
    with pytest.raises(AeqError, match="cannot resume .*out.npy: the staged output.npy is uint8"):
        open_image_output(target, 5, False, point, resuming=True)
    assert point.exists()  # kept: nothing is deleted for failing to reopen it


@pytest.mark.parametrize("suffix", [".npy", ""])
def test_a_checkpoint_behind_notes_before_it_lets_go(tmp_path, suffix):
    """In the writer's own thread for an .npy (at once for a PNG folder): ``then`` (the client's
    delete from Redis) runs only once the chunks are noted, and the next call waits for it."""
    target = tmp_path / f"out{suffix}"
    data = images(10)
    point = ResumePoint(target)
    seen: list[list[int]] = []
    with open_image_output(target, 10, False, point) as writer:
        point.record_job(JOB)
        writer.write(0, names(0, 4), data[0:4])
        then = lambda: seen.append([chunk.chunk for chunk in point.stored()])  # noqa: E731
        assert writer.checkpoint_behind([(0, 0, names(0, 4))], then)
        writer.write(4, names(4, 4), data[4:8])  # goes on while the first batch is kept
        assert writer.checkpoint_behind([(1, 4, names(4, 4))], then)
        writer.write(8, names(8, 2), data[8:10])
        writer.commit()
    assert seen == [[0], [0, 1]]
    assert not point.exists()


def test_a_failed_checkpoint_behind_is_raised_by_the_next_call(tmp_path):
    target = tmp_path / "out.npy"
    point = ResumePoint(target)
    with open_image_output(target, 10, False, point) as writer:
        point.record_job(JOB)
        writer.write(0, names(0, 4), images(4))

        def gone() -> None:
            raise ConnectionError("Redis went away")

        assert writer.checkpoint_behind([(0, 0, names(0, 4))], gone)
        with pytest.raises(ConnectionError, match="went away"):
            writer.checkpoint_behind([(1, 4, names(4, 4))], gone)
    assert [chunk.chunk for chunk in point.stored()] == []  # aborted: the point went with it
