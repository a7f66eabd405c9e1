"""The SQL spellings that differ between the two engines, named once. Query modules write
`self.dialect.<spelling>` where SQLite and PostgreSQL disagree; everything else is the SQL both
speak. The PostgreSQL backend then only changes the placeholder style (`?` and `:name` to
psycopg's `%s` and `%(name)s`)."""

from __future__ import annotations


class Dialect:
    """SQLite's spellings (the embedded default); PostgresDialect overrides each."""
    name = "sqlite"
    # SQLite's LIKE ignores ASCII case, as names are compared.
    like = "LIKE"
    # Rows read by rowid only: keep SQLite's planner off the indexes.
    no_index = " NOT INDEXED"

    def index(self, name: str) -> str:
        """Read through index `name` (SQLite's planner needs the hint on a large store)."""
        return f" INDEXED BY {name}"

    def values(self) -> str:
        """A table of one column `value`: the elements of the JSON array passed as the parameter."""
        return "json_each(?)"

    def array_at(self, column: str, key: str, alias: str) -> str:
        """A table `alias` of one column `value`: the elements of the JSON array at `key` of the
        JSON object in `column`."""
        return f"json_each({column}, '$.{key}') {alias}"

    def field(self, column: str, key: str) -> str:
        """The text at `key` of the JSON object in `column`."""
        return f"json_extract({column}, '$.{key}')"


class PostgresDialect(Dialect):
    """PostgreSQL's spellings of the same."""
    name = "postgresql"
    like = "ILIKE"
    no_index = ""  # PostgreSQL's planner chooses by statistics; it has no hints

    def index(self, name: str) -> str:
        return ""

    def values(self) -> str:
        return "json_array_elements_text(?::json)"

    def array_at(self, column: str, key: str, alias: str) -> str:
        return f"json_array_elements_text({column}::json->'{key}') AS {alias}(value)"

    def field(self, column: str, key: str) -> str:
        return f"({column}::json->>'{key}')"


SQLITE = Dialect()
POSTGRESQL = PostgresDialect()
