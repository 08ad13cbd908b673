"""The IMAP client (RFC 9051 / 3501): ``reader`` (sans-IO, bounded), ``session`` (the
probe's phase state machine, ``IMAPSession``) and ``mailbox`` (the operations the canary
runs once logged in). Beside smtp/, on net/; it imports neither smtp/ nor pop3/."""
