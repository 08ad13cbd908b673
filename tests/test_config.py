"""Configuration: good files load, bad ones are refused with file + key path + expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import config
from exporter.config import TLSMode
from exporter.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GOOD = """
defaults: {module: sub, interval: 30s, timeout: 5s}
modules:
  sub:
    tls: starttls
    auth: {username: u, password_env: PW}
  smtps: {tls: implicit, timeout: 2s}
  plain: {tls: none, port: 2525}
targets:
  - target: mail.example.com
  - target: "[2001:db8::1]:465"
    module: smtps
    interval: 1m30s
    labels: {site: fra, tier: 1}
  - {target: 192.0.2.1, module: plain}
"""


def parse(text: str, env: dict[str, str] | None = None) -> config.Config:
    return config.parse(text, file="t.yml", env={"PW": "pw"} if env is None else env)


def test_good_config_loads_with_defaults():
    cfg = parse(GOOD)
    a, b, c = cfg.targets
    assert (a.host, a.port, a.module.name, a.interval, a.module.timeout) == (
        "mail.example.com",
        587,
        "sub",
        30.0,
        5.0,
    )
    assert a.module.auth is not None and a.module.auth.password.reveal() == "pw"
    assert (b.host, b.port, b.interval, b.module.tls, b.module.timeout) == (
        "2001:db8::1",
        465,
        90.0,
        TLSMode.IMPLICIT,
        2.0,
    )
    assert b.labels == (("site", "fra"), ("tier", "1"))
    assert (c.host, c.port) == ("192.0.2.1", 2525)


def test_domain_checks_defaults_and_own_domain_of_mx_targets():
    cfg = parse(
        """
modules:
  m: {domain: {}}
  n:
    domain:
      name: Example.COM.
      interval: 2h
      records: false
      mta_sts: true
      dane: true
      dnsbl: [zen.example.org, zen.example.org., b.example]
      smtp_port: 2525
      mta_sts_port: 8443
      dkim_selectors: [S1, s2.brand, s1]
      reverse_dns: true
      sending_addresses: [192.0.2.10, "2001:DB8::1"]
targets:
  - {target: "mx:Mail.Test", module: m}
  - {target: smtp.other.test, module: n}
