"""Pure SASL encoders for SMTP AUTH (RFC 4954). No I/O: they return what is sent and check
what comes back. PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), SCRAM-SHA-1 and
SCRAM-SHA-256 (RFC 5802, 7677; the server's signature is verified), XOAUTH2 (Google and
Microsoft 365 relays; the secret is the OAuth2 access token)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

# What "auto" tries, in order: mechanisms every server with a password database can do. The
# others need credentials stored in a form many servers lack, so a module names them.
AUTO = ("PLAIN", "LOGIN")
SUPPORTED = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2")
# A server picks the PBKDF2 iteration count; beyond this it could burn our CPU every probe.
MAX_SCRAM_ITERATIONS = 100_000
_SCRAM_HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


class SASLError(Exception):
    """The server's side of a SASL exchange does not hold up."""


def b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str, limit: int = 4096) -> bytes:
    """Decode a server challenge; bounded, strict."""
    if len(text) > limit:
        raise SASLError("challenge too long")
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SASLError("challenge is not base64") from exc


def plain(username: str, password: str, authzid: str = "") -> str:
    """RFC 4616 PLAIN initial response: authzid NUL authcid NUL passwd, base64-encoded."""
    return b64(f"{authzid}\0{username}\0{password}")


def cram_md5(username: str, password: str, challenge: bytes) -> str:
    """RFC 2195: username, a space, and the hex HMAC-MD5 of the challenge."""
    digest = hmac.new(password.encode("utf-8"), challenge, hashlib.md5).hexdigest()
    return b64(f"{username} {digest}")


def xoauth2(username: str, token: str) -> str:
    return b64(f"user={username}\x01auth=Bearer {token}\x01\x01")


def choose(offered: tuple[str, ...], wanted: tuple[str, ...]) -> str | None:
    """The first of ``wanted`` (``auto`` meaning PLAIN, then LOGIN) that the server offers
    and we speak; None when there is none."""
    candidates: list[str] = []
    for name in wanted:
        candidates += AUTO if name == "auto" else (name,)
    return next((m for m in candidates if m in offered and m in SUPPORTED), None)


class ScramClient:
    """One SCRAM exchange (no channel binding: "n,,"). ``nonce`` only for tests."""

    def __init__(
        self, mechanism: str, username: str, password: str, nonce: str | None = None
    ) -> None:
        self.hash = _SCRAM_HASHES[mechanism]
        self.username = username.replace("=", "=3D").replace(",", "=2C")
        self.password = password.encode("utf-8")
        self.nonce = nonce or secrets.token_urlsafe(24)
        self.client_first_bare = f"n={self.username},r={self.nonce}"
        self._server_signature: bytes | None = None

    def first(self) -> str:
        return "n,," + self.client_first_bare

    def final(self, server_first: str) -> str:
        """The client-final-message for the server-first-message (both unencoded)."""
        attrs = _attributes(server_first)
        nonce, salt_text, iterations_text = attrs.get("r"), attrs.get("s"), attrs.get("i")
        if not nonce or not salt_text or not iterations_text:
            raise SASLError("server-first-message lacks r, s or i")
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise SASLError("server nonce does not extend ours")
        if not iterations_text.isdigit() or not 0 < int(iterations_text) <= MAX_SCRAM_ITERATIONS:
            raise SASLError(f"iteration count {iterations_text[:12]!r} out of bounds")
        salt = unb64(salt_text)
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, salt, int(iterations_text))
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.client_first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, self.hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        self._server_signature = hmac.new(server_key, auth_message, self.hash).digest()
        return f"{without_proof},p={b64(proof)}"

    def verify(self, server_final: str) -> None:
        """Check the server-final-message: the server proves it knows the password too."""
        attrs = _attributes(server_final)
        if "e" in attrs:
            raise SASLError(f"server reported error {attrs['e'][:60]!r}")
        if self._server_signature is None or "v" not in attrs:
            raise SASLError("server-final-message lacks the server signature")
        if not hmac.compare_digest(unb64(attrs["v"]), self._server_signature):
            raise SASLError(
                "server signature does not match: not the server we share the password with"
            )


def _attributes(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(",")[:32]:
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            out.setdefault(key, value)
    return out
