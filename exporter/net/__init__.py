"""Networking every protocol client shares: the system resolver in bounded lanes
(``resolve``), a connection generic over a sans-IO reader with TLS over memory BIOs
(``connection``), what a TLS handshake says (``tls``) and the SASL encoders (``sasl``).

The SMTP, IMAP and POP3 clients are built on it and know nothing of each other.
"""
