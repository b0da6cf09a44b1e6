"""Item names become safe, unique file names that never leave the output folder."""

from pathlib import Path

import pytest

from aeq.files.names import MAX_NAME_BYTES, item_names, sanitize, unique_names

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
