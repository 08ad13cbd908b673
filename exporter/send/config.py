"""``SMTPConfig``: where and how to send, under the seed pipeline's names."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import AuthConfig, Module, Secret, Target, TLSMode


@dataclass(frozen=True)
class SMTPConfig:
    """Connection settings for the send library, with the seed pipeline's fields in its
    order: ``SMTPConfig(host, port, username, password, use_ssl, use_tls, timeout, debug)``.

    ``username`` empty: no AUTH (``None`` is taken as empty). ``use_ssl``: implicit TLS
    (port 465). ``use_tls``: STARTTLS, required (port 587). Both false: plaintext, and
    credentials are then refused unless ``allow_insecure_auth``. ``timeout`` bounds each
    step (connect-to-AUTH, each command, the message body) as a whole, not each socket
    read, so a server dripping bytes cannot stretch it. ``debug`` as smtplib's debuglevel:
    1 prints the SMTP dialogue to stderr, 2 with timestamps, AUTH secrets shown as ``***``.

    ``envelope_sender``: the MAIL FROM address; ``None`` takes it from the message (Sender,
    else From), ``""`` asks for the null reverse-path ``MAIL FROM:<>``.
    """

    host: str
    port: int = 587
    username: str = ""
    password: str = field(default="", repr=False)
    use_ssl: bool = False
    use_tls: bool = True
    timeout: float = 15.0
    debug: int = 0
    # Extensions beyond the seed's fields.
    verify: bool = True
    ca_file: str | None = None
    server_name: str | None = None
    ehlo_name: str | None = None
    allow_insecure_auth: bool = False
    rate_limit: float | None = None  # messages per second in send_bulk / SMTPQueue
    max_messages_per_connection: int = 100
    envelope_sender: str | None = None

    def __post_init__(self) -> None:
        # The seed accepted None where it meant "no credentials"; keep that working.
        if self.username is None:
            object.__setattr__(self, "username", "")
        if self.password is None:
            object.__setattr__(self, "password", "")
        if self.use_ssl and self.use_tls:
            raise ValueError("use_ssl (implicit TLS) and use_tls (STARTTLS) exclude each other")
        if any(c in self.host for c in "\r\n\0 /") or not self.host:
            raise ValueError(f"invalid host {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"invalid port {self.port}")
        if isinstance(self.timeout, bool) or not self.timeout > 0:
            raise ValueError("timeout must be a number of seconds > 0")
        if not isinstance(self.debug, int) or self.debug < 0:
            raise ValueError("debug must be 0 (off), 1 (dialogue) or 2 (with timestamps)")
        if self.envelope_sender and any(c in self.envelope_sender for c in "\r\n<>"):
            raise ValueError(f"invalid envelope_sender {self.envelope_sender!r}")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise ValueError("rate_limit must be > 0 messages per second")
        if self.max_messages_per_connection < 1:
            raise ValueError("max_messages_per_connection must be >= 1")

    @classmethod
    def ssl_465(cls, host: str, username: str, password: str, **kw: object) -> SMTPConfig:
        """Implicit TLS on port 465; ``kw`` sets any other field (``port=`` included)."""
        kw.setdefault("port", 465)
        return cls(host, username=username, password=password, use_ssl=True, use_tls=False, **kw)  # type: ignore[arg-type]

    @classmethod
    def starttls_587(cls, host: str, username: str, password: str, **kw: object) -> SMTPConfig:
        """STARTTLS (required) on port 587; ``kw`` sets any other field (``port=`` included)."""
        kw.setdefault("port", 587)
        return cls(host, username=username, password=password, use_ssl=False, use_tls=True, **kw)  # type: ignore[arg-type]

    @property
    def sender_address(self) -> str | None:
        """``username`` when it is an address: the From a message without one is sent with
        (submission servers usually require From to match the login)."""
        local, _, domain = self.username.rpartition("@")
        if local and domain and not any(c.isspace() or c in "<>," for c in self.username):
            return self.username
        return None

    def target(self) -> Target:
        """The probe engine's view of this config: the same connection code serves both."""
        tls = (
            TLSMode.IMPLICIT if self.use_ssl else TLSMode.STARTTLS if self.use_tls else TLSMode.NONE
        )
        auth = None
        if self.username:
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
