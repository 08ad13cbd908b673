"""``SMTPConfig``: where and how to send, under the seed pipeline's names."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import AuthConfig, Module, Secret, Target, TLSMode


@dataclass(frozen=True)
class SMTPConfig:
    """Connection settings for the send library.

    ``use_ssl``: implicit TLS (port 465). ``use_tls``: STARTTLS, required (port 587). Both
    false: plaintext, and credentials are then refused unless ``allow_insecure_auth``.
    ``timeout`` bounds each step (connect-to-AUTH, each command, the message body) as a
    whole, not each socket read, so a server dripping bytes cannot stretch it.
    """

    host: str
    port: int = 587
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_ssl: bool = False
    use_tls: bool = True
    timeout: float = 30.0
    debug: bool = False
    # Extensions beyond the seed's fields.
    verify: bool = True
    ca_file: str | None = None
    server_name: str | None = None
    ehlo_name: str | None = None
    allow_insecure_auth: bool = False
    rate_limit: float | None = None  # messages per second in send_bulk / SMTPQueue
    max_messages_per_connection: int = 100

    def __post_init__(self) -> None:
        if self.use_ssl and self.use_tls:
            raise ValueError("use_ssl (implicit TLS) and use_tls (STARTTLS) exclude each other")
        if any(c in self.host for c in "\r\n\0 /") or not self.host:
            raise ValueError(f"invalid host {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}")
        if isinstance(self.timeout, bool) or not self.timeout > 0:
            raise ValueError("timeout must be a number of seconds > 0")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise ValueError("rate_limit must be > 0 messages per second")
        if self.max_messages_per_connection < 1:
            raise ValueError("max_messages_per_connection must be >= 1")

    @classmethod
    def ssl_465(cls, host: str, user: str | None, pw: str | None, **kw: object) -> SMTPConfig:
        """Implicit TLS on port 465."""
        return cls(host, 465, user, pw, use_ssl=True, use_tls=False, **kw)  # type: ignore[arg-type]

    @classmethod
    def starttls_587(cls, host: str, user: str | None, pw: str | None, **kw: object) -> SMTPConfig:
        """STARTTLS (required) on port 587."""
        return cls(host, 587, user, pw, use_ssl=False, use_tls=True, **kw)  # type: ignore[arg-type]

    def target(self) -> Target:
        """The probe engine's view of this config: the same connection code serves both."""
        tls = (
            TLSMode.IMPLICIT if self.use_ssl else TLSMode.STARTTLS if self.use_tls else TLSMode.NONE
        )
        auth = None
        if self.username is not None and self.password is not None:
            auth = AuthConfig(
                self.username, Secret(self.password), ("auto",), self.allow_insecure_auth
            )
        extra = {"ehlo_name": self.ehlo_name} if self.ehlo_name else {}
        module = Module(
            name="send",
            tls=tls,
            port=self.port,
            tls_required=True,
            tls_verify=self.verify,
            tls_ca_file=self.ca_file,
            tls_server_name=self.server_name,
            timeout=self.timeout,
            auth=auth,
            **extra,  # type: ignore[arg-type]
        )
        return Target(f"{self.host}:{self.port}", self.host, self.port, module)