"""
    )
    a, b = cfg.targets
    assert a.module.domain == config.DomainChecks()
    assert (a.module.domain.interval, a.module.domain.records, a.module.domain.dnsbl) == (
        3600.0,
        True,
        (),
    )
    assert a.mail_domain == "mail.test"
    assert b.module.domain == config.DomainChecks(
        name="example.com",
        interval=7200.0,
        records=False,
        mta_sts=True,
        dane=True,
        dnsbl=("zen.example.org", "b.example"),
        smtp_port=2525,
        mta_sts_port=8443,
        dkim_selectors=("s1", "s2.brand"),
        reverse_dns=True,
        sending_addresses=("192.0.2.10", "2001:db8::1"),
    )
    assert b.mail_domain == "example.com"
    assert (
        config.parse("modules: {m: {}}\ntargets: [{target: a, module: m}]").targets[0].mail_domain
        is None
    )


def test_secret_is_masked_everywhere():
    cfg = parse(GOOD, env={"PW": "hunter2-secret"})
    auth = cfg.targets[0].module.auth
    assert auth is not None
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(auth.password)


BAD = [
    (
        "modules: {m: {tls: starttls}}\ntargets: [{target: a, module: submision}]",
        "targets[0].module: unknown module 'submision'",
    ),
    (
        "modules: {submission: {}}\ntargets: [{target: a, module: submision}]",
        "did you mean 'submission'?",
    ),
    ("modules: {m: {tsl: none}}", "modules.m.tsl: unknown key (did you mean 'tls'?)"),
    ("modules: {m: {tls: startls}}", "modules.m.tls: expected one of none, starttls, implicit"),
    ("modules: {m: {port: yes}}", "modules.m.port: expected int, got boolean"),
    ("modules: {m: {port: 70000}}", "modules.m.port: expected 1-65535"),
    ("modules: {m: {timeout: 10}}", "modules.m.timeout: expected a duration like '30s'"),
    ("modules: {m: {timeout: 10 seconds}}", "modules.m.timeout: invalid duration '10 seconds'"),
    ("modules: {m: {timeout: 0s}}", "modules.m.timeout: must be greater than zero"),
    ("modules: {m: {tls_verify: 'no'}}", "modules.m.tls_verify: expected bool, got string"),
    (
        "modules: {m: {tls_ca_file: /nonexistent/ca.pem}}",
        "modules.m.tls_ca_file: file '/nonexistent/ca.pem' does not exist",
    ),
    ("modules: {m: {ehlo_name: 'a b'}}", "modules.m.ehlo_name: not a valid host name"),
    (
        "modules: {m: {auth: {username: u}}}",
        "modules.m.auth: set exactly one of password_file, password_env",
    ),
    (
        "modules: {m: {auth: {username: u, password_env: NOPE}}}",
        "modules.m.auth.password_env: environment variable 'NOPE' is not set or empty",
    ),
    (
        "modules: {m: {auth: {username: u, password_file: /nonexistent/pw}}}",
        "modules.m.auth.password_file: no such file (value not shown)",
    ),
    (
        "modules: {m: {auth: {username: u, password_env: PW, mechanism: NTLM}}}",
        "modules.m.auth.mechanism: expected one or a list of auto, PLAIN, LOGIN",
    ),
    (
        "modules: {m: {}}\ntargets: [{target: 'a:99999', module: m}]",
        "targets[0].target: invalid port '99999'",
    ),
    ("modules: {m: {}}\ntargets: [{module: m}]", "targets[0].target: required"),
    ("modules: {m: {}}\ntargets: [{target: a}]", "targets[0].module: required"),
    (
        "modules: {m: {}}\ntargets: [{target: a, module: m, interval: 5s}]",
        "targets[0].interval: 5s is shorter than module 'm' timeout 10s",
    ),
    (
        "modules: {m: {}}\ntargets: [{target: a, module: m}, {target: a, module: m}]",
        "targets[1].target: duplicate target 'a'",
    ),
    (
        "modules: {m: {}}\ntargets: [{target: a, module: m, labels: {target: x}}]",
        "targets[0].labels.target: reserved label name",
    ),
    (
        "modules: {m: {}}\ntargets: [{target: a, module: m, labels: {'1x': x}}]",
        "targets[0].labels.1x: invalid label name",
    ),
    ("modules: {m: {}}\ntargets: {target: a}", "targets: expected a list, got mapping"),
    ("defaults: {module: nope}\nmodules: {m: {}}", "defaults.module: unknown module 'nope'"),
    ("modulez: {}", "modulez: unknown key (did you mean 'modules'?)"),
    (
        "modules: {m: {domain: {nmae: a.test}}}",
        "modules.m.domain.nmae: unknown key (did you mean 'name'?)",
    ),
    ("modules: {m: {domain: {name: 'a b'}}}", "modules.m.domain.name: expected a domain name"),
    ("modules: {m: {domain: {name: 192.0.2.1}}}", "modules.m.domain.name: expected a domain"),
    (
        "modules: {m: {domain: {interval: 30s}}}",
        "modules.m.domain.interval: 30s is shorter than the minimum 1m",
    ),
    ("modules: {m: {domain: {dane: 'yes'}}}", "modules.m.domain.dane: expected bool, got string"),
    (
        "modules: {m: {domain: {dnsbl: zen.example.org}}}",
        "modules.m.domain.dnsbl: expected a list of DNS zones, got string",
    ),
    (
        "modules: {m: {domain: {dnsbl: [ok.example, 'bad zone']}}}",
        "modules.m.domain.dnsbl[1]: expected a DNS zone, got 'bad zone'",
    ),
    ("modules: {m: {domain: {smtp_port: 0}}}", "modules.m.domain.smtp_port: expected 1-65535"),
    (
        "modules: {m: {domain: {dkim_selectors: s1}}}",
        "modules.m.domain.dkim_selectors: expected a list, got string",
    ),
    (
        "modules: {m: {domain: {dkim_selectors: [ok, 'a b', .x]}}}",
        "modules.m.domain.dkim_selectors[1]: expected a DKIM selector, got 'a b'",
    ),
    (
        "modules: {m: {domain: {dkim_selectors: [" + ", ".join(f"s{i}" for i in range(21)) + "]}}}",
        "modules.m.domain.dkim_selectors: 21 selectors; at most 20",
    ),
    (
        "modules: {m: {domain: {sending_addresses: [192.0.2.1, mail.example.com]}}}",
        "modules.m.domain.sending_addresses[1]: expected an IP address, got 'mail.example.com'",
    ),
    (
        "modules: {m: {domain: {reverse_dns: 1}}}",
        "modules.m.domain.reverse_dns: expected bool, got int",
    ),
    (
        "modules: {m: {domain: {mta_sts_port: '443'}}}",
        "modules.m.domain.mta_sts_port: expected int, got string",
    ),
    (
        "modules: {m: {domain: {tls_ca_file: /nonexistent/ca.pem}}}",
        "modules.m.domain.tls_ca_file: file '/nonexistent/ca.pem' does not exist",
    ),
    ("modules: {m: {domain: true}}", "modules.m.domain: expected a mapping, got boolean"),
    (
        "modules: {m: {domain: {dane: true}}}\ntargets: [{target: mx.a.test, module: m}]",
        "targets[0].target: module 'm' has domain: without name",
    ),
    ("", "config file is empty"),
    ("modules: [a", "invalid YAML: line 1"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e for _, e in BAD])
def test_bad_config_names_file_and_key(text, expected):
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert expected in message
    assert message.startswith("t.yml: ")


def test_every_error_reported_at_once():
    with pytest.raises(ConfigError) as info:
        parse("modules: {m: {tls: x, port: 0}}\ntargets: [{target: a, module: q}]")
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith("t.yml: ") for line in lines)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yml: cannot read config file"):
        config.load(tmp_path / "nope.yml")


def test_password_file_relative_to_config_and_newline_stripped(tmp_path):
    (tmp_path / "pw").write_text("secret\n")
    path = tmp_path / "c.yml"
    path.write_text("modules: {m: {auth: {username: u, password_file: pw}}}\n")
    cfg = config.load(path)
    auth = cfg.modules["m"].auth
    assert auth is not None and auth.password.reveal() == "secret"


def test_example_configs_validate(monkeypatch):
    monkeypatch.setenv("SMTPS_PASSWORD", "x")
    for path in sorted((ROOT / "config").glob("*.yml")):
        cfg = config.load(path)
        assert cfg.targets, path


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("1d", 86400)],
)
def test_durations(text, seconds):
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "m5", "1.5.5s", "-5s", " 5s"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        config.parse_duration(text)


# --- hostile input (issue #14) ------------------------------------------------------------


def _alias_bomb(where: str = "defaults:\n  interval:\n") -> str:
    """Nine levels of nine aliases: ~450 bytes that expand to 387 million nodes."""
    seq = ["    - &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    seq += [f"    - &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return where + "\n".join(seq) + "\n"


def test_alias_bomb_refused_with_key_path():
    text = _alias_bomb()
    assert len(text) < 700
    with pytest.raises(ConfigError) as exc:
        parse(text)
    message = str(exc.value)
    assert message.startswith("t.yml: ")
    assert "defaults.interval[" in message and "would expand the file by more than" in message
    assert len(message) < 300  # the expanded value is never rendered


def test_ordinary_anchors_and_merge_keys_still_load():
    cfg = parse("""
