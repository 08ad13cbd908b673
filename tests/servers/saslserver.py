"""aiosmtpd handler with the server side of CRAM-MD5, SCRAM-SHA-256 and XOAUTH2, and
named faults for the SCRAM exchange, to test the probe's SASL clients."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

from aiosmtpd.smtp import SMTP, AuthResult, auth_mechanism

from exporter.embedded import RecordingHandler

ITERATIONS = 4096


class SASLHandler(RecordingHandler):
    """Accepts ``users`` (password, or OAuth2 token for XOAUTH2). ``scram_fault``: None,
    "bad_signature", "huge_iterations", "foreign_nonce", "skip_final", "error"."""

    def __init__(
        self,
        users: dict[str, str],
        tokens: dict[str, str] | None = None,
        scram_fault: str | None = None,
    ) -> None:
        super().__init__()
        self.users = users
        self.tokens = tokens or {}
        self.scram_fault = scram_fault

    @auth_mechanism("CRAM-MD5")
    async def auth_CRAM_MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        challenge = f"<{secrets.token_hex(8)}@sasl.test>".encode()
        answer = await server.challenge_auth(challenge)
        if not isinstance(answer, bytes):
            return AuthResult(success=False, handled=True)
        user, _, digest = answer.decode().partition(" ")
        password = self.users.get(user)
        expected = (
            hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
            if password is not None
            else ""
        )
        return AuthResult(
            success=bool(password) and hmac.compare_digest(digest, expected), handled=False
        )

    @auth_mechanism("XOAUTH2")
    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        fields = dict(
            part.split("=", 1)
            for part in base64.b64decode(args[1]).decode().split("\x01")
            if "=" in part
        )
        token = fields.get("auth", "").removeprefix("Bearer ")
        if self.tokens.get(fields.get("user", "")) == token:
            return AuthResult(success=True, handled=False)
        # Google's way: a JSON error as a 334 challenge, then 535 after the empty reply.
        error = json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail"})
        await server.challenge_auth(error)
        return AuthResult(success=False, handled=False)

    @auth_mechanism("SCRAM-SHA-256")
    async def auth_SCRAM_SHA_256(self, server: SMTP, args: list[str]) -> AuthResult:
        first = base64.b64decode(args[1]).decode()
        bare = first.removeprefix("n,,")
        attrs = dict(p.split("=", 1) for p in bare.split(","))
        user, client_nonce = attrs["n"], attrs["r"]
        password = self.users.get(user, "")
        salt = secrets.token_bytes(16)
        nonce = (
            "someone-else" if self.scram_fault == "foreign_nonce" else client_nonce
        ) + secrets.token_hex(8)
        iterations = 10**9 if self.scram_fault == "huge_iterations" else ITERATIONS
        server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        answer = await server.challenge_auth(server_first)
        if not isinstance(answer, bytes):
            return AuthResult(success=False, handled=True)
        final = answer.decode()
        without_proof, _, proof_text = final.rpartition(",p=")
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        stored = hashlib.sha256(client_key).digest()
        auth_message = f"{bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored, auth_message, "sha256").digest()
        proof = base64.b64decode(proof_text)
        recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
        if hashlib.sha256(recovered).digest() != stored:
            return AuthResult(success=False, handled=False)
        if self.scram_fault == "skip_final":
            return AuthResult(success=True, handled=False)
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        server_signature = hmac.new(server_key, auth_message, "sha256").digest()
        if self.scram_fault == "bad_signature":
            server_signature = bytes(32)
        reply = (
            "e=other-error"
            if self.scram_fault == "error"
            else f"v={base64.b64encode(server_signature).decode()}"
        )
        await server.challenge_auth(reply)
        return AuthResult(success=True, handled=False)
