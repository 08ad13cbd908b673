"""Authentication-Results (RFC 8601) read from received messages: real-world header blocks
(Gmail, Microsoft 365, Fastmail, Postfix with OpenDKIM and OpenDMARC), forged headers from
the sender, comments, quoted strings, folding, several results per method."""

# The samples keep real headers' long lines and tab-indented folding.
# ruff: noqa: E501, E101

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.canary_verdicts import (
    DEFAULT_PSL,
    PublicSuffixList,
    aligned,
    organizational_domain,
    parse_header,
    read_verdicts,
    strip_comments,
)
from exporter.results.verdicts import AuthResult, AuthVerdicts

P, F = AuthResult.PASS, AuthResult.FAIL


def block(text: str) -> bytes:
    """Header lines as they arrive over IMAP: CRLF line ends, a blank line, a body."""
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n\r\nbody\r\n"


# A message from example.com to Gmail. The ARC-Authentication-Results header says the same
# as Gmail's own, under another header name: it is not an Authentication-Results header.
GMAIL = """
Delivered-To: canary@gmail.com
Received: by 2002:a05:7300:478f:b0:1a2:3b4c:5d6e with SMTP id r15csp123456dyk;
        Tue, 1 Dec 2026 03:00:01 -0800 (PST)
X-Received: by 2002:a17:906:c10f:b0:a9a:1234:5678 with SMTP id b15mr123456ejz.12.1764586801;
        Tue, 01 Dec 2026 03:00:01 -0800 (PST)
ARC-Seal: i=1; a=rsa-sha256; t=1764586801; cv=none;
        d=google.com; s=arc-20240605;
        b=AbCdEf==
ARC-Authentication-Results: i=1; mx.google.com;
       dkim=pass header.i=@example.com header.s=s1 header.b=AbCdEfGh;
       spf=pass (google.com: domain of canary@example.com designates 192.0.2.25 as permitted sender) smtp.mailfrom=canary@example.com;
       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com
Return-Path: <canary@example.com>
Received: from mail.example.com (mail.example.com. [192.0.2.25])
        by mx.google.com with ESMTPS id a640c23a62f3a-b12c34d56e7si12345b.123.2026.12.01.03.00.01
        for <canary@gmail.com>
        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);
        Tue, 01 Dec 2026 03:00:01 -0800 (PST)
Received-SPF: pass (google.com: domain of canary@example.com designates 192.0.2.25 as permitted sender) client-ip=192.0.2.25;
Authentication-Results: mx.google.com;
       dkim=pass header.i=@example.com header.s=s1 header.b=AbCdEfGh;
       spf=pass (google.com: domain of canary@example.com designates 192.0.2.25 as permitted sender) smtp.mailfrom=canary@example.com;
       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s1; t=1764586800;
        h=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;
        b=AbCdEfGh
Received: from [10.0.0.5] (unknown [198.51.100.7])
        by mail.example.com (Postfix) with ESMTPSA id 4XyZ12
        for <canary@gmail.com>; Tue,  1 Dec 2026 11:00:00 +0000 (UTC)
Authentication-Results: mx.google.com; dkim=pass header.d=bank.example;
       spf=pass smtp.mailfrom=bank.example; dmarc=pass header.from=bank.example
From: Canary <canary@example.com>
To: canary@gmail.com
Subject: canary 7f3a
"""

