"""The POP3 client the probe uses (RFC 1939, CAPA of RFC 2449, STLS of RFC 2595, AUTH of
RFC 5034), beside the SMTP client and on the same protocol-neutral networking.

``reader``: the bounded, sans-IO response reader (single-line, multi-line with dot-unstuffing,
SASL continuations); ``session``: the phase state machine (connect, greeting, CAPA, STLS,
CAPA again, USER/PASS or AUTH, STAT, QUIT).
"""
