"""RSA keys that are weak whatever their size: a public exponent that is even or outside
65537..2^256-1 (CA/Browser Forum Baseline Requirements 6.1.6), and the known generation flaws that
badkeys (Hanno Böck's library) finds from the public key alone (BR 6.1.1.3 names ROCA and close
primes; Let's Encrypt's goodkey checks those and small factors too). Its blocklists (Debian's 2008 OpenSSL keys and published private keys) need data downloaded
from badkeys.info, which an air-gapped CA cannot fetch; they are not used."""

from __future__ import annotations

import functools

from badkeys import checkrsa

MIN_EXPONENT = 65537
MAX_EXPONENT = 2**256 - 1

# badkeys check -> what it means for the operator (the rest of the sentence "The CSR's RSA key ...").
FLAWS = {
    "roca": "comes from a vulnerable Infineon chip or library (ROCA, CVE-2017-15361): its private key can "
            "be computed from the public key. Update the device's firmware, then generate a new key",
    "fermat": "has two primes so close together that Fermat's method factors it (CVE-2022-26320). "
              "Generate a new key with up-to-date software",
    "smallfactors": "has a small prime factor, so it is corrupt. Generate a new key",
    "smalld": "has a private exponent small enough to be computed from the public key (Wiener's attack). "
              "Generate a new key with standard software",
    "rsapoly": "has a modulus with a pattern of zero bytes that lets it be factored. Generate a new key "
               "with up-to-date software",
    "rsainvalid": "has an invalid public exponent. Generate a new key",
}


@functools.lru_cache(maxsize=1024)  # a renewal often reuses its key: ~0.3 ms saved per hit
def rsa_key_flaws(n: int, e: int) -> tuple[str, ...]:
    """Sentences (without their subject) for each weakness of the RSA public key (n, e); empty when
    none is known."""
    flaws = []
    if e % 2 == 0 or not MIN_EXPONENT <= e <= MAX_EXPONENT:
        flaws.append(f"has the public exponent {e if e < 10**6 else hex(e)[:20] + '...'}; a certificate's "
                     f"RSA key needs an odd exponent of at least {MIN_EXPONENT}. Generate a new key with "
                     "the usual exponent 65537")
    found = checkrsa(n, e=e, checks=list(FLAWS))
    flaws += [FLAWS[name] for name in FLAWS if name in found]
    return tuple(flaws)
