"""The /metrics renderer: blocks rendered at record time, shards joined into one gzip member."""

from __future__ import annotations

import gzip
import subprocess
import zlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import gzipjoin
from exporter.config import Module, Target, TLSMode
from exporter.metrics import PER_TARGET, SHARD_SIZE, Renderer
from exporter.results import Failure, FailureKind, Phase, PhaseTiming, ProbeResult
from exporter.store import ResultStore


# No per-example deadline: a loaded machine (CI beside other work) is not a failure here.
@settings(deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_crc32_combine_matches_zlib(a: bytes, b: bytes) -> None:
    assert gzipjoin.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@given(st.lists(st.binary(max_size=2000), max_size=12))
def test_joined_pieces_are_one_gzip_member_of_their_concatenation(texts: list[bytes]) -> None:
    body = b"".join(gzipjoin.join([gzipjoin.deflate(t) for t in texts]))
    # zlib with wbits 31 reads exactly one member and reports anything after it as unused.
    d = zlib.decompressobj(31)
    assert d.decompress(body) == b"".join(texts)
    assert d.eof and d.unused_data == b""


def _module(name: str = "m") -> Module:
    return Module(name=name, tls=TLSMode.NONE, timeout=2.0)


def _targets(n: int, module: Module | None = None) -> list[Target]:
    module = module or _module()
    return [Target(f"host{i}.test:25", f"host{i}.test", 25, module) for i in range(n)]


def _result(t: Target, *, ok: bool = True, started: float = 1_700_000_000.0) -> ProbeResult:
    return ProbeResult(
        target=t.name,
        module=t.module.name,
        host=t.host,
        port=t.port,
        started_at=started,
        duration_seconds=0.25,
        phases=(PhaseTiming(Phase.CONNECT, 0.125),),
        failure=None if ok else Failure(Phase.GREETING, FailureKind.TIMEOUT, "slow"),
    )


def _samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[s.labels["target"]] = s.value
    return out


def test_results_recorded_between_scrapes_appear_and_removed_targets_vanish() -> None:
    store = ResultStore()
    renderer = Renderer(store)
    targets = _targets(3 * SHARD_SIZE + 7)  # several shards, the last one partial
    store.set_targets(targets)
    first = renderer.render()
    assert _samples(first, "smtp_probe_success") == {}  # no result yet
    assert len(_samples(first, "smtp_probes_total")) == len(targets)

    for t in targets:
        store.record(t, _result(t))
    down = targets[5]
    store.record(down, _result(down, ok=False))
    text = renderer.render()
    success = _samples(text, "smtp_probe_success")
    assert len(success) == len(targets)
    assert success[down.name] == 0
    assert sum(success.values()) == len(targets) - 1
    assert _samples(text, "smtp_probes_total")[down.name] == 2

    # A later result for one target changes that target only.
    store.record(down, _result(down))
    assert sum(_samples(renderer.render(), "smtp_probe_success").values()) == len(targets)

    store.set_targets(targets[:10])
    assert set(_samples(renderer.render(), "smtp_probe_success")) == {t.name for t in targets[:10]}


def test_every_family_appears_once_with_all_its_samples_together() -> None:
    store = ResultStore()
    renderer = Renderer(store)
    targets = _targets(SHARD_SIZE + 1)
    store.set_targets(targets)
    for t in targets:
        store.record(t, _result(t))
    text = renderer.render()
    names: list[str] = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.append(line.split()[2])
    assert names[: len(PER_TARGET)] == [s.name for s in PER_TARGET]
    assert len(names) == len(set(names))
    # The text format wants a family's samples in one group: no name reappears after
    # another family has started.
    seen: list[str] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{")[0].split(" ")[0]
        if not seen or seen[-1] != name:
            assert name not in seen, f"{name} split into two groups"
            seen.append(name)


def test_a_changed_module_re_renders_carried_entries() -> None:
    store = ResultStore()
    renderer = Renderer(store)
    (t,) = _targets(1)
    store.set_targets([t])
    store.record(t, _result(t))
    assert _samples(renderer.render(), "smtp_probe_success") == {t.name: 1}
    changed = replace(t, module=replace(t.module, timeout=3.0))
    store.set_targets([changed])  # same key, new definition: result dropped, counters kept
    text = renderer.render()
    assert _samples(text, "smtp_probe_success") == {}
    assert _samples(text, "smtp_probes_total") == {t.name: 1}


def test_values_are_written_as_the_text_format_reads_them() -> None:
    store = ResultStore()
    renderer = Renderer(store)
    (t,) = _targets(1)
    store.set_targets([t])
    store.record(t, _result(t, started=1_764_151_113.123456))
    text = renderer.render()
    assert f'smtp_probe_timestamp_seconds{{target="{t.name}",module="m"}} 1764151113.123456\n' in (
        text
    )
    assert f'smtp_probe_duration_seconds{{target="{t.name}",module="m"}} 0.25\n' in text
    assert f'smtp_probes_total{{target="{t.name}",module="m"}} 1\n' in text


@pytest.mark.parametrize("gzip_only", [True, False])
def test_curl_and_python_read_the_compressed_scrape(exporter_with_targets, gzip_only) -> None:
    """curl and browsers decode only a single gzip member: the answer must be one."""
    url = exporter_with_targets
    plain = subprocess.run(
        ["curl", "-sS", "--max-time", "10", url], capture_output=True, check=True
    ).stdout
    args = ["curl", "-sS", "--max-time", "10", "--compressed", url]
    if not gzip_only:
        args[1:1] = ["-H", "Accept-Encoding: identity"]
    decoded = subprocess.run(args, capture_output=True, check=True).stdout
    raw = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-H", "Accept-Encoding: gzip", url],
        capture_output=True,
        check=True,
    ).stdout
    if gzip_only:
        assert raw[:2] == b"\x1f\x8b"
        assert gzip.decompress(raw).startswith(b"# HELP smtp_probe_success ")
    families = {f.name for f in text_string_to_metric_families(decoded.decode())}
    assert families == {f.name for f in text_string_to_metric_families(plain.decode())}
    assert "smtp_probe_success" in families and "smtp_exporter_build_info" in families


@pytest.fixture
def exporter_with_targets(tmp_path, smtp_server):
    from tests.exporter_harness import RunningExporter, wait_for

    server = smtp_server(tls="none")
    config = tmp_path / "config.yml"
    # 300 targets on one server (a target is address + module): more than one shard.
    lines = ["modules:"] + [f"  m{i}: {{tls: none, timeout: 2s}}" for i in range(300)]
    lines += ["targets:"] + [
        f"  - {{target: '127.0.0.1:{server.port}', module: m{i}, interval: 2s}}" for i in range(300)
    ]
    config.write_text("\n".join(lines) + "\n")
    exporter = RunningExporter(config).start()
    try:
        assert wait_for(lambda: exporter.get("/metrics")[1].count("smtp_probe_success{") >= 300)
        yield exporter.url + "/metrics"
    finally:
        exporter.stop()


def test_tls_scan_series() -> None:
    from exporter.results import Posture, TLSScan

    store = ResultStore()
    renderer = Renderer(store)
    (t,) = _targets(1)
    store.set_targets([t])
    scan = TLSScan(
        tested=("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"),
        accepted=("TLSv1", "TLSv1.2"),
        ciphers=(("TLSv1", "AES256-SHA"), ("TLSv1.2", "AES256-GCM-SHA384")),
        key_type="RSA",
        key_bits=1024,
        signature_algorithm="sha1WithRSAEncryption",
        signature_hash="sha1",
        ocsp_stapled=None,
    )
    store.record(t, replace(_result(t), posture=Posture(tls_scan=scan)))
    text = renderer.render()
    base = f'target="{t.name}",module="m"'
    for line in (
        f'smtp_posture_tls_version_accepted{{{base},version="TLSv1"}} 1',
        f'smtp_posture_tls_version_accepted{{{base},version="TLSv1.1"}} 0',
        f'smtp_posture_tls_version_accepted{{{base},version="TLSv1.3"}} 0',
        f"smtp_posture_tls_forward_secrecy{{{base}}} 0",  # RSA key exchange at TLS 1.2
        f'smtp_posture_tls_key_size{{{base},key_type="RSA"}} 1024',
        f"smtp_posture_tls_weak_signature{{{base}}} 1",
        f"smtp_posture_tls_findings{{{base}}} 3",  # TLSv1, RSA 1024, SHA-1
    ):
        assert line + "\n" in text, line
    assert "smtp_posture_tls_ocsp_stapled{" not in text  # not observable: no series
