"""SCEP (RFC 8894): messages (CMS in and out), the RA, enrollment."""
