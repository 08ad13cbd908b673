"""Organizational domains from the public suffix list, and DMARC identifier alignment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Debian's publicsuffix package puts the list here.
DEFAULT_PSL = Path("/usr/share/publicsuffix/public_suffix_list.dat")


@dataclass(frozen=True, slots=True)
class PublicSuffixList:
    """The rules of the public suffix list (publicsuffix.org), for organizational domains
    (DMARC, RFC 7489 §3.2)."""

    rules: frozenset[str]
    wildcards: frozenset[str]  # "ck" for the rule "*.ck"
    exceptions: frozenset[str]  # "www.ck" for the rule "!www.ck"

    @classmethod
    def parse(cls, text: str) -> PublicSuffixList:
        rules, wildcards, exceptions = set(), set(), set()
        for line in text.splitlines():
            rule = line.strip().split(" ", 1)[0].lower()
            if not rule or rule.startswith("//"):
                continue
            try:
                rule = ".".join(
                    label.encode("idna").decode("ascii") if not label.isascii() else label
                    for label in rule.split(".")
                )
            except UnicodeError:
                continue
            if rule.startswith("!"):
                exceptions.add(rule[1:])
            elif rule.startswith("*."):
                wildcards.add(rule[2:])
            else:
                rules.add(rule)
        return cls(frozenset(rules), frozenset(wildcards), frozenset(exceptions))

    @classmethod
    def load(cls, path: Path = DEFAULT_PSL) -> PublicSuffixList | None:
        """The list at ``path``, or None when it cannot be read."""
        try:
            return cls.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None

    def public_suffix(self, domain: str) -> str:
        labels = domain.split(".")
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            if candidate in self.exceptions:
                return ".".join(labels[i + 1 :])
            if candidate in self.rules or ".".join(labels[i + 1 :]) in self.wildcards:
                return candidate
        return labels[-1]  # the default rule "*"


def organizational_domain(domain: str, psl: PublicSuffixList | None = None) -> str:
    """The public suffix plus one label; without a list, the last two labels (wrong for
    ``example.co.uk``, whose suffix has two labels)."""
    domain = domain.rstrip(".").lower()
    labels = domain.split(".")
    suffix_labels = len(psl.public_suffix(domain).split(".")) if psl is not None else 1
    return ".".join(labels[-(suffix_labels + 1) :]) if len(labels) > suffix_labels else domain


def aligned(a: str, b: str, psl: PublicSuffixList | None = None, *, strict: bool = False) -> bool:
    """DMARC identifier alignment (RFC 7489 §3.1): equal domains (strict), or equal
    organizational domains (relaxed)."""
    a, b = a.rstrip(".").lower(), b.rstrip(".").lower()
    if strict or a == b:
        return a == b
    return organizational_domain(a, psl) == organizational_domain(b, psl)
