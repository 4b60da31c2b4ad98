"""Client-facing ids of logged events: ``<ms>-<seq>.<d8>``, parsed back, ordered by stream id."""

from __future__ import annotations

from hashlib import blake2b

import pytest

from connectome_core.event_log import (
    digest8,
    log_event_id,
    parse_log_event_id,
    stream_id_key,
)


def test_the_id_is_the_stream_id_and_8_hex_of_the_content_digest() -> None:
    d8 = blake2b(b"deploy\0v1.2", digest_size=4).hexdigest()
    assert log_event_id("1700000000000-3", "deploy", "v1.2") == f"1700000000000-3.{d8}"
    assert log_event_id(b"1700000000000-3", b"deploy", b"v1.2") == f"1700000000000-3.{d8}"


def test_two_identical_payloads_get_two_ids_and_the_digest_binds_the_event_name() -> None:
    assert log_event_id("1-0", "e", "x") != log_event_id("1-1", "e", "x")
    assert digest8("ab", "c") != digest8("a", "bc")  # the separator keeps them apart


def test_parse_round_trip() -> None:
    text = log_event_id("1700000000000-12", "deploy", "é")
    assert parse_log_event_id(text) == ("1700000000000-12", digest8("deploy", "é"))


@pytest.mark.parametrize(
    "text",
    ["", "1-0", "1-0.", "1-0.abcdefg", "1-0.ABCDEF12", "1.abcdef12", "1-0.abcdef12x", "a" * 16],
)
def test_parse_refuses_what_is_not_a_log_id(text: str) -> None:
    assert parse_log_event_id(text) is None


def test_stream_ids_order_as_numbers() -> None:
    assert stream_id_key("10-0") > stream_id_key("9-5") > stream_id_key("9-4")
    with pytest.raises(ValueError):
        stream_id_key("9")
