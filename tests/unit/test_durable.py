"""aeq.core.durable: folders staged beside their target and swapped in whole, or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from aeq.core.durable import replace_folder, staged_folder


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "file.txt").write_text(text)
    return path


def test_a_staged_folder_replaces_the_old_one_and_leaves_nothing_hidden(tmp_path):
    target = _folder(tmp_path / "report", "old")
    with staged_folder(target) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".report.staging-")
        (staging / "file.txt").write_text("new")
    assert (target / "file.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_failed_block_keeps_the_old_folder_and_deletes_the_staged_one(tmp_path):
    target = _folder(tmp_path / "report", "old")
    with pytest.raises(OSError, match="disk full"), staged_folder(target) as staging:
        (staging / "file.txt").write_text("half")
        raise OSError("disk full")
    assert (target / "file.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_staged_folder_creates_missing_parents(tmp_path):
    with staged_folder(tmp_path / "a" / "b" / "report") as staging:
        (staging / "file.txt").write_text("new")
    assert (tmp_path / "a" / "b" / "report" / "file.txt").read_text() == "new"


def test_replacing_puts_the_old_target_back_when_the_new_one_cannot_go_in(tmp_path):
    target = _folder(tmp_path / "out", "old")
    with pytest.raises(FileNotFoundError):
        replace_folder(tmp_path / "never-written", target)
    assert (target / "file.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replacing_a_file_or_a_link_with_a_folder(tmp_path):
    for name, make in (
        ("file", lambda path: path.write_text("a file")),
        ("link", lambda path: path.symlink_to(tmp_path)),
    ):
        target = tmp_path / name
        make(target)
        replace_folder(_folder(tmp_path / f"new-{name}", "new"), target)
        assert (target / "file.txt").read_text() == "new" and not target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link"]
