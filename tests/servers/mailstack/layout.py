"""Where each part of the stack lives inside its work directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
