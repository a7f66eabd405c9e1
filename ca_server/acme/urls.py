"""Every ACME URL, from [server] base_url: what the directory lists and objects link to, and what
a request's JWS `url` must equal (RFC 8555 6.4)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AcmeUrls:
    base_url: str

    @property
    def root(self) -> str:
        return self.base_url + "/acme"

    @property
    def directory(self) -> str:
        return self.root + "/directory"

    @property
    def new_nonce(self) -> str:
        return self.root + "/new-nonce"

    @property
    def new_account(self) -> str:
        return self.root + "/new-account"

    @property
    def new_order(self) -> str:
        return self.root + "/new-order"

    @property
    def revoke_cert(self) -> str:
        return self.root + "/revoke-cert"

    @property
    def key_change(self) -> str:
        return self.root + "/key-change"

    @property
    def renewal_info(self) -> str:
        return self.root + "/renewal-info"

    @property
    def accounts(self) -> str:
        return self.root + "/acct"

    def account(self, account_id: str) -> str:
        return f"{self.accounts}/{account_id}"

    def orders(self, account_id: str) -> str:
        return f"{self.accounts}/{account_id}/orders"

    def order(self, order_id: str) -> str:
        return f"{self.root}/order/{order_id}"

    def finalize(self, order_id: str) -> str:
        return f"{self.root}/order/{order_id}/finalize"

    def authz(self, authz_id: str) -> str:
        return f"{self.root}/authz/{authz_id}"

    def challenge(self, challenge_id: str) -> str:
        return f"{self.root}/chall/{challenge_id}"

    def certificate(self, serial: str) -> str:
        return f"{self.root}/cert/{serial}"
