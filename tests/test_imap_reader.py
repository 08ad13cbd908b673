"""The sans-IO IMAP response reader: real server transcripts in any chunking, and hostile byte
streams that must be refused early with memory held to the bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import ProtocolError
from exporter.imap.reader import (
    MAX_COMMAND_BYTES,
    MAX_LINE,
    MAX_LITERAL,
    MAX_UNTAGGED,
    IMAPReader,
    Kind,
    Response,
)

# What Dovecot 2.3 answers to an EXAMINE, after its greeting (abridged capability list).
DOVECOT = (
    b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS "
    b"AUTH=PLAIN AUTH=SCRAM-SHA-256] Dovecot (Debian) ready.\r\n",
    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
    b"* OK [PERMANENTFLAGS ()] Read-only mailbox.\r\n"
    b"* 3 EXISTS\r\n"
    b"* 0 RECENT\r\n"
    b"* OK [UIDVALIDITY 1764559000] UIDs valid\r\n"
    b"* OK [UIDNEXT 4] Predicted next UID\r\n"
    b"A1 OK [READ-ONLY] Examine completed (0.001 + 0.000 secs).\r\n",
)
FETCH = (
    b'* 2 FETCH (UID 7 INTERNALDATE "01-Dec-2026 03:00:00 +0000" '
    b"BODY[HEADER.FIELDS (X-TOKEN)] {16}\r\nX-Token: abc\r\n\r\n FLAGS (\\Seen))\r\n"
    b"A2 OK Fetch completed.\r\n"
)


def read_all(reader: IMAPReader) -> list[Response]:
    out = []
    while (item := reader.pop()) is not None:
        out.append(item)
    return out


def feed_in(reader: IMAPReader, data: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in sorted(cuts):
        reader.feed(data[last:cut])
        last = cut
    reader.feed(data[last:])


def test_greeting_and_examine() -> None:
    reader = IMAPReader()
    reader.feed(DOVECOT[0])
    greeting = reader.pop()
    assert greeting is not None and (greeting.kind, greeting.keyword) == (Kind.UNTAGGED, "OK")
    assert greeting.code is not None and greeting.code.split()[:2] == ["CAPABILITY", "IMAP4rev1"]
    assert greeting.text == "Dovecot (Debian) ready."
    reader.expect("A1")
    reader.feed(DOVECOT[1])
    items = read_all(reader)
    exists = [r.number for r in items if r.keyword == "EXISTS"]
    assert exists == [3]
    done = items[-1]
    assert (done.kind, done.tag, done.keyword, done.code) == (Kind.TAGGED, "A1", "OK", "READ-ONLY")
    assert [r.code for r in items if r.keyword == "OK" and r.kind is Kind.UNTAGGED] == [
        "PERMANENTFLAGS ()",
        "UIDVALIDITY 1764559000",
        "UIDNEXT 4",
    ]
    assert not reader.holds_data


def test_literal_is_kept_apart_and_the_response_goes_on_after_it() -> None:
    reader = IMAPReader()
    reader.expect("A2")
    reader.feed(FETCH)
    fetch, done = read_all(reader)
    assert (fetch.keyword, fetch.number) == ("FETCH", 2)
    assert fetch.literals == (b"X-Token: abc\r\n\r\n",)
    assert fetch.data.startswith(b"(UID 7 INTERNALDATE") and fetch.data.endswith(b"(\\Seen))")
    assert b"{16}" in fetch.data and done.tag == "A2"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, len(DOVECOT[0] + DOVECOT[1] + FETCH)), max_size=40))
def test_any_chunking_reads_the_same(cuts: list[int]) -> None:
    whole = IMAPReader()
    whole.feed(DOVECOT[0])
    whole.expect("A1")
    whole.feed(DOVECOT[1])
    expected = read_all(whole)
    whole.expect("A2")
    whole.feed(FETCH)
    expected += read_all(whole)

    # The second command's tag is set before its bytes arrive, as a session does it: here
    # by feeding the stream up to the first tagged reply, then the rest.
    stream = DOVECOT[0] + DOVECOT[1]
    reader = IMAPReader()
    reader.expect("A1")
    feed_in(reader, stream, [c for c in cuts if c <= len(stream)])
    got = read_all(reader)
    reader.expect("A2")
    feed_in(reader, FETCH, [c - len(stream) for c in cuts if c > len(stream)])
    got += read_all(reader)
    assert got == expected


@pytest.mark.parametrize("form", [b"{3}", b"{3+}", b"~{3}"])
def test_literal_forms(form: bytes) -> None:
    reader = IMAPReader()
    reader.expect("t")
    reader.feed(b"* 1 FETCH (BODY[] " + form + b"\r\nabc)\r\nt OK done\r\n")
    fetch, _ = read_all(reader)
    assert fetch.literals == (b"abc",)


def test_empty_and_several_literals() -> None:
    reader = IMAPReader()
    reader.expect("t")
    reader.feed(b"* 1 FETCH (A {0}\r\n B {2}\r\nxy C {1}\r\nz)\r\nt OK\r\n")
    fetch, done = read_all(reader)
    assert fetch.literals == (b"", b"xy", b"z") and done.text == ""


def test_continuation_when_asked_for() -> None:
    reader = IMAPReader()
    reader.expect("a", continuation=True)
    reader.feed(b"+ c2VydmVyLWZpcnN0\r\n+\r\n")
    reader.feed(b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    first, second, done = read_all(reader)
    assert (first.kind, first.text) == (Kind.CONTINUATION, "c2VydmVyLWZpcnN0")
    assert (second.kind, second.text) == (Kind.CONTINUATION, "")
    assert (done.keyword, done.code, done.text) == (
        "NO",
        "AUTHENTICATIONFAILED",
        "Authentication failed.",
    )


def test_control_characters_never_reach_text() -> None:
    reader = IMAPReader()
    reader.feed(b"* OK \x1b[31mred\x00 \x7f\rok\r\n")
    greeting = reader.pop()
    assert greeting is not None and greeting.text.isprintable() and "\x1b" not in greeting.text
    assert str(greeting).isprintable()


def test_long_text_is_clipped() -> None:
    reader = IMAPReader()
    reader.feed(b"* BYE " + b"x" * 4000 + b"\r\n")
    bye = reader.pop()
    assert bye is not None and bye.keyword == "BYE" and len(bye.text) <= 512


# --------------------------------------------------------------------------- hostile streams


def refused(reader: IMAPReader, data: bytes, chunk: int = 4096) -> str:
    with pytest.raises(ProtocolError) as err:
        for pos in range(0, len(data), chunk):
            reader.feed(data[pos : pos + chunk])
    # Broken for good: the connection is out of step.
    with pytest.raises(ProtocolError):
        reader.feed(b"* OK\r\n")
    assert reader.pending_bytes == 0
    return err.value.detail


def test_huge_literal_is_refused_when_announced() -> None:
    reader = IMAPReader()
    reader.expect("a")
    # Not one octet of the literal is needed to refuse it.
    detail = refused(reader, b"* 1 FETCH (BODY[] {4294967295}\r\n")
    assert detail == f"literal of 4294967295 bytes exceeds {MAX_LITERAL}"


def test_literal_just_within_the_bound_is_read() -> None:
    reader = IMAPReader()
    reader.expect("a")
    body = b"x" * MAX_LITERAL
    reader.feed(b"* 1 FETCH (BODY[] {%d}\r\n" % MAX_LITERAL + body + b")\r\n")
    item = reader.pop()
    assert item is not None and item.literals == (body,)


@pytest.mark.parametrize("digits", [b"99999999999999999999", b"65537"])
def test_oversized_literal_forms(digits: bytes) -> None:
    reader = IMAPReader()
    assert "exceeds" in refused(reader, b"* 1 FETCH (BODY[] {" + digits + b"+}\r\n")


def test_endless_line_is_refused_at_the_line_bound() -> None:
    reader = IMAPReader()
    detail = refused(reader, b"* OK " + b"A" * (4 * MAX_LINE), chunk=1000)
    assert detail == f"response line longer than {MAX_LINE} bytes"


def test_line_bound_can_be_raised() -> None:
    reader = IMAPReader(max_line=64 * 1024)
    reader.expect("a")
    uids = b" ".join(b"%d" % n for n in range(1, 6000))
    reader.feed(b"* SEARCH " + uids + b"\r\na OK\r\n")
    search, _ = read_all(reader)
    assert len(search.data.split()) == 5999


def test_bare_lf_is_refused() -> None:
    reader = IMAPReader()
    assert refused(reader, b"* OK ready\n").startswith("response line not ended by CRLF")


def test_lone_lf_is_refused() -> None:
    assert refused(IMAPReader(), b"\n").startswith("response line not ended by CRLF")


def test_wrong_tag_is_refused() -> None:
    reader = IMAPReader()
    reader.expect("A2")
    detail = refused(reader, b"A1 OK LOGIN completed\r\n")
    assert detail.startswith("tagged response for the wrong tag (expected A2)")


def test_tagged_response_with_no_command_is_refused() -> None:
    reader = IMAPReader()
    assert refused(reader, b"A1 OK hello\r\n").startswith("tagged response with no command")


def test_second_completion_of_one_command_is_refused() -> None:
    reader = IMAPReader()
    reader.expect("A1")
    assert "no command in flight" in refused(reader, b"A1 OK done\r\nA1 OK again\r\n")


def test_continuation_out_of_place_is_refused() -> None:
    reader = IMAPReader()
    reader.expect("A1")  # a NOOP: nothing to continue
    assert refused(reader, b"+ go ahead\r\n").startswith("continuation request nobody asked for")


def test_continuation_in_the_greeting_is_refused() -> None:
    assert refused(IMAPReader(), b"+ OK\r\n").startswith("continuation request nobody asked for")


@pytest.mark.parametrize(
    "line",
    [
        b"A1 MAYBE done\r\n",  # not OK / NO / BAD
        b"A1\r\n",
        b"\x00\xff\xfe garbage\r\n",
        b"* \xff\xfe\r\n",
        b"*\r\n",
        b"\r\n",
    ],
)
def test_malformed_lines_are_refused(line: bytes) -> None:
    reader = IMAPReader()
    reader.expect("A1")
    assert refused(reader, line).startswith("malformed")


def test_endless_untagged_responses_are_refused_by_count() -> None:
    reader = IMAPReader()
    reader.expect("A3")
    detail = refused(reader, b"* 1 EXISTS\r\n" * (MAX_UNTAGGED + 1))
    assert detail == f"more than {MAX_UNTAGGED} untagged responses to one command"


def test_endless_untagged_responses_are_refused_by_size() -> None:
    reader = IMAPReader()
    reader.expect("A3")
    line = b"* OK " + b"x" * 1019 + b"\r\n"
    detail = refused(reader, line * (MAX_COMMAND_BYTES // len(line) + 1), chunk=len(line) * 64)
    assert detail == f"more than {MAX_COMMAND_BYTES} bytes of responses to one command"


def test_endless_literals_count_towards_the_size_cap() -> None:
    reader = IMAPReader()
    reader.expect("A3")
    item = b"* 1 FETCH (BODY[] {60000}\r\n" + b"y" * 60000 + b")\r\n"
    assert "bytes of responses" in refused(reader, item * 20, chunk=65536)


def test_caps_are_per_command() -> None:
    reader = IMAPReader()
    line = b"* OK " + b"x" * 1019 + b"\r\n"
    for n in range(3):  # three commands of 700 KiB each: 2.1 MiB in all, within each cap
        reader.expect(f"A{n}")
        reader.feed(line * 700 + f"A{n} OK\r\n".encode())
        assert len(read_all(reader)) == 701


def test_holds_data_sees_a_partial_line_and_an_unread_response() -> None:
    reader = IMAPReader()
    reader.expect("S")
    reader.feed(b"S OK Begin TLS negotiation now.\r\n")
    assert reader.pop() is not None and not reader.holds_data
    reader.feed(b"*")  # injected plaintext after the OK to STARTTLS
    assert reader.holds_data
