"""What ``/probe`` may probe with a module that restricts it (credentials, or
``probe_allow``): the allow-list checks, before and after the MX lookup, and the resolution
of a host allowed by network, pinned to the address checked. The application decides when
they apply (a target not configured with the module) and answers a refusal."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from . import config
from .deadline import Deadline
from .errors import ProbeError
from .net.resolve import addresses
from .targets import static_expansion


async def allowed_concrete(
    mod: config.Module, target: config.Target, deadline: Deadline
) -> tuple[tuple[config.Target, ...] | None, str]:
    """The targets to probe for a host that is not configured with a module that
    restricts /probe, or None and why not. A host allowed by ``networks`` only is
    resolved here and probed at the address checked (a second lookup could answer
    differently: DNS rebinding), with the certificate still checked against the name."""
    allow = mod.probe_allow or config.ProbeAllow()
    if allow.host_allowed(target.host, target.port):
        return static_expansion(target), ""
    if not allow.networks:
        return None, "it is not a target configured with the module"
    if config.is_ip(target.host):
        if allow.address_allowed(target.host):
            return static_expansion(target), ""
        return None, f"{target.host} is not in probe_allow.networks"
    try:
        found = await asyncio.wait_for(
            addresses(target.host, target.port, mod.ip_protocol), deadline.remaining()
        )
    except (ProbeError, TimeoutError) as exc:
        detail = exc.detail if isinstance(exc, ProbeError) else "resolver timeout"
        return None, f"its address could not be checked against probe_allow.networks: {detail}"
    families = ("ip4", "ip6") if mod.ip_protocol == "both" else (mod.ip_protocol,)
    picked: list[tuple[str, str]] = []
    for family in families:
        wanted = [a for a in found if family == "auto" or _family(a) == family]
        if wanted:
            picked.append((family, wanted[0]))
    if not picked:
        return None, f"{target.host} has no address to check against probe_allow.networks"
    for _, address in picked:
        if not allow.address_allowed(address):
            return None, f"{target.host} resolves to {address}, not in probe_allow.networks"
    server_name = mod.tls_server_name or target.host
    out = []
    for family, address in picked:
        labels = target.labels
        if mod.ip_protocol == "both":
            labels = tuple(sorted(dict((*labels, ("ip_protocol", family))).items()))
        module = replace(
            mod,
            tls_server_name=server_name,
            ip_protocol=family if mod.ip_protocol == "both" else mod.ip_protocol,
        )
        out.append(replace(target, host=address, module=module, labels=labels))
    return tuple(out), ""


def mx_refusal(
    mod: config.Module, target: config.Target, concrete: tuple[config.Target, ...] | None
) -> str | None:
    """Why an mx: target may not be probed with ``mod`` (None: it may): its domain
    matches ``probe_allow.hosts``, or every MX host matches them or every address
    probed lies in ``probe_allow.networks``. ``concrete`` None: before the MX lookup,
    refuse only what no answer could make allowed."""
    allow = mod.probe_allow or config.ProbeAllow()
    if allow.host_allowed(target.host, target.port):
        return None
    if not allow.hosts and not allow.networks:
        return "it is not a target configured with the module"
    for c in concrete or ():
        mx_host = dict(c.labels).get("mx_host", target.host)
        if not (allow.host_allowed(mx_host, c.port) or allow.address_allowed(c.host)):
            return f"MX host {mx_host} ({c.host}) is not in probe_allow"
    return None


def _family(address: str) -> str:
    return "ip6" if ":" in address else "ip4"
