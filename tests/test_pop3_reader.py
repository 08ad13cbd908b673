"""The POP3 response reader on its own: bytes in, responses or ProtocolError out; bounded
always, whatever the server sends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import ProtocolError
from exporter.pop3.reader import (
    MAX_LINE,
    MAX_MULTILINE_BYTES,
    MAX_MULTILINE_LINES,
    POP3Reader,
    Response,
    Status,
)

CAPA = b"+OK Capability list follows\r\nTOP\r\nUSER\r\nSASL PLAIN SCRAM-SHA-256\r\nSTLS\r\n.\r\n"


def reader_after_greeting() -> POP3Reader:
    r = POP3Reader()
    r.feed(b"+OK ready\r\n")
    assert r.pop() == Response(Status.OK, "ready")
    return r


def take(reader: POP3Reader) -> list[Response]:
    out = []
    while (item := reader.pop()) is not None:
        out.append(item)
    return out


def test_greeting_is_expected_from_the_start():
    r = POP3Reader()
    r.feed(b"+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n")
    (greeting,) = take(r)
    assert greeting.ok and greeting.text == "POP3 ready <1896.697170952@dbc.mtview.ca.us>"
    assert not r.holds_data


def test_single_line_ok_err_and_bare_status():
    r = reader_after_greeting()
    for _ in range(3):
        r.expect()
    r.feed(b"+OK 2 320\r\n-ERR [AUTH] no such user\r\n+OK\r\n")
    assert take(r) == [
        Response(Status.OK, "2 320"),
        Response(Status.ERR, "[AUTH] no such user"),
        Response(Status.OK, ""),
    ]
    assert str(Response(Status.ERR, "x")) == "-ERR x"


def test_multiline_capa_with_dot_unstuffing():
    r = reader_after_greeting()
    r.expect(multiline=True)
    r.feed(b"+OK list\r\n..hidden\r\n.\tx\r\nSTLS\r\n.\r\n")
    (capa,) = take(r)
    assert capa.ok and capa.text == "list"
    # The first dot of a stuffed line goes; the rest stays (a tab is not a control to strip).
    assert capa.lines == (".hidden", "x", "STLS")


def test_multiline_in_every_chunking():
    """The same bytes give the same response however TCP cuts them."""
    for cut in range(1, len(CAPA)):
        r = reader_after_greeting()
        r.expect(multiline=True)
        r.feed(CAPA[:cut])
        assert r.pop() is None
        r.feed(CAPA[cut:])
        (capa,) = take(r)
        assert capa.lines == ("TOP", "USER", "SASL PLAIN SCRAM-SHA-256", "STLS")


def test_err_to_a_multiline_command_is_one_line():
    """RFC 2449: a server without CAPA answers -ERR, and no body follows."""
    r = reader_after_greeting()
    r.expect(multiline=True)
    r.expect()
    r.feed(b"-ERR unknown command\r\n+OK bye\r\n")
    assert take(r) == [Response(Status.ERR, "unknown command"), Response(Status.OK, "bye")]


def test_sasl_continuation():
    r = reader_after_greeting()
    r.expect()
    r.expect()
    r.expect()
    r.feed(b"+ cj1mb28sczE=\r\n+ \r\n+\r\n")
    assert take(r) == [
        Response(Status.CONTINUE, "cj1mb28sczE="),
        Response(Status.CONTINUE, ""),
        Response(Status.CONTINUE, ""),
    ]


def test_bare_lf_accepted_and_status_case_insensitive():
    r = reader_after_greeting()
    r.expect()
    r.expect(multiline=True)
    r.feed(b"+ok fine\n+OK\nA\n.\n")
    assert take(r) == [Response(Status.OK, "fine"), Response(Status.OK, "", ("A",))]


def test_control_characters_and_invalid_utf8_are_neutralised():
    r = POP3Reader()
    r.feed(b"-ERR \xff\xfe\x00bad\x1b[31m\x7f\r\n")
    (item,) = take(r)
    assert item.status is Status.ERR
    assert not any(c in item.text for c in "\x00\x1b\x7f")
    assert "bad" in item.text


@pytest.mark.parametrize(
    "line",
    [b"OK hello", b"+OKAY", b"-ERROR no", b"220 smtp server", b"* OK IMAP4rev1", b"", b" +OK"],
)
def test_malformed_first_lines(line):
    r = POP3Reader()
    with pytest.raises(ProtocolError, match="malformed"):
        r.feed(line + b"\r\n")


def test_unsolicited_response_is_refused():
    r = POP3Reader()
    with pytest.raises(ProtocolError, match="nobody asked for"):
        r.feed(b"+OK ready\r\n+OK surprise\r\n")
    # The greeting came before the surprise and stays to be taken; the reader is broken.
    assert r.pop() == Response(Status.OK, "ready")
    assert r.holds_data


def test_broken_reader_stays_broken():
    r = POP3Reader()
    with pytest.raises(ProtocolError):
        r.feed(b"garbage\r\n")
    with pytest.raises(ProtocolError):
        r.feed(b"+OK fine now\r\n")
    assert r.pop() is None


def test_holds_data_sees_partial_lines_and_unfinished_bodies():
    r = reader_after_greeting()
    assert not r.holds_data
    r.expect(multiline=True)
    r.feed(b"+OK")
    assert r.holds_data
    r.feed(b" list\r\nTOP\r\n")
    assert r.holds_data and r.pop() is None
    r.feed(b".\r\n")
    assert take(r)[0].lines == ("TOP",)
    assert not r.holds_data


# --- hostile streams: the bounds --------------------------------------------------------


def test_endless_line_without_crlf_stops_at_the_bound():
    r = POP3Reader()
    chunk = b"+OK " + b"x" * 1000
    with pytest.raises(ProtocolError, match="longer than"):
        for _ in range(MAX_LINE // 1000 + 2):
            r.feed(chunk)
            assert r.pending_bytes <= MAX_LINE
            chunk = b"x" * 1000


def test_one_long_line_in_a_single_chunk():
    r = POP3Reader()
    with pytest.raises(ProtocolError, match="longer than"):
        r.feed(b"+OK " + b"x" * MAX_LINE + b"\r\n")


def test_line_at_the_bound_is_accepted():
    r = POP3Reader()
    r.feed(b"+OK " + b"x" * (MAX_LINE - 4) + b"\r\n")
    assert len(take(r)[0].text) == MAX_LINE - 4


def test_endless_capa_without_the_dot_stops_at_the_line_bound():
    r = reader_after_greeting()
    r.expect(multiline=True)
    r.feed(b"+OK endless\r\n")
    with pytest.raises(ProtocolError, match=f"{MAX_MULTILINE_LINES} lines"):
        for i in range(MAX_MULTILINE_LINES + 1):
            r.feed(b"X-CAP%d\r\n" % i)
    assert r.pending_bytes == 0  # everything held is dropped once broken


def test_endless_capa_in_one_big_chunk():
    r = reader_after_greeting()
    r.expect(multiline=True)
    with pytest.raises(ProtocolError, match="lines"):
        r.feed(b"+OK\r\n" + b"A\r\n" * (MAX_MULTILINE_LINES + 5) + b".\r\n")


def test_multiline_body_stops_at_the_byte_bound():
    r = reader_after_greeting()
    r.expect(multiline=True)
    r.feed(b"+OK big\r\n")
    line = b"y" * 4000 + b"\r\n"
    with pytest.raises(ProtocolError, match=f"{MAX_MULTILINE_BYTES} bytes"):
        for _ in range(MAX_MULTILINE_BYTES // len(line) + 2):
            r.feed(line)
            assert r.pending_bytes <= MAX_MULTILINE_BYTES + MAX_LINE


def test_unterminated_multiline_never_completes():
    """No dot, no bound reached: nothing is returned (the deadline ends it in a session)."""
    r = reader_after_greeting()
    r.expect(multiline=True)
    r.feed(b"+OK list\r\nUSER\r\nSTLS\r\n.. not the end\r\n")
    assert r.pop() is None and r.holds_data


def test_too_many_expectations_is_our_bug():
    r = POP3Reader()
    with pytest.raises(RuntimeError):
        for _ in range(10):
            r.expect()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096), st.lists(st.integers(1, 512), max_size=16))
def test_arbitrary_bytes_raise_protocol_error_or_parse_within_bounds(data, cuts):
    r = POP3Reader()
    r.expect(multiline=True)
    r.expect()
    pos = 0
    try:
        for size in [*cuts, len(data)]:
            r.feed(data[pos : pos + size])
            pos += size
            assert r.pending_bytes <= MAX_LINE + MAX_MULTILINE_BYTES
    except ProtocolError:
        return
    items = take(r)
    assert len(items) <= 3
    for item in items:
        assert isinstance(item, Response)
        assert not any(c in item.text for c in "\r\n\x00\x1b")
