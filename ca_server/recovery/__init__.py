"""Nothing lost (issue 27): backups that restore (backup.py); the append-only issuance log comes
next beside it."""
