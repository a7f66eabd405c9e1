"""Identities from outside: the company's directory and CI systems (issue 28)."""
