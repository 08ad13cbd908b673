"""Where each part of the stack lives inside its work directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The Dovecot instances by the certificate they present; short directory names because
# base_dir holds UNIX sockets (sun_path is 108 bytes).
DOVECOT_DIRS = {"good": "dovecot", "expired": "dc-exp", "wronghost": "dc-wrong"}


@dataclass(frozen=True)
class DovecotPaths:
    """Where one Dovecot instance lives: config, base_dir, state, log."""

    dir: Path
    log: Path

    @property
    def conf(self) -> Path:
        return self.dir / "dovecot.conf"

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def pidfile(self) -> Path:
        return self.run / "master.pid"


@dataclass(frozen=True)
class Layout:
    workdir: Path

    @property
    def ca_dir(self) -> Path:
        return self.workdir / "ca"

    @property
    def pf_etc(self) -> Path:
        return self.workdir / "postfix-etc"

    @property
    def pf_spool(self) -> Path:
        return self.workdir / "postfix-spool"

    @property
    def pf_data(self) -> Path:
        return self.workdir / "postfix-data"

    @property
    def pf_pidfile(self) -> Path:
        return self.pf_spool / "pid" / "master.pid"

    def dovecot(self, cert: str) -> DovecotPaths:
        """The Dovecot instance presenting certificate ``cert`` (good, expired, wronghost)."""
        log = "dovecot.log" if cert == "good" else f"dovecot-{cert}.log"
        return DovecotPaths(self.workdir / DOVECOT_DIRS[cert], self.log_dir / log)

    @property
    def dc_dir(self) -> Path:
        return self.workdir / "dovecot"

    @property
    def dc_conf(self) -> Path:
        return self.dc_dir / "dovecot.conf"

    @property
    def dc_run(self) -> Path:
        return self.dc_dir / "run"

    @property
    def dc_pidfile(self) -> Path:
        return self.dc_run / "master.pid"

    @property
    def sasl_socket(self) -> Path:
        return self.workdir / "sasl" / "auth"

    @property
    def mail_dir(self) -> Path:
        return self.workdir / "mail"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"
