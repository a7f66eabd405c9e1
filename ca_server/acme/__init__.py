"""ACME (RFC 8555): the protocol over the CA's domain, without Flask.

jws.py checks signed requests, nonces.py hands out and consumes nonces, problems.py names the
errors, accounts.py and orders.py hold the state machine, validation.py proves control of names
(http-01, dns-01, tls-alpn-01). web/acme.py maps the resources onto these; finalize calls the
same issuance pipeline as the API."""
