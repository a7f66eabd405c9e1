"""POST /api/v1/token/exchange (issue 28): a CI job's OIDC ID token (GitLab CI `id_tokens`,
GitHub Actions' token, any issuer that publishes a JWKS) becomes a short-lived API token limited
to the domains [[auth.jwt_issuers]] maps its issuer to, so pipelines get certificates without a
stored secret (what Vault's JWT auth and step-ca's OIDC provisioner do).

Checked with PyJWT: the signature against the issuer's published keys (fetched from jwks_url
and cached, refetched for an unknown key ID), an asymmetric algorithm, `iss` equal to a configured
issuer, `aud` containing its audience, `exp` in the future and `nbf`/`iat` not in it (30 s of clock
skew), and every configured claim equal to its value. Anything else is refused with what failed."""

from __future__ import annotations

import datetime as dt
import secrets
import ssl
import threading

import jwt

from ..accounts import create_token
from ..clock import to_text
from ..config import Config
from ..config.auth import JwtIssuer
from ..errors import AuthError, untrusted_certificate
from ..store import CaStore

ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
LEEWAY = dt.timedelta(seconds=30)
MAX_JWT_BYTES = 16_384

_clients: dict[tuple[str, str], jwt.PyJWKClient] = {}  # by (jwks_url, ca_file)
_clients_lock = threading.Lock()


class ExchangeRefused(AuthError):
    code = "token_exchange_refused"


def _jwks(issuer: JwtIssuer) -> jwt.PyJWKClient:
    with _clients_lock:
        client = _clients.get((issuer.jwks_url, issuer.ca_file))
        if client is None:
            context = ssl.create_default_context(cafile=issuer.ca_file) if issuer.ca_file else None
            client = _clients[issuer.jwks_url, issuer.ca_file] = jwt.PyJWKClient(
                issuer.jwks_url, cache_keys=True, lifespan=300, timeout=10, ssl_context=context)
        return client


def verify(config: Config, token: str) -> tuple[JwtIssuer, dict]:
    """The configured issuer and the claims of a JWT that passes every check."""
    if not isinstance(token, str) or not token or len(token) > MAX_JWT_BYTES:
        raise ExchangeRefused(f'Send {{"token": "<the CI job\'s ID token, a JWT>"}} (at most {MAX_JWT_BYTES} bytes).')
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise ExchangeRefused("The token is not a JWT (three base64url parts separated by dots).") from None
    issuer = config.auth.jwt_issuer(unverified.get("iss", "")) if isinstance(unverified.get("iss"), str) else None
    if issuer is None:
        raise ExchangeRefused(f"Tokens of the issuer {str(unverified.get('iss'))[:200]!r} are not accepted here; "
                              "an admin lists the accepted ones in [[auth.jwt_issuers]].")
    if header.get("alg") not in ALGORITHMS:
        raise ExchangeRefused(f"The token is signed with {str(header.get('alg'))[:20]!r}; accepted are "
                              f"{', '.join(ALGORITHMS)}.")
    try:
        key = _jwks(issuer).get_signing_key_from_jwt(token)
    except jwt.PyJWKClientConnectionError as exc:
        if untrusted_certificate(exc):
            raise ExchangeRefused(f"The keys of {issuer.issuer} could not be fetched from {issuer.jwks_url}: its TLS "
                                  "certificate is not trusted here; an admin sets ca_file of this "
                                  "[[auth.jwt_issuers]] to the CA certificate that signs it.") from None
        raise ExchangeRefused(f"The keys of {issuer.issuer} could not be fetched from {issuer.jwks_url} ({exc}); "
                              "try again later.") from None
    except jwt.PyJWKClientError:
        raise ExchangeRefused(f"The token's key (kid {str(header.get('kid'))[:80]!r}) is not among the keys "
                              f"{issuer.issuer} publishes at {issuer.jwks_url}.") from None
    fitting = [key.algorithm_name] if getattr(key, "algorithm_name", None) in ALGORITHMS else ALGORITHMS
    if header["alg"] not in fitting:
        raise ExchangeRefused(f"The token is signed with {header['alg']}, which does not fit the issuer's key "
                              f"{str(header.get('kid'))[:80]!r} ({', '.join(fitting)}).")
    try:
        claims = jwt.decode(token, key.key, algorithms=fitting, audience=issuer.audience, issuer=issuer.issuer,
                            leeway=LEEWAY, options={"require": ["exp", "iss", "aud"]})
    except jwt.ExpiredSignatureError:
        raise ExchangeRefused("The token has expired; the CI job gets a fresh one with each run.") from None
    except jwt.InvalidAudienceError:
        raise ExchangeRefused(f"The token is for another audience; this CA accepts {issuer.audience!r} from "
                              f"{issuer.issuer} (GitLab: id_tokens: ... aud:).") from None
    except jwt.InvalidSignatureError:
        raise ExchangeRefused(f"The token's signature does not verify with {issuer.issuer}'s keys: it was "
                              "changed or not signed by that issuer.") from None
    except jwt.ImmatureSignatureError:
        raise ExchangeRefused("The token is not valid yet (nbf or iat is in the future).") from None
    except (jwt.PyJWTError, TypeError, ValueError) as exc:  # a key PyJWT cannot use for this token: TypeError
        raise ExchangeRefused(f"The token was refused: {exc}.") from None
    for name, wanted in issuer.claims:
        if str(claims.get(name)) != wanted:
            raise ExchangeRefused(f"The token's claim {name} is {str(claims.get(name))[:200]!r}; tokens of "
                                  f"{issuer.issuer} are accepted only with {name} = {wanted!r}.")
    return issuer, claims


def exchange(config: Config, store: CaStore, token: str, now: dt.datetime,
             client: str | None = None) -> tuple[str, dt.datetime]:
    """A new API token for a JWT that passes `verify`, and when it expires: after the issuer's
    token_minutes, and never after the JWT itself."""
    try:
        issuer, claims = verify(config, token)
    except ExchangeRefused as exc:
        store.append_audit(at=now, action="token_exchange_refused", actor="jwt", client=client,
                           detail={"reason": exc.message[:300]})
        raise
    expires = now + dt.timedelta(minutes=issuer.token_minutes)
    expires = min(expires, dt.datetime.fromtimestamp(int(claims["exp"]), dt.UTC)).replace(microsecond=0)
    name = f"ci-{secrets.token_hex(8)}"  # who it is stands in the audit row: issuer and claims
    kept = {k: str(claims[k])[:200] for k in ("sub", *(c for c, _ in issuer.claims)) if k in claims}
    api_token = create_token(store, name, is_admin=False, domains=issuer.domains, allow_ip=False, now=now,
                             actor=f"jwt:{issuer.issuer}", expires_at=expires,
                             audit_detail={"exchanged": True, "issuer": issuer.issuer, "claims": kept,
                                           "expires_at": to_text(expires)})
    return api_token, expires