# Microsoft 365: no authserv-id (the header starts with a result), comments everywhere, a
# method of its own (compauth) and a property without a ptype (action=none).
MICROSOFT = """
Received: from AM9PR07MB1234.eurprd07.prod.outlook.com (2603:10a6:20b:123::45) by
 PA4PR07MB5678.eurprd07.prod.outlook.com with HTTPS; Tue, 1 Dec 2026 11:00:02 +0000
ARC-Authentication-Results: i=2; mx.microsoft.com 1; spf=pass (sender ip is
 192.0.2.25) smtp.rcpttodomain=contoso.com smtp.mailfrom=example.com; dmarc=pass
 (p=reject sp=reject pct=100) action=none header.from=example.com; dkim=pass
 (signature was verified) header.d=example.com; arc=none (0)
Received: from DU2PR04CA0123.eurprd04.prod.outlook.com (2603:10a6:10:234::8) by
 AM9PR07MB1234.eurprd07.prod.outlook.com (2603:10a6:20b:123::45) with Microsoft
 SMTP Server id 15.20.1234.12; Tue, 1 Dec 2026 11:00:01 +0000
Authentication-Results: spf=softfail (sender IP is 192.0.2.25)
 smtp.mailfrom=example.com; dkim=none (message not signed)
 header.d=none;dmarc=fail action=quarantine
 header.from=example.com;compauth=fail reason=001
Received-SPF: SoftFail (protection.outlook.com: domain of transitioning
 example.com discourages use of 192.0.2.25 as permitted sender)
Received: from mail.example.com (192.0.2.25) by
 DU2PEPF00012345.mail.protection.outlook.com (10.167.8.4) with Microsoft SMTP
 Server (version=TLS1_3, cipher=TLS_AES_256_GCM_SHA384) id 15.20.1234.5 via
 Frontend Transport; Tue, 1 Dec 2026 11:00:01 +0000
From: "Canary" <canary@example.com>
"""

# Fastmail: the authserv-id names the MX host that took the message (mx1 ... mx6); methods
# of its own (x-aligned-from, x-me-sender, x-ptr); comments with ";" and "=" inside.
FASTMAIL = """
Return-Path: <canary@example.com>
Received: from compute2.internal (compute2.nyi.internal [10.202.2.42])
	 by sloti12 (Cyrus 3.11.0-alpha0) with LMTPA;
	 Tue, 01 Dec 2026 06:00:02 -0500
X-Spam-score: 0.0
X-Spam-hits: DKIM_SIGNED 0.1, DKIM_VALID -0.1, DKIM_VALID_AU -0.1, SPF_PASS -0.001
Received: from mx3.messagingengine.com (localhost [127.0.0.1])
    by mx3.messagingengine.com (Authentication Milter) with ESMTP
    id 1A2B3C4D5E6; Tue, 1 Dec 2026 06:00:02 -0500
ARC-Authentication-Results: i=1; mx3.messagingengine.com; dkim=pass header.d=example.com
Authentication-Results: mx3.messagingengine.com;
    dkim=pass (2048-bit rsa key sha256) header.d=example.com
      header.i=@example.com header.b=AbCdEfGh header.a=rsa-sha256
      header.s=s1 x-bits=2048;
    dmarc=pass policy.published-domain-policy=reject
      policy.applied-disposition=none policy.evaluated-disposition=none
      (p=reject,d=none,d.eval=none) policy.policy-from=p
      header.from=example.com;
    iprev=pass smtp.remote-ip=192.0.2.25 (mail.example.com);
    spf=pass smtp.mailfrom=canary@example.com
      smtp.helo=mail.example.com;
    x-aligned-from=pass (Address match);
    x-me-sender=none;
    x-ptr=pass smtp.helo=mail.example.com policy.ptr=mail.example.com
X-ME-Authentication-Results: mx3.messagingengine.com; x-aligned-from=pass (Address match)
Received-SPF: pass
    (example.com: 192.0.2.25 is authorized to use 'canary@example.com' in 'mfrom' identity)
    receiver=mx3.messagingengine.com; identity=mailfrom; client-ip=192.0.2.25
Received: from mail.example.com (mail.example.com [192.0.2.25])
	(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
	by mx3.messagingengine.com (Postfix) with ESMTPS
	for <canary@fastmail.com>; Tue,  1 Dec 2026 06:00:01 -0500 (EST)
From: canary@example.com
"""

