"""Schema as sqlite-utils migrations: append new functions, never edit applied ones."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("ca_server")


@migrations()
def m001_certificates(db: Database) -> None:
    # Serials are hex TEXT: 159-bit serials do not fit SQLite's 64-bit INTEGER.
    # rowid (implicit) is the issue order: lists are "newest first" by rowid.
    db.execute(
        """
        CREATE TABLE certificates (
            serial TEXT PRIMARY KEY,
            issued_at TEXT NOT NULL,
            not_before TEXT NOT NULL,
            not_after TEXT NOT NULL,
            subject TEXT NOT NULL,
            issuer TEXT NOT NULL,
            common_name TEXT,
            sans TEXT NOT NULL,
            names_key TEXT NOT NULL,
            profile TEXT NOT NULL,
            key_label TEXT NOT NULL,
            fingerprint_sha256 TEXT NOT NULL,
            fingerprint_sha1 TEXT NOT NULL,
            spki_sha256 TEXT NOT NULL,
            der BLOB NOT NULL,
            notify TEXT NOT NULL DEFAULT '[]',
            requester TEXT,
            revoked_at TEXT,
            revocation_reason TEXT
        )
        """
    )
    db.execute("CREATE INDEX certificates_not_after ON certificates(not_after)")
    db.execute("CREATE INDEX certificates_spki ON certificates(spki_sha256)")
    db.execute("CREATE INDEX certificates_names_key ON certificates(names_key)")
    db.execute("CREATE INDEX certificates_fingerprint ON certificates(fingerprint_sha256)")
    db.execute("CREATE INDEX certificates_requester ON certificates(requester)")
    db.execute(
        "CREATE INDEX certificates_revoked ON certificates(revoked_at) WHERE revoked_at IS NOT NULL"
    )
    # Every name (SAN value, CN) lowercased, and reversed, so a search for the start or the
    # end of a name ("cucm", "example.test") is an index range scan, even with a million rows.
    # (A rowid table: SQLite 3.40's integrity_check misreports NOT NULL columns of WITHOUT ROWID
    # tables as NULL.)
    db.execute(
        """
        CREATE TABLE certificate_names (
            name TEXT NOT NULL,
            rname TEXT NOT NULL,
            serial TEXT NOT NULL REFERENCES certificates(serial),
            PRIMARY KEY (name, serial)
        )
        """
    )
    db.execute("CREATE INDEX certificate_names_rname ON certificate_names(rname)")


@migrations()
def m002_audit_log(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT,
            action TEXT NOT NULL,
            serial TEXT,
            client TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute("CREATE INDEX audit_log_action ON audit_log(action)")
    db.execute("CREATE INDEX audit_log_serial ON audit_log(serial)")
    db.execute("CREATE INDEX audit_log_actor ON audit_log(actor)")
    # Append-only: rows can be added, never changed or removed.
    for event in ("UPDATE", "DELETE"):
        db.execute(
            f"""
            CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log
            BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END
            """
        )


@migrations()
def m003_reminders(db: Database) -> None:
    # UNIQUE(serial, threshold) is the claim: the INSERT that wins sends the mail.
    db.execute(
        """
        CREATE TABLE reminders (
            id INTEGER PRIMARY KEY,
            serial TEXT NOT NULL REFERENCES certificates(serial),
            threshold INTEGER NOT NULL,
            status TEXT NOT NULL,
            recipients TEXT NOT NULL,
            claimed_at TEXT NOT NULL,
            sent_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            next_attempt_at TEXT,
            UNIQUE (serial, threshold)
        )
        """
    )
    db.execute("CREATE INDEX reminders_status ON reminders(status, next_attempt_at)")


@migrations()
def m004_revocation(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE crls (
            issuer TEXT NOT NULL,
            number INTEGER NOT NULL,
            this_update TEXT NOT NULL,
            next_update TEXT NOT NULL,
            der BLOB NOT NULL,
            PRIMARY KEY (issuer, number)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE ocsp_responders (
            serial TEXT PRIMARY KEY,
            not_before TEXT NOT NULL,
            not_after TEXT NOT NULL,
            der BLOB NOT NULL,
            key_pem BLOB NOT NULL
        )
        """
    )
    # Revoked CA certificates (the intermediate), listed on the root's CRL.
    db.execute(
        """
        CREATE TABLE ca_revocations (
            serial TEXT PRIMARY KEY,
            revoked_at TEXT NOT NULL,
            reason TEXT NOT NULL
        )
        """
    )


