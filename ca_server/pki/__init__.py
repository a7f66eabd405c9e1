"""Pure X.509 work with pyca/cryptography: keys, names, extensions and profiles, the CA hierarchy,
serials. Nothing here knows about Flask, click, the store or the clock."""