modules:
  base: &base {tls: none, timeout: 3s}
  a: {<<: *base, port: 2525}
  b: *base
targets:
  - {target: h1, module: a}
  - {target: h2, module: b}
""")
    assert cfg.modules["a"].port == 2525 and cfg.modules["a"].timeout == 3.0
    assert cfg.modules["b"].tls is TLSMode.NONE


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_nesting_refused(depth):
    with pytest.raises(ConfigError, match=r"targets\[0\].*nested deeper than 64 levels"):
        parse("targets: " + "[" * depth + "]" * depth + "\n")


def test_deep_nesting_exits_2_from_config_check(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "deep.yml"
    path.write_text("targets: " + "[" * 100_000 + "]" * 100_000 + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check", "--config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-500:]
    assert "nested deeper than 64 levels" in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "modules: {m: {}}\ntargets: []\ntargets: [{target: a, module: m}]\n",
            "targets: duplicate",
        ),
        ("modules:\n  m: {tls: none}\n  m: {tls: implicit}\n", "modules.m: duplicate key"),
        ("modules:\n  m:\n    tls: none\n    port: 25\n    tls: implicit\n", "modules.m.tls: dup"),
    ],
)
def test_duplicate_keys_refused_with_key_path(text, expected):
    with pytest.raises(ConfigError, match=expected):
        parse(text)


def test_secret_typed_as_password_file_is_never_shown(tmp_path):
    with pytest.raises(ConfigError) as exc:
        config.parse(
            "modules: {m: {auth: {username: u, password_file: hunter2}}}",
            file=str(tmp_path / "c.yml"),
        )
    assert "password_file: no such file (value not shown)" in str(exc.value)
    assert "hunter2" not in str(exc.value)


def test_password_file_fifo_refused_without_hanging(tmp_path):
    import os
    import threading

    fifo = tmp_path / "pw"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            parse(f"modules: {{m: {{auth: {{username: u, password_file: {fifo}}}}}}}")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader of the old code, then fail
        with open(fifo, "w") as unblock:
            unblock.write("x")
        pytest.fail("loading a FIFO as password_file hung")
    assert isinstance(outcome[0], ConfigError)
    assert "password_file: not a regular file (value not shown)" in str(outcome[0])
    with pytest.raises(ConfigError, match="password_file: not a regular file"):
        parse(f"modules: {{m: {{auth: {{username: u, password_file: {tmp_path}}}}}}}")


def test_password_file_byte_order_mark_is_not_part_of_the_secret(tmp_path):
    (tmp_path / "pw").write_bytes(b"\xef\xbb\xbfs3cret\r\n")
    cfg = parse(f"modules: {{m: {{auth: {{username: u, password_file: {tmp_path / 'pw'}}}}}}}")
    auth = cfg.modules["m"].auth
    assert auth is not None and auth.password.reveal() == "s3cret"


def test_probe_allow_parsed_and_validated():
    cfg = parse("""
