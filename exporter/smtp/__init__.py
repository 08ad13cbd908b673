"""The SMTP client the probe, the send library and the mail-domain checks share.

``transport``: sockets and TLS under one deadline, the only place OS and SSL errors become
ours; ``reply``: the bounded, sans-IO reply reader; ``esmtp``: the EHLO capability parser;
``sasl``: pure AUTH encoders; ``tls``: what a finished handshake says (chain, expiry, names);
``tlsscan``: one handshake per TLS version and key (posture); ``session``: the phase state
machine (connect, greeting, EHLO, STARTTLS, AUTH, NOOP, QUIT) that ties them together.
"""
