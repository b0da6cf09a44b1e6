"""Item names become safe, unique file names that never leave the output folder."""

import random
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from aeq.files.names import (
    MAX_NAME_BYTES,
    ItemNames,
    NameSlice,
    NumberedNames,
    item_names,
    sanitize,
    unique_names,
)

HOSTILE = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "",
    "/",
    ".bashrc",
    "a/../../b",
    "C:\\Windows\\system32\\evil",
    "\\\\server\\share\\x",
    "nul\x00byte",
    "new\nline\ttab",
    'wild<>:"|?*card',
    "trailing dot.",
    " spaced ",
    "CON",
    "com1.txt",
    "x" * 1000,
    "é" * 300,
    "💥" * 100,
    "~",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_sanitised_names_stay_inside_the_folder(raw: str, tmp_path: Path) -> None:
    name = sanitize(raw)
    assert name and "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".") and name not in {".", ".."}
    assert not name.endswith((".", " "))
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert sanitize(name) == name  # idempotent: re-sanitising a result changes nothing
    target = (tmp_path / f"{name}.png").resolve()
    assert target.parent == tmp_path.resolve()
    target.write_bytes(b"x")  # and the file system accepts it


def test_path_components_flatten_and_dot_components_vanish() -> None:
    assert sanitize("../../etc/passwd") == "etc_passwd"
    assert sanitize("/etc/passwd") == "etc_passwd"
    assert sanitize("digits/7/a") == "digits_7_a"
    assert sanitize("a\\b") == "a_b"
    assert sanitize("..") == "item"
    assert sanitize(".hidden") == "hidden"


def test_control_and_reserved_characters_are_replaced() -> None:
    assert sanitize("a\x00b") == "a_b"
    assert sanitize("a:b*c") == "a_b_c"
    assert sanitize("CON") == "_CON"
    assert sanitize("lpt1.x") == "_lpt1.x"


def test_unicode_letters_are_kept_in_nfc() -> None:
    assert sanitize("zéro") == "zéro"
    assert sanitize("ze\u0301ro") == "z\u00e9ro"  # decomposed input comes out composed
    assert sanitize("数字/七") == "数字_七"


def test_long_names_are_cut_but_stay_distinct() -> None:
    first, second = sanitize("a" * 300 + "1"), sanitize("a" * 300 + "2")
    assert first != second
    assert len(first.encode()) <= MAX_NAME_BYTES and len(second.encode()) <= MAX_NAME_BYTES
    multibyte = sanitize("é" * 300)
    assert multibyte.encode("utf-8").decode("utf-8") == multibyte  # cut on a character boundary


def test_collisions_get_deterministic_suffixes() -> None:
    assert unique_names(["a", "b", "a", "a"]) == ["a", "b", "a~2", "a~3"]
    # Flattening makes sub/x and sub_x collide; case-insensitive file systems merge A and a.
    assert unique_names(["sub/x", "sub_x", "A", "a"]) == ["sub_x", "sub_x~2", "A", "a~2"]


def test_a_suffix_never_takes_a_name_used_elsewhere_in_the_list() -> None:
    names = unique_names(["a", "a", "a~2"])
    assert names == ["a", "a~3", "a~2"]
    assert len({name.casefold() for name in names}) == len(names)


def test_uniqueness_depends_only_on_the_list() -> None:
    raw = ["../x", "x", "X", "/x", "x~2"] * 3
    assert unique_names(raw) == unique_names(list(raw))
    assert len({name.casefold() for name in unique_names(raw)}) == len(raw)


def test_item_names_of_an_array() -> None:
    assert item_names("digits", 3) == ["digits_00000", "digits_00001", "digits_00002"]
    assert item_names("../up/x", 1) == ["up_x_00000"]
    assert item_names("big", 123_456)[-1] == "big_123455"  # widens past 5 digits
    long = item_names("s" * 500, 2)
    assert all(len(name.encode()) <= MAX_NAME_BYTES for name in long) and long[0] != long[1]


# --- Names made a chunk at a time -----------------------------------------------------------


def eager_unique_names(names: Sequence[str]) -> list[str]:
    """The rule of unique_names spelled out over a whole list (the behaviour ItemNames keeps)."""
    clean = [sanitize(name) for name in names]
    taken = {name.casefold() for name in clean}
    seen: set[str] = set()
    result = []
    for name in clean:
        if name.casefold() in seen:
            counter = 2
            while f"{name}~{counter}".casefold() in taken:
                counter += 1
            name = f"{name}~{counter}"
            taken.add(name.casefold())
        seen.add(name.casefold())
        result.append(name)
    return result


def test_numbered_names_cost_nothing_until_asked_for() -> None:
    started = time.monotonic()
    names = NumberedNames("huge", 2**60)
    assert len(names) == 2**60 and names[-1] == f"huge_{2**60 - 1}"
    joined = ItemNames([["a.png"], names, NumberedNames("huge", 2**32 - 1)])
    assert joined[:3] == ["a.png", "huge_0000000000000000000", "huge_0000000000000000001"]
    assert time.monotonic() - started < 1.0
    assert list(NumberedNames("d", 3)) == item_names("d", 3)


STEMS = ["x", "X", "a/x", "x_00001", "y"]
LISTED = ["x_00001", "X_00000", "x_00000~2", "x", "a_x_00002", "y_00000", "x~2", "z"]


@pytest.mark.parametrize("seed", range(40))
def test_item_names_equal_unique_names_of_the_joined_list(seed: int) -> None:
    rng = random.Random(seed)
    runs: list[Sequence[str]] = []
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.5:
            runs.append(NumberedNames(rng.choice(STEMS), rng.randint(0, 12)))
        else:
            runs.append([rng.choice(LISTED) for _ in range(rng.randint(0, 6))])
    joined = [name for run in runs for name in run]
    expected = eager_unique_names(joined)
    assert list(ItemNames(runs)) == expected == unique_names(joined)
    names = ItemNames(runs)  # asked for in chunks, as a job reads them
    size = rng.randint(1, 5)
    assert [n for start in range(0, len(names), size) for n in names[start : start + size]] == (
        expected
    )
    if expected:
        assert ItemNames(runs)[-1] == expected[-1]  # random access settles what comes before


def test_a_name_slice_makes_its_names_only_when_read() -> None:
    asked: list[object] = []

    class Counting(list[str]):
        def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
            asked.append(index)
            return super().__getitem__(index)

    names = Counting(f"item_{i}" for i in range(10))
    part = NameSlice(names, 3, 7)
    assert len(part) == 4 and asked == []
    assert list(part) == ["item_3", "item_4", "item_5", "item_6"]
    assert part[0] == "item_3" and part[-1] == "item_6" and part[1:3] == ["item_4", "item_5"]
    with pytest.raises(IndexError):
        part[4]
