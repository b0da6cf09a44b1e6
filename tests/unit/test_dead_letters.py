"""The dead-letter list: capped, newest first, small entries whatever the message held."""

from __future__ import annotations

import msgpack

from aeq.queue.dead_letters import (
    BODY_PREFIX_BYTES,
    DEAD_LETTERS_KEY,
    HEADER_TEXT_CHARS,
    MAX_HEADERS,
    DeadLetter,
    DeadLetters,
)


def letter(reason: str = "bad", body: bytes = b"\xc0", headers: object = None) -> DeadLetter:
    return DeadLetter.of(reason, "w@test", headers or {"task": "aeq.run_chunk", "id": "t"}, body)


def test_an_entry_round_trips_through_redis(redis_client):
    letters = DeadLetters(redis_client)
    kept = DeadLetter.of("body is None", "w@test", {"id": "t", "n": 3}, b"\xc0", "application/x")
    letters.keep(kept)
    (back,) = letters.recent(10)
    assert back == kept
    assert (back.body_bytes, back.content_type) == (1, "application/x")


def test_newest_first_and_capped(redis_client):
    letters = DeadLetters(redis_client, limit=5)
    for number in range(12):
        letters.keep(letter(f"bad {number}"))
    assert letters.count() == 5
    assert [entry.reason for entry in letters.recent(3)] == ["bad 11", "bad 10", "bad 9"]


def test_a_big_body_keeps_only_its_prefix_and_its_size(redis_client):
    letters = DeadLetters(redis_client)
    letters.keep(letter(body=b"x" * 10_000_000))
    (back,) = letters.recent(1)
    assert back.body == b"x" * BODY_PREFIX_BYTES and back.body_bytes == 10_000_000
    assert redis_client.memory_usage(DEAD_LETTERS_KEY) < 4 * BODY_PREFIX_BYTES


def test_headers_are_cut_to_short_plain_values():
    headers = {f"h{i}": "v" * 1000 for i in range(100)}
    headers.update({"h0": 2**70, "h1": [1, {"a": object()}], "h2": 7, "h3": None})
    kept = letter(headers=headers)
    assert len(kept.headers) == MAX_HEADERS
    texts = [value for value in kept.headers.values() if isinstance(value, str)]
    assert len(texts) == MAX_HEADERS - 2 and all(len(text) <= HEADER_TEXT_CHARS for text in texts)
    assert kept.headers["h0"] == str(2**70)  # msgpack has no 70-bit integers
    assert kept.headers["h1"].startswith("[1, {'a': <object")
    assert (kept.headers["h2"], kept.headers["h3"]) == (7, None)
    assert DeadLetter.from_bytes(kept.to_bytes()) == kept


def test_headers_that_are_not_a_mapping_are_kept_as_text():
    assert letter(headers=[1, 2]).headers == {"(headers)": "[1, 2]"}


def test_a_str_body_is_kept_as_its_bytes():
    assert DeadLetter.of("r", "w", {}, "héllo").body == "héllo".encode()


def test_an_entry_that_is_not_a_dead_letter_reads_as_one_saying_so(redis_client):
    redis_client.lpush(DEAD_LETTERS_KEY, b"\xc1 garbage", msgpack.packb({"reason": 1}))
    first, second = DeadLetters(redis_client).recent(10)
    assert "unreadable dead-letter entry" in first.reason
    assert "unreadable dead-letter entry" in second.reason and second.body == b"\xc1 garbage"


def test_json_form_has_an_iso_time_and_the_body_as_text():
    data = letter(body=b"ab\xff").to_dict()
    assert data["body"] == "ab\\xff" and data["time"][:2] == "20"


def test_clear_says_how_many_it_deleted(redis_client):
    letters = DeadLetters(redis_client)
    for _ in range(3):
        letters.keep(letter())
    assert letters.clear() == 3
    assert letters.count() == 0 and letters.recent(5) == []
