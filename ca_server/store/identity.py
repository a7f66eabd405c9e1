"""Which CA a database belongs to: the first instance that opens it binds it to its root
certificate, and an instance with another root is refused (a node set up with `init` instead of
a copy of the first node's folder would otherwise sign into the same database with another CA)."""

from __future__ import annotations


class IdentityQueries:
    def bind_ca(self, root_sha256: str) -> str:
        """Bind the database to this root if unbound; the root it is bound to. Read first: every
        process start asks, and only the first ever writes."""
        row = self.db.execute("SELECT root_sha256 FROM ca_identity WHERE name = 'root'").fetchone()
        if row is not None:
            return row[0]
        with self.write() as db:
            db.execute("INSERT INTO ca_identity (name, root_sha256) VALUES ('root', ?) ON CONFLICT (name) DO NOTHING",
                       [root_sha256])
            return db.execute("SELECT root_sha256 FROM ca_identity WHERE name = 'root'").fetchone()[0]
