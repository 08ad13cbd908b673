"""The reply reader on its own: bytes in, replies or ProtocolError out; bounded always."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import ProtocolError
from exporter.smtp.esmtp import parse_ehlo
from exporter.smtp.reply import MAX_LINE, MAX_PENDING, MAX_REPLY_LINES, Reply, ReplyReader


def feed_all(data: bytes, chunks: list[int] | None = None) -> list[Reply]:
    """Feed ``data`` in pieces of the given sizes (the rest at the end), then take replies."""
    reader = ReplyReader()
    pos = 0
    for size in chunks or []:
        reader.feed(data[pos : pos + size])
        pos += size
    reader.feed(data[pos:])
    out: list[Reply] = []
    while (r := reader.pop()) is not None:
        out.append(r)
    return out


def test_single_and_multiline():
    replies = feed_all(b"220 mx.example ESMTP\r\n250-mx.example\r\n250-SIZE 100\r\n250 OK\r\n")
    assert [r.code for r in replies] == [220, 250]
    assert replies[1].lines == ("mx.example", "SIZE 100", "OK")


def test_enhanced_status_only_when_class_matches():
    (r,) = feed_all(b"535 5.7.8 Authentication credentials invalid\r\n")
    assert r.enhanced == "5.7.8"
    (r,) = feed_all(b"250 5.7.8 odd\r\n")
    assert r.enhanced is None
    (r,) = feed_all(b"250 2.0.0\r\n")
    assert r.enhanced == "2.0.0"


def test_bare_lf_and_bare_code_accepted():
    assert [r.code for r in feed_all(b"220 hi\n250\n")] == [220, 250]


def test_control_characters_and_invalid_utf8_are_neutralised():
    (r,) = feed_all(b"220 \xff\xfe\x00bad\x1b[31m ESMTP\r\n")
    assert "\x1b" not in r.text and "\x00" not in r.text
    assert "bad" in r.text


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"abc hello\r\n", "malformed"),
        (b"250Xhello\r\n", "malformed"),
        (b"25\r\n", "malformed"),
        (b"650 nope\r\n", "malformed"),
        (b"250-a\r\n251 b\r\n", "code changed"),
        (b"250-" + b"A" * (MAX_LINE + 10), "longer than"),
        (b"250-x\r\n" * (MAX_REPLY_LINES + 1), "lines"),
        (b"250 ok\r\n" * (MAX_PENDING + 1), "nobody asked"),
    ],
)
def test_protocol_errors(data, message):
    reader = ReplyReader()
    with pytest.raises(ProtocolError, match=message):
        reader.feed(data)
    with pytest.raises(ProtocolError):  # the reader stays broken
        reader.feed(b"250 ok\r\n")


def test_huge_line_rejected_before_buffering_it():
    reader = ReplyReader()
    reader.feed(b"250-")
    chunk = b"A" * 1024
    with pytest.raises(ProtocolError):
        for _ in range(10 * 1024):  # 10 MB in 1 KiB pieces
            reader.feed(chunk)
            assert reader.pending_bytes <= MAX_LINE + len(chunk)


@pytest.mark.parametrize("extra", [b"250 injected\r\n", b"250-part", b"\x16\x03\x03"])
def test_holds_data_after_a_reply(extra):
    reader = ReplyReader()
    reader.feed(b"220 go ahead\r\n")
    assert reader.pop() is not None and not reader.holds_data
    reader.feed(extra)
    assert reader.holds_data


def test_ehlo_parser():
    (r,) = feed_all(
        b"250-mx.example Hello\r\n250-SIZE 35882577\r\n250-AUTH LOGIN PLAIN\r\n"
        b"250-AUTH=LOGIN CRAM-MD5\r\n250-8bitmime\r\n250-b@d keyword\r\n250-SIZE\r\n"
        b"250 STARTTLS\r\n"
    )
    ext = parse_ehlo(r)
    assert ext.host == "mx.example"
    assert ext.keywords == ("SIZE", "AUTH", "8BITMIME", "STARTTLS")
    assert ext.auth_mechanisms == ("LOGIN", "PLAIN", "CRAM-MD5")
    assert ext.size_limit == 35882577
    assert ext.has("starttls")


# --- fuzzing ---------------------------------------------------------------------------

reply_lines = st.builds(
    lambda code, parts: b"".join(
        f"{code}{'-' if i < len(parts) - 1 else ' '}".encode() + p + b"\r\n"
        for i, p in enumerate(parts)
    ),
    st.sampled_from([220, 250, 334, 421, 535, 554]),
    st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), min_size=1, max_size=5),
)
streams = st.one_of(
    st.binary(max_size=2000),
    st.lists(reply_lines, max_size=6).map(b"".join),
    st.lists(st.one_of(reply_lines, st.binary(max_size=50)), max_size=8).map(b"".join),
)


def outcome(data: bytes, chunks: list[int] | None = None) -> list[Reply] | str:
    try:
        return feed_all(data, chunks)
    except ProtocolError:
        return "protocol error"


@settings(max_examples=400, deadline=None)
@given(streams)
def test_fuzz_only_protocol_errors(data):
    result = outcome(data)  # anything but ProtocolError propagates and fails the test
    if isinstance(result, list):
        for reply in result:
            assert 200 <= reply.code <= 599
            assert len(reply.lines) <= MAX_REPLY_LINES


@settings(max_examples=400, deadline=None)
@given(streams, st.lists(st.integers(min_value=0, max_value=64), max_size=40))
def test_fuzz_chunking_does_not_change_the_result(data, chunks):
    assert outcome(data, chunks) == outcome(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=4096), st.integers(min_value=1, max_value=3000))
def test_fuzz_memory_stays_bounded(pattern, repeats):
    reader = ReplyReader()
    try:
        for _ in range(repeats):
            reader.feed(pattern)
            assert reader.pending_bytes <= MAX_LINE + len(pattern)
            while reader.pop() is not None:
                pass
    except ProtocolError:
        pass
