"""ACME errors (RFC 8555 6.7): a type under urn:ietf:params:acme:error:, a sentence, a status."""

from __future__ import annotations

from ..errors import CAError

PREFIX = "urn:ietf:params:acme:error:"
ACCEPTED_ALGORITHMS = ("RS256", "ES256", "ES384", "ES512", "EdDSA")

# RFC 8555 6.7 type -> the HTTP status it is answered with.
STATUS = {
    "accountDoesNotExist": 400, "alreadyRevoked": 400, "badCSR": 400, "badNonce": 400,
    "badPublicKey": 400, "badRevocationReason": 400, "badSignatureAlgorithm": 400, "caa": 403,
    "compound": 400, "connection": 400, "dns": 400, "externalAccountRequired": 400,
    "incorrectResponse": 400, "invalidContact": 400, "malformed": 400, "orderNotReady": 403,
    "rateLimited": 429, "rejectedIdentifier": 400, "serverInternal": 500, "tls": 400,
    "unauthorized": 403, "unsupportedContact": 400, "unsupportedIdentifier": 400,
    "userActionRequired": 403, "alreadyReplaced": 409,
}


class AcmeProblem(CAError):
    """One ACME error. `kind` is the short type ("badNonce"); `headers` go on the response."""

    def __init__(self, kind: str, detail: str, *, status: int | None = None, subproblems: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code = f"acme_{kind}"
        self.kind = kind
        self.detail = detail
        self.status = status or STATUS.get(kind, 400)
        self.subproblems = subproblems or []
        self.headers = headers or {}

    def as_json(self) -> dict:
        body: dict = {"type": PREFIX + self.kind, "detail": self.detail, "status": self.status}
        if self.subproblems:
            body["subproblems"] = self.subproblems
        if self.kind == "badSignatureAlgorithm":  # RFC 8555 6.2: say which are accepted
            body["algorithms"] = list(ACCEPTED_ALGORITHMS)
        return body


def problem_dict(kind: str, detail: str, identifier: dict | None = None) -> dict:
    """A problem as stored on a challenge or an order, or listed as a subproblem."""
    body = {"type": PREFIX + kind, "detail": detail, "status": STATUS.get(kind, 400)}
    if identifier:
        body["identifier"] = identifier
    return body
