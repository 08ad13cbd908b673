"""The SMTP client the probe, the send library and the mail-domain checks share, on the
protocol-neutral ``exporter.net`` (resolver, connection, TLS facts, SASL).

``transport``: the SMTP connection (``net.Connection`` with the reply reader and the rule
for unasked replies); ``reply``: the bounded, sans-IO reply reader; ``esmtp``: the EHLO
capability parser; ``tlsscan``: one handshake per TLS version and key (posture);
``session``: the phase state machine (connect, greeting, EHLO, STARTTLS, AUTH, NOOP, QUIT)
that ties them together.
"""