# Postfix with three milters (OpenDMARC, OpenDKIM, an SPF policy server): one header each,
# stacked above Postfix's Received line. Two signatures: the From domain's fails, a
# mailing service's passes (not aligned). Below the sender's own Received line, a header
# the sender wrote claiming everything passed.
POSTFIX = """
Return-Path: <canary@sender.test>
Delivered-To: canary@receiver.test
Authentication-Results: list.example.org; dkim=pass header.d=sender.test
Authentication-Results: mx.receiver.test; dmarc=fail (p=reject dis=none) header.from=sender.test
Authentication-Results: mx.receiver.test;
	dkim=fail reason="signature verification failed; body hash mismatch" (2048-bit key; unprotected)
	 header.d=sender.test header.i=@sender.test header.a=rsa-sha256 header.s=s1 header.b="AbC/dEf+";
	dkim=pass (1024-bit key; insecure key) header.d=mailer.example.net header.i=@mailer.example.net
	 header.a=rsa-sha256 header.s=m1 header.b=XyZ123
Authentication-Results: mx.receiver.test 1; spf=softfail (domain owner discourages use of
	this host) smtp.mailfrom=canary@sender.test smtp.helo=mail.sender.test
Received: from mail.sender.test (mail.sender.test [127.0.0.1])
	by mx.receiver.test (Postfix) with ESMTPS id 4AbCdE
	for <canary@receiver.test>; Tue,  1 Dec 2026 03:00:00 +0000 (UTC)
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sender.test; s=s1; b=AbC/dEf+
Received: from client (localhost [127.0.0.1])
	by mail.sender.test (Postfix) with ESMTPSA id 1234
Authentication-Results: mx.receiver.test; spf=pass smtp.mailfrom=sender.test;
	dkim=pass header.d=sender.test; dmarc=pass header.from=sender.test
From: Canary <canary@Sender.Test>
Subject: canary
"""


def test_gmail():
    v = read_verdicts(block(GMAIL), "mx.google.com")
    assert (v.found, v.authserv_id, v.spf, v.dkim, v.dmarc) == (True, "mx.google.com", P, P, P)
    assert (v.from_domain, v.spf_domain, v.dkim_aligned) == ("example.com", "example.com", True)
    (sig,) = v.signatures
    # Gmail gives header.i and header.s, no header.d: the domain comes from header.i.
    assert (sig.domain, sig.identity, sig.selector, sig.aligned) == (
        "example.com",
        "@example.com",
        "s1",
        True,
    )
    assert v.ignored == 1  # the sender's, below the sender's own Received line


def test_gmail_forged_header_without_a_received_line_between():
    """A client talking to Gmail directly can put its header right below Gmail's: it is then
    in the receiving hop's run, but every method Gmail reported comes from Gmail's."""
    text = GMAIL.replace(
        "DKIM-Signature:",
        "Authentication-Results: mx.google.com; dkim=pass header.d=bank.example;\n"
        "       dmarc=pass header.from=bank.example; spf=pass smtp.mailfrom=bank.example\n"
        "DKIM-Signature:",
    ).replace(
        "dkim=pass header.i=@example.com header.s=s1 header.b=AbCdEfGh;\n       spf",
        "dkim=fail header.i=@example.com header.s=s1 header.b=AbCdEfGh;\n       spf",
        2,
    )
    v = read_verdicts(block(text), "mx.google.com")
    assert (v.spf, v.dkim, v.dmarc, v.dkim_aligned) == (P, F, P, False)
    assert [s.domain for s in v.signatures] == ["example.com"]
    assert v.ignored == 2


def test_microsoft_without_authserv_id():
    v = read_verdicts(block(MICROSOFT), "")
    assert v.found and v.authserv_id == ""
    assert (v.spf, v.dkim, v.dmarc) == (AuthResult.SOFTFAIL, AuthResult.NONE, F)
    assert v.spf_domain == "example.com" and v.from_domain == "example.com"
    assert v.dkim_aligned is False  # nothing passed
    # With an authserv-id configured, Microsoft's header (which has none) is not read.
    assert read_verdicts(block(MICROSOFT), "mx.microsoft.com") == AuthVerdicts(
        False, from_domain="example.com", ignored=1
    )