modules:
  m:
    auth: {username: u, password_env: PW}
    probe_allow: {hosts: ["*.Example.com", "mx1.example.net:587", "192.0.2.7"],
                  networks: [10.0.0.0/8, "2001:db8::/32"]}
""")
    allow = cfg.modules["m"].probe_allow
    assert allow is not None and cfg.modules["m"].carries_credentials
    assert allow.host_allowed("smtp.example.com", 25)
    assert not allow.host_allowed("a.b.example.com", 25)  # one label, as in certificates
    assert not allow.host_allowed("example.com", 25)
    assert allow.host_allowed("mx1.example.net", 587)
    assert not allow.host_allowed("mx1.example.net", 25)
    assert allow.address_allowed("10.1.2.3") and allow.address_allowed("2001:db8::5")
    assert not allow.address_allowed("127.0.0.1")
    with pytest.raises(ConfigError) as exc:
        parse("modules: {m: {probe_allow: {hosts: [a b], networks: [10.0.0.0/33, 7], net: 1}}}")
    message = str(exc.value)
    assert "modules.m.probe_allow.net: unknown key" in message
    assert "modules.m.probe_allow.hosts[0]:" in message
    assert "modules.m.probe_allow.networks[0]: expected a network like 10.0.0.0/8" in message
    assert "modules.m.probe_allow.networks[1]: expected a string, got integer" in message
