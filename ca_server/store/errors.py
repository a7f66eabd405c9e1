"""Database errors the queries catch, in both backends' classes."""

from __future__ import annotations

import sqlite3

import psycopg

# A UNIQUE, PRIMARY KEY or FOREIGN KEY constraint refused a write.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)


def violates(exc: BaseException, table: str, column: str) -> bool:
    """Whether `exc` is a uniqueness violation on table.column (SQLite names the column,
    PostgreSQL the constraint: the primary key or TABLE_COLUMN_key)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return f"{table}.{column}" in str(exc)
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return exc.diag.constraint_name in (f"{table}_pkey", f"{table}_{column}_key")
    return False
