"""`make bench`: ca-server against the raw cryptography pipeline and cfssl, and at scale."""