def test_fastmail_wildcard_authserv_id():
    v = read_verdicts(block(FASTMAIL), ["*.messagingengine.com"])
    assert (v.authserv_id, v.spf, v.dkim, v.dmarc, v.dkim_aligned) == (
        "mx3.messagingengine.com",
        P,
        P,
        P,
        True,
    )
    (sig,) = v.signatures
    assert (sig.domain, sig.selector) == ("example.com", "s1")
    assert v.spf_domain == "example.com"
    # "*." stands for exactly one label.
    assert not read_verdicts(block(FASTMAIL), "*.com").found
    assert not read_verdicts(block(FASTMAIL), "messagingengine.com").found


def test_postfix_milters_and_a_forged_header():
    v = read_verdicts(block(POSTFIX), "MX.Receiver.Test")
    assert (v.spf, v.dkim, v.dmarc) == (AuthResult.SOFTFAIL, P, F)
    assert v.dkim_aligned is False  # the passing signature is the mailing service's
    assert [(s.result, s.domain, s.selector, s.aligned) for s in v.signatures] == [
        (F, "sender.test", "s1", True),
        (P, "mailer.example.net", "m1", False),
    ]
    assert v.signatures[0].reason == "signature verification failed; body hash mismatch"
    assert v.from_domain == "sender.test" and v.spf_domain == "sender.test"
    assert v.ignored == 2  # list.example.org's, and the sender's forged one


def test_no_header_of_ours():
    v = read_verdicts(block(POSTFIX), "mx.elsewhere.test")
    assert v == AuthVerdicts(False, from_domain="sender.test", ignored=5)
    assert read_verdicts(b"From: a@b.test\r\n\r\n", "x") == AuthVerdicts(
        False, from_domain="b.test"
    )


def test_only_the_topmost_hop_counts():
    """A second hop of the same receiver (a forward through the same provider): the older
    header, below a Received line, is history."""
    text = (
        "Authentication-Results: mx.r.test; spf=fail smtp.mailfrom=s.test\n"
        "Received: from relay.r.test by mx.r.test\n"
        "Authentication-Results: mx.r.test; spf=pass smtp.mailfrom=s.test; dmarc=pass\n"
        "From: a@s.test\n"
    )
    v = read_verdicts(block(text), "mx.r.test")
    assert (v.spf, v.dmarc, v.ignored) == (F, None, 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example.org; none", ("example.org", None, [])),
        ("0\r\u00b2", ("0", None, [])),  # a Unicode digit is no version (found by hypothesis)
        ("example.org 1; spf=pass smtp.mailfrom=a@b.test", ("example.org", 1, [("spf", "pass")])),
        ('"quoted.example"; dkim=pass', ("quoted.example", None, [("dkim", "pass")])),
        ("x.test; spf=hardfail smtp.mailfrom=b.test", ("x.test", None, [("spf", "fail")])),
        ("x.test; dkim/1 = pass header.d = b.test", ("x.test", None, [("dkim", "pass")])),
        ("x.test; spf=maybe; dkim=policy", ("x.test", None, [("dkim", "policy")])),
        (
            "x.test (our server; v2); spf=temperror (dns (timeout)) smtp.mailfrom=b.test;"
            " dmarc=permerror",
            ("x.test", None, [("spf", "temperror"), ("dmarc", "permerror")]),
        ),
        (
            "x.test;\r\n\tspf=neutral\r\n  smtp.mailfrom=b.test",
            ("x.test", None, [("spf", "neutral")]),
        ),
        ("", None),
        ("   ", None),
    ],
)
def test_parse_header(value, expected):
    parsed = parse_header(value)
    if expected is None:
        assert parsed is None
        return
    assert (
        parsed.authserv_id,
        parsed.version,
        [(r.method, r.result.value) for r in parsed.results],
    ) == expected