@migrations()
def m005_access(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE users (
            name TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            is_admin INTEGER NOT NULL DEFAULT 0,
            domains TEXT NOT NULL DEFAULT '[]',
            allow_ip INTEGER NOT NULL DEFAULT 0,
            email TEXT,
            created_at TEXT NOT NULL,
            disabled_at TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE tokens (
            name TEXT PRIMARY KEY,
            token_sha256 TEXT NOT NULL UNIQUE,
            is_admin INTEGER NOT NULL DEFAULT 0,
            domains TEXT NOT NULL DEFAULT '[]',
            allow_ip INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            created_by TEXT,
            last_used_at TEXT,
            revoked_at TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            requester TEXT NOT NULL,
            requester_email TEXT,
            csr_pem TEXT NOT NULL,
            profile TEXT NOT NULL,
            validity_days INTEGER NOT NULL,
            notify TEXT NOT NULL DEFAULT '[]',
            names TEXT NOT NULL,
            reasons TEXT NOT NULL,
            status TEXT NOT NULL,
            decided_at TEXT,
            decided_by TEXT,
            decision_reason TEXT,
            serial TEXT
        )
        """
    )
    db.execute("CREATE INDEX requests_status ON requests(status, created_at)")


@migrations()
def m006_drop_fingerprint_index(db: Database) -> None:
    # Lookups go by serial (then compare fingerprints); this index only slowed every insert.
    db.execute("DROP INDEX IF EXISTS certificates_fingerprint")


@migrations()
def m007_search_by_label(db: Database) -> None:
    """Search keys from every label of every name, replacing the name/reversed-name index:
    "example" now finds a.example.test too, and one index serves prefixes and domains."""
    import json

    from .certificates import search_keys  # the same rule as new inserts

    db.execute("CREATE TABLE certificate_search (key TEXT NOT NULL, serial TEXT NOT NULL REFERENCES"
               " certificates(serial), PRIMARY KEY (key, serial))")
    batch = []
    for serial, sans, cn in db.conn.execute("SELECT serial, sans, common_name FROM certificates"):
        batch += [(k, serial) for k in search_keys(json.loads(sans), cn)]
        if len(batch) > 50_000:
            db.conn.executemany("INSERT INTO certificate_search (key, serial) VALUES (?, ?)", batch)
            batch = []
    db.conn.executemany("INSERT INTO certificate_search (key, serial) VALUES (?, ?)", batch)
    db.execute("DROP TABLE certificate_names")


@migrations()
def m008_compromised_keys_index(db: Database) -> None:
    """Every issuance asks whether its key was revoked as compromised. The SPKI index answered by
    walking a tree of every certificate's key, and cost an insertion at a random page on every
    issuance; this partial index holds only compromised keys (a page or two): the question went
    from 47 to 5 us after another connection wrote (100,000-certificate store), and nothing else
    looks certificates up by key."""
    db.execute("CREATE INDEX IF NOT EXISTS certificates_compromised ON certificates(spki_sha256)"
               " WHERE revocation_reason = 'keyCompromise'")
    db.execute("DROP INDEX IF EXISTS certificates_spki")


@migrations()
def m009_search_keys_in_insert_order(db: Database) -> None:
    """The search keys of m007 were ordered by (key, serial): a key shared by every certificate
    ("test", "example.test") took each new certificate at a random place among its entries, a
    random index page per shared key per issuance (6.5 of the 18.7 pages written per issuance).
    Indexed by key alone (then rowid, the insert order), new entries of a shared key go to its
    last page. Same columns, same rows."""
    db.execute("CREATE TABLE certificate_search_m009 (key TEXT NOT NULL, serial TEXT NOT NULL REFERENCES"
               " certificates(serial))")
    db.execute("INSERT INTO certificate_search_m009 (key, serial) SELECT s.key, s.serial FROM certificate_search s"
               " JOIN certificates c ON c.serial = s.serial ORDER BY c.rowid")
    db.execute("DROP TABLE certificate_search")
    db.execute("ALTER TABLE certificate_search_m009 RENAME TO certificate_search")
    db.execute("CREATE INDEX certificate_search_key ON certificate_search(key)")


@migrations()
def m010_acme(db: Database) -> None:
    """ACME (RFC 8555): nonces, accounts, External Account Binding keys, and the order /
    authorization / challenge objects. All in the store, so any worker (or node) answers for
    any of them and an order survives a restart."""
    db.execute("CREATE TABLE acme_nonces (nonce TEXT PRIMARY KEY, expires_at TEXT NOT NULL)")
    db.execute("CREATE INDEX acme_nonces_expiry ON acme_nonces(expires_at)")
    db.execute(
        """
        CREATE TABLE acme_accounts (
            id TEXT PRIMARY KEY,
            thumbprint TEXT NOT NULL UNIQUE,
            jwk TEXT NOT NULL,
            status TEXT NOT NULL,
            contacts TEXT NOT NULL DEFAULT '[]',
            eab_name TEXT,
            created_at TEXT NOT NULL,
            client TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE acme_eab_keys (
            name TEXT PRIMARY KEY,
            kid TEXT NOT NULL UNIQUE,
            hmac_key TEXT NOT NULL,
            domains TEXT NOT NULL DEFAULT '[]',
            allow_ip INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE acme_objects (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            account_id TEXT NOT NULL REFERENCES acme_accounts(id),
            parent_id TEXT,
            status TEXT NOT NULL,
            data TEXT NOT NULL,
            expires_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX acme_objects_account ON acme_objects(account_id, kind, created_at)")
    db.execute("CREATE INDEX acme_objects_parent ON acme_objects(parent_id)")


@migrations()
def m011_calendar_feeds(db: Database) -> None:
    """One subscribable calendar URL per user or token (issue 19): the token in the URL is the
    only credential, so it can be replaced (a new URL) or turned off."""
    db.execute(
        """
        CREATE TABLE calendar_feeds (
            owner TEXT PRIMARY KEY,
            token TEXT UNIQUE,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )
        """
    )


@migrations()
def m012_webhook_deliveries(db: Database) -> None:
    """The webhook ledger (issue 19): one row per (receiver, certificate, event), inserted before
    anything is sent, so each event reaches each receiver once; failures wait and retry."""
    db.execute(
        """
        CREATE TABLE webhook_deliveries (
            id INTEGER PRIMARY KEY,
            webhook TEXT NOT NULL,
            serial TEXT NOT NULL,
            event TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            claimed_at TEXT,
            sent_at TEXT,
            last_error TEXT,
            UNIQUE (webhook, serial, event)
        )
        """
    )
    db.execute("CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at)")


@migrations()
def m013_leases(db: Database) -> None:
    """Work that one process of all (one node of all) must do at a time takes a lease: a row
    taken over only where it still holds the value that was read, once it has expired."""
    db.execute("CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at TEXT NOT NULL)")


@migrations()
def m014_rate_counters(db: Database) -> None:
    """Rate-limit counters shared by nodes on one database (the PostgreSQL backend uses them;
    SQLite's workers count in memory)."""
    db.execute("CREATE TABLE rate_counters (key TEXT PRIMARY KEY, count INTEGER NOT NULL, expires_at REAL NOT NULL)")


@migrations()
def m015_ca_identity(db: Database) -> None:
    """The root certificate (SHA-256) the database belongs to (store/identity.py)."""
    db.execute("CREATE TABLE ca_identity (name TEXT PRIMARY KEY, root_sha256 TEXT NOT NULL)")


@migrations()
def m016_intermediate_generations(db: Database) -> None:
    """Intermediate rollover (issue 20): each intermediate has its own OCSP responder certificate;
    the dashboard asks, per intermediate, how many of its certificates are unexpired and until when."""
    db.execute("ALTER TABLE ocsp_responders ADD COLUMN issuer TEXT NOT NULL DEFAULT 'intermediate'")
    db.execute("CREATE INDEX certificates_issuer_not_after ON certificates(issuer, not_after)")


@migrations()
def m017_scep_challenges(db: Database) -> None:
    """One-time SCEP challenge passwords, by their SHA-256 (store/devices.py)."""
    db.execute(
        """
        CREATE TABLE scep_challenges (
            hash TEXT PRIMARY KEY,
            endpoint TEXT NOT NULL,
            domains TEXT NOT NULL,
            created_at TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            used_at TEXT,
            used_by TEXT
        )
        """
    )


@migrations()
def m018_scep_transactions(db: Database) -> None:
    """SCEP requests held for approval, by endpoint and transactionID, so that a CertPoll (or the
    same PKCSReq sent again) finds its request (store/devices.py)."""
    db.execute(
        """
        CREATE TABLE scep_transactions (
            endpoint TEXT NOT NULL,
            transaction_id TEXT NOT NULL,
            request_id TEXT NOT NULL,
            signer_key TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (endpoint, transaction_id)
        )
        """
    )


@migrations()
def m019_issuance_log(db: Database) -> None:
    """The issuance log (issue 27, store/issuance_log.py): entries in their order, the hash of
    every complete subtree of the Merkle tree, and the signed checkpoints."""
    db.execute("CREATE TABLE log_entries (idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, serial TEXT NOT NULL,"
               " entry TEXT NOT NULL)")
    db.execute("CREATE INDEX log_entries_serial ON log_entries(serial)")
    db.execute("CREATE TABLE log_hashes (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
               " PRIMARY KEY (level, idx)) WITHOUT ROWID")
    db.execute("CREATE TABLE log_checkpoints (size INTEGER PRIMARY KEY, created_at TEXT NOT NULL, note TEXT NOT NULL)")


@migrations()
def m020_token_expiry(db: Database) -> None:
    """API tokens that end by themselves: those exchanged for a CI job's OIDC token (issue 28)."""
    db.execute("ALTER TABLE tokens ADD COLUMN expires_at TEXT")


@migrations()
def m021_sessions(db: Database) -> None:
    """Sign-in sessions held by the server (issue 28, store/sessions.py)."""
    db.execute("CREATE TABLE sessions (id_sha256 TEXT PRIMARY KEY, user_name TEXT NOT NULL, created_at TEXT NOT NULL,"
               " last_seen_at TEXT NOT NULL, expires_at TEXT NOT NULL, ended_at TEXT, ended_by TEXT, client TEXT,"
               " method TEXT NOT NULL)")
    db.execute("CREATE INDEX sessions_user ON sessions(user_name, created_at)")


@migrations()
def m022_approvers(db: Database) -> None:
    """Users who decide held requests without being admins ([[auth.groups]] role = "approver")."""
    db.execute("ALTER TABLE users ADD COLUMN can_approve INTEGER NOT NULL DEFAULT 0")
