"""Issue #19 without servers: the canary's routes, headers, authserv_id and Junk folders in
the config; the LIST answers that name the Junk folder; the store's history per route; the
series a canary with and without verdicts renders (a check that did not run has none)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import config
from exporter.config import CanaryRoute
from exporter.errors import ConfigError
from exporter.imap.folders import Listed, junk_of, parse_list, utf7_decode
from exporter.imap.reader import Kind, Response
from exporter.imap.session import utf7_encode
from exporter.metrics.samples import render_probe
from exporter.results import CanaryResult, Placement
from exporter.results.verdicts import AuthResult, AuthVerdicts, DKIMSignature
from exporter.store import ResultStore

BASE = """
modules:
  m:
    canary:
{canary}
targets:
  - {{target: mx.example.com, module: m}}
"""
IMAP = "{host: imap.example.com, username: u, password_env: PW}"


def parse(canary: str) -> config.Config:
    return config.parse(BASE.format(canary=canary), file="c.yml", env={"PW": "secret"})


def errors(canary: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(canary)
    return str(info.value).splitlines()


# --------------------------------------------------------------------------- config


def test_single_form_is_one_route_named_default() -> None:
    cfg = parse(
        f"""      from: a@example.com
      to: canary@example.net
      authserv_id: MX.Example.NET.
      imap: {IMAP}"""
    )
    canary = cfg.modules["m"].canary
    assert canary is not None and canary.routes == ()
    (route,) = canary.all_routes
    assert route == CanaryRoute("default", "canary@example.net", canary.imap, "mx.example.net")
    assert canary.imap is not None and canary.imap.junk_folders is None  # found by LIST
    assert canary.imap.mechanisms == ("auto",)


def test_routes_each_with_recipient_mailbox_and_authserv_id() -> None:
    cfg = parse(
        f"""      from: a@example.com
      headers: {{X-Deliverability-Test: junk}}
      routes:
        - {{name: gmail, to: x@gmail.com, authserv_id: mx.google.com, imap: {IMAP}}}
        - {{name: m365, to: y@example.onmicrosoft.com, authserv_id: "", imap: {IMAP}}}
        - {{name: fastmail, to: z@fastmail.com, authserv_id: "*.messagingengine.com"}}"""
    )
    canary = cfg.modules["m"].canary
    assert canary is not None and canary.recipient == "" and canary.imap is None
    assert [(r.name, r.recipient, r.authserv_id) for r in canary.all_routes] == [
        ("gmail", "x@gmail.com", "mx.google.com"),
        ("m365", "y@example.onmicrosoft.com", ""),
        ("fastmail", "z@fastmail.com", "*.messagingengine.com"),
    ]
    assert canary.all_routes[2].imap is None
    assert canary.headers == (("X-Deliverability-Test", "junk"),)


def test_imap_junk_folders_and_mechanism() -> None:
    cfg = parse(
        """      from: a@example.com
      to: b@example.com
      imap: {host: h, username: u, password_env: PW, junk_folders: [Spam, INBOX, Spam],
             mechanism: [XOAUTH2, PLAIN]}"""
    )
    imap = cfg.modules["m"].canary.imap  # type: ignore[union-attr]
    assert imap is not None
    assert imap.junk_folders == ("Spam",)  # the folder itself and repeats left out
    assert imap.mechanisms == ("XOAUTH2", "PLAIN")
    none = parse(
        """      from: a@example.com
      to: b@example.com
      imap: {host: h, username: u, password_env: PW, junk_folders: []}"""
    )
    assert none.modules["m"].canary.imap.junk_folders == ()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("canary", "expected"),
    [
        (
            "      from: a@b.c\n      to: d@e.f\n      routes: [{name: x, to: g@h.i}]",
            ["c.yml: modules.m.canary.to: not allowed beside routes: set it in each route"],
        ),
        (
            "      from: a@b.c\n      routes: []",
            [
                "c.yml: modules.m.canary.routes: expected a non-empty list of routes, "
                "got an empty list"
            ],
        ),
        (
            "      from: a@b.c\n      routes: [{name: X!, to: g@h.i}, {name: y, to: nope},"
            " {name: y, to: g@h.i}]",
            [
                "c.yml: modules.m.canary.routes[0].name: expected [a-z0-9_-]{1,32}, got 'X!'",
                "c.yml: modules.m.canary.routes[1].to: not a plain email address: 'nope'",
                "c.yml: modules.m.canary.routes[2].name: route 'y' is defined twice",
            ],
        ),
        (
            "      from: a@b.c\n      to: d@e.f\n      authserv_id: 'a b'\n"
            '      headers: {From: x, X-Ok: "a\\nb", "X Bad": v}',
            [
                "c.yml: modules.m.canary.authserv_id: not a host name: 'a b'",
                "c.yml: modules.m.canary.headers.From: set by the canary itself",
                "c.yml: modules.m.canary.headers.X-Ok: expected one line of text, "
                "at most 200 characters",
                "c.yml: modules.m.canary.headers.X Bad: not a header field name",
            ],
        ),
        (
            "      from: a@b.c\n      to: d@e.f\n"
            "      imap: {host: h, username: u, password_env: PW, mechanism: OAUTH,"
            " junk_folders: x}",
            [
                "c.yml: modules.m.canary.imap.junk_folders: expected a list of non-empty "
                "ASCII folder names",
                "c.yml: modules.m.canary.imap.mechanism: expected one or a list of auto, "
                "PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, XOAUTH2, got 'OAUTH'",
            ],
        ),
    ],
    ids=["to-beside-routes", "no-routes", "route-names", "headers-authserv", "imap-keys"],
)
def test_invalid_canary_config_names_every_problem(canary: str, expected: list[str]) -> None:
    assert errors(canary) == expected


# --------------------------------------------------------------------------- LIST


def listing(data: bytes, *literals: bytes) -> Response:
    return Response(Kind.UNTAGGED, "LIST", data=data, literals=literals)


@pytest.mark.parametrize(
    ("data", "literals", "expected"),
    [
        (
            rb'(\HasNoChildren \Junk) "." Junk',
            (),
            Listed("Junk", ".", frozenset({"\\hasnochildren", "\\junk"})),
        ),
        (
            rb'(\HasNoChildren \Junk) "/" "[Gmail]/Spam"',
            (),
            Listed("[Gmail]/Spam", "/", frozenset({"\\hasnochildren", "\\junk"})),
        ),
        (rb"() NIL INBOX", (), Listed("INBOX", None, frozenset())),
        (
            rb'(\Noselect) "/" {8}',
            (b"Archiv/x",),
            Listed("Archiv/x", "/", frozenset({"\\noselect"})),
        ),
        (rb'() "." "Entw&APw-rfe"', (), Listed("Entwürfe", ".", frozenset())),
        (rb'() "\\" "a\"b"', (), Listed('a"b', "\\", frozenset())),
    ],
    ids=["atom", "gmail", "nil-delimiter", "literal", "utf7", "escaped"],
)
def test_parse_list(data: bytes, literals: tuple[bytes, ...], expected: Listed) -> None:
    assert parse_list(listing(data, *literals)) == expected


def test_parse_list_refuses_what_is_not_a_mailbox() -> None:
    assert parse_list(Response(Kind.UNTAGGED, "LSUB", data=b'() "." Junk')) is None
    assert parse_list(listing(b"garbage")) is None
    assert parse_list(listing(b'() "." {4}')) is None  # literal announced, none given
    assert parse_list(listing(b'() "." "&Jjo"')) is None  # unterminated UTF-7


@pytest.mark.parametrize("name", ["INBOX", "Entwürfe", "a&b", "日本語", "Spam & Co"])
def test_utf7_roundtrip(name: str) -> None:
    assert utf7_decode(utf7_encode(name)) == name


def test_junk_by_attribute_first_then_by_name() -> None:
    def box(name: str, *attrs: str) -> Listed:
        return Listed(name, "/", frozenset(attrs))

    marked = [box("INBOX"), box("Spam"), box("[Gmail]/Spam", "\\junk"), box("Bulk", "\\junk")]
    assert junk_of(marked, "INBOX") == ["[Gmail]/Spam", "Bulk"]
    named = [box("INBOX"), box("Archive/Junk"), box("Junk E-mail"), box("Spam", "\\noselect")]
    assert junk_of(named, "INBOX") == ["Archive/Junk", "Junk E-mail"]
    assert junk_of([box("Junk", "\\junk")], "Junk") == []  # the configured folder itself
    many = [box(f"x{i}/Junk") for i in range(5)]
    assert len(junk_of(many, "INBOX")) == 3


# --------------------------------------------------------------------------- store, series


def two_route_target() -> config.Target:
    cfg = parse(
        f"""      from: a@example.com
      routes:
        - {{name: gmail, to: x@gmail.com, authserv_id: mx.google.com, imap: {IMAP}}}
        - {{name: plain, to: y@example.net, imap: {IMAP}}}"""
    )
    return cfg.targets[0]


def canary(route: str, **kw: object) -> CanaryResult:
    base: dict[str, object] = {
        "checked": True,
        "delivered": True,
        "delivered_at": 2.0,
        "round_trip_seconds": 1.5,
        "placement": Placement.INBOX,
        "folder": "INBOX",
    }
    return CanaryResult("t", 1.0, True, 0.1, route=route, **(base | kw))  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (
            s.name,
            frozenset((k, v) for k, v in s.labels.items() if k not in ("target", "module")),
        ): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_store_keeps_each_routes_history_and_renders_it_labelled() -> None:
    target = two_route_target()
    store = ResultStore()
    store.set_targets([target])
    verdicts = AuthVerdicts(
        True, "mx.google.com", AuthResult.PASS, AuthResult.FAIL, AuthResult.PASS, False
    )
    local = (DKIMSignature(AuthResult.FAIL, "example.com"),)
    store.record_canary(
        target,
        canary(
            "gmail",
            placement=Placement.JUNK,
            folder="[Gmail]/Spam",
            verdicts=verdicts,
            local_dkim=local,
        ),
        canary("plain"),
    )
    store.record_canary(
        target, canary("plain", delivered=False, placement=None, round_trip_seconds=None)
    )
    (entry,) = store.entries()
    assert [r.route for r in entry.routes] == ["gmail", "plain"]  # config order
    gmail, plain = entry.routes
    assert (gmail.round_trip_count, plain.round_trip_count) == (1, 1)
    assert plain.canary.delivered is False and plain.last_delivered == 2.0  # kept
    got = samples(render_probe([entry]))
    route = lambda name, **kw: frozenset({("route", name), *kw.items()})  # noqa: E731
    assert got[("smtp_canary_placement", route("gmail", placement="junk"))] == 1
    assert got[("smtp_canary_placement", route("gmail", placement="inbox"))] == 0
    assert got[("smtp_canary_auth_result", route("gmail", method="dkim", result="fail"))] == 1
    assert got[("smtp_canary_auth_result", route("gmail", method="spf", result="pass"))] == 1
    assert got[("smtp_canary_dkim_aligned", route("gmail"))] == 0
    assert got[("smtp_canary_auth_results_found", route("gmail"))] == 1
    assert got[("smtp_canary_local_dkim_result", route("gmail", result="fail"))] == 1
    assert got[("smtp_canary_local_dkim_aligned", route("gmail"))] == 0
    # Not delivered: both placements 0; no verdicts were read, so there are none.
    assert got[("smtp_canary_delivered", route("plain"))] == 0
    assert got[("smtp_canary_placement", route("plain", placement="inbox"))] == 0
    assert got[("smtp_canary_placement", route("plain", placement="junk"))] == 0
    names_plain = {n for n, labels in got if ("route", "plain") in labels}
    assert not names_plain & {
        "smtp_canary_auth_result",
        "smtp_canary_auth_results_found",
        "smtp_canary_dkim_aligned",
        "smtp_canary_local_dkim_result",
    }


def test_counters_of_every_route_exist_before_its_first_canary() -> None:
    from exporter.metrics.samples import render_target

    target = two_route_target()
    store = ResultStore()
    store.set_targets([target])
    (entry,) = store.entries()
    text = "".join(render_target(entry))
    labels = 'target="mx.example.com",module="m"'
    for route in ("gmail", "plain"):
        assert f'smtp_canary_swept_total{{{labels},route="{route}"}} 0' in text
        assert f'smtp_canary_round_trip_seconds_count{{{labels},route="{route}"}} 0' in text
    assert "smtp_canary_delivered" not in text  # no canary yet: no value


def test_a_removed_route_disappears() -> None:
    target = two_route_target()
    store = ResultStore()
    store.set_targets([target])
    store.record_canary(target, canary("gmail"), canary("gone"))
    (entry,) = store.entries()
    assert [r.route for r in entry.routes] == ["gmail"]


# --------------------------------------------------------------------------- the last poll


def test_deadline_on_a_later_poll_is_not_found_not_an_imap_failure() -> None:
    """The mailbox was searched (the canary was not there); the deadline then fell on a
    poll the server was slow to answer: "not delivered", not "mailbox unreadable"."""
    import asyncio

    from exporter.config.model import IMAPConfig, IMAPTLSMode, Secret
    from exporter.deadline import Deadline
    from exporter.imapcheck import find_and_delete

    from .servers.imapfault import IMAPFaultServer

    with IMAPFaultServer("search_tarpit_later", messages={7: "other"}) as server:
        cfg = IMAPConfig(
            "127.0.0.1",
            server.port,
            IMAPTLSMode.NONE,
            "canary",
            Secret("canary-pass"),
            poll_interval=0.1,
        )
        check = asyncio.run(find_and_delete(cfg, "tok", Deadline.after(1.5)))
    assert check.polls == 1 and not check.found, check
    assert check.failure is None and check.access_ok, check
    assert check.error == "not found within 1.5s", check
    with IMAPFaultServer("search_tarpit", messages={7: "other"}) as server:
        cfg = IMAPConfig(
            "127.0.0.1",
            server.port,
            IMAPTLSMode.NONE,
            "canary",
            Secret("canary-pass"),
            poll_interval=0.1,
        )
        never = asyncio.run(find_and_delete(cfg, "tok", Deadline.after(1.0)))
    assert never.failure is not None and never.failure.phase == "search", never  # never read