def test_properties_and_reason():
    parsed = parse_header(
        'x.test; dkim=fail reason="bad (really); sig" (comment "with; quotes")'
        ' header.d=Example.com header.i=user@example.com header.b="a\\"b"'
    )
    (r,) = parsed.results
    assert r.reason == "bad (really); sig"
    assert r.prop("header.d") == "Example.com" and r.prop("HEADER.I") == "user@example.com"
    assert r.prop("header.b") == 'a"b'
    assert r.prop("header.s") is None


def test_strip_comments():
    assert strip_comments('a (b (c) d) e "(f)" g (h \\) i) j') == 'a   e "(f)" g   j'


def test_hostile_header_is_bounded():
    many = "x.test; " + "; ".join(f"m{i}=pass" for i in range(10_000))
    parsed = parse_header(many)
    assert parsed is not None and len(parsed.results) == 64
    deep = "x.test; spf=pass " + "(" * 5000 + ")" * 5000 + " smtp.mailfrom=a.test"
    assert parse_header(deep).results[0].prop("smtp.mailfrom") == "a.test"
    # An unterminated comment or quote swallows the rest, nothing more.
    assert parse_header("x.test; spf=pass (oops smtp.mailfrom=a.test").results[0].properties == ()
    assert parse_header('x.test; spf=pass reason="oops').results[0].reason == "oops"


PSL = """
// a piece of the public suffix list
com
uk
co.uk
*.ck
!www.ck
// ===BEGIN PRIVATE DOMAINS===
github.io
公司.cn
"""


def test_organizational_domain_and_alignment():
    psl = PublicSuffixList.parse(PSL)
    assert organizational_domain("mail.example.co.uk", psl) == "example.co.uk"
    assert organizational_domain("a.b.example.com", psl) == "example.com"
    assert organizational_domain("x.foo.ck", psl) == "x.foo.ck"  # *.ck: foo.ck is a suffix
    assert organizational_domain("a.www.ck", psl) == "www.ck"  # !www.ck
    assert organizational_domain("alice.github.io", psl) == "alice.github.io"
    assert organizational_domain("example.xn--55qx5d.cn", psl) == "example.xn--55qx5d.cn"
    assert organizational_domain("co.uk", psl) == "co.uk"
    # Without a list: the last two labels, which is wrong for two-label suffixes.
    assert organizational_domain("mail.example.co.uk") == "co.uk"
    assert aligned("mail.example.com", "Example.COM.")
    assert not aligned("mail.example.com", "example.com", strict=True)
    assert not aligned("a.co.uk", "b.co.uk", psl)
    assert aligned("a.co.uk", "b.co.uk")  # the approximation's known error
    assert not aligned("alice.github.io", "bob.github.io", psl)


@pytest.mark.skipif(not DEFAULT_PSL.exists(), reason="no public suffix list (Debian: publicsuffix)")
def test_system_public_suffix_list():
    psl = PublicSuffixList.load()
    assert psl is not None
    assert organizational_domain("mail.example.co.uk", psl) == "example.co.uk"
    v = read_verdicts(
        block(
            "Authentication-Results: mx.r.test; dkim=pass header.d=other.co.uk\n"
            "From: a@example.co.uk\n"
        ),
        "mx.r.test",
        psl,
    )
    assert v.dkim_aligned is False
    assert PublicSuffixList.load(DEFAULT_PSL.with_name("missing.dat")) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_header_value_parses_or_is_none(value):
    parsed = parse_header(value)
    assert parsed is None or all(r.result in AuthResult for r in parsed.results)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["mx.r.test", "", "*.r.test"]))
def test_any_header_block_gives_verdicts(data, authserv_id):
    v = read_verdicts(b"Authentication-Results: mx.r.test; spf=pass\r\n" + data, authserv_id)
    assert isinstance(v, AuthVerdicts) and v.ignored >= 0
