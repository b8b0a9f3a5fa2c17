"""The SQLite inbox's schema: numbered migrations, applied in order on open and recorded in
`PRAGMA user_version`."""

from __future__ import annotations

import sqlite3

import aiosqlite

from ..errors import StoreUnavailable

# Search as it was first built, on the commit path: columns of events, and indexes kept by triggers. The
# search index migration replaces it.
SEARCH_COLUMNS = """
    ALTER TABLE events ADD COLUMN email TEXT;
    ALTER TABLE events ADD COLUMN object_status TEXT;
    ALTER TABLE events ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
    ALTER TABLE events ADD COLUMN related_ids TEXT NOT NULL DEFAULT '[]';
"""
SEARCH_INDEXES = """
    CREATE TABLE event_objects (object_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (object_id, seq))
        WITHOUT ROWID;
    INSERT OR IGNORE INTO event_objects SELECT value, seq FROM events, json_each(events.related_ids);
    CREATE INDEX events_email ON events (email, seq) WHERE email IS NOT NULL;
    CREATE INDEX events_amount ON events (currency, amount);
    CREATE INDEX events_created ON events (created);
    CREATE VIRTUAL TABLE event_search USING fts5(
        search_text, content = 'events', content_rowid = 'seq',
        tokenize = "unicode61 remove_diacritics 0 tokenchars '_@.+-'"
    );
    INSERT INTO event_search (event_search) VALUES ('rebuild');
    CREATE TRIGGER events_search_insert AFTER INSERT ON events BEGIN
        INSERT INTO event_search (rowid, search_text) VALUES (NEW.seq, NEW.search_text);
        INSERT OR IGNORE INTO event_objects SELECT value, NEW.seq FROM json_each(NEW.related_ids);
    END;
    CREATE TRIGGER events_search_delete AFTER DELETE ON events BEGIN
        INSERT INTO event_search (event_search, rowid, search_text) VALUES ('delete', OLD.seq, OLD.search_text);
        DELETE FROM event_objects WHERE seq = OLD.seq AND object_id IN (SELECT value FROM json_each(OLD.related_ids));
    END;
"""
# The search index, off the commit path: an insert only queues the event's seq (search_queue); the background
# indexer reads the queued events' payloads and writes their terms (event_search) and the ids and e-mails they are
# found by (event_keys). Every event stored so far is queued, so an upgrade is indexed in the background.
SEARCH_INDEX = """
    DROP TRIGGER events_search_insert;
    DROP TRIGGER events_search_delete;
    DROP TABLE event_search;
    DROP TABLE event_objects;
    DROP INDEX events_email;
    ALTER TABLE events DROP COLUMN email;
    ALTER TABLE events DROP COLUMN search_text;
    ALTER TABLE events DROP COLUMN related_ids;
    CREATE TABLE search_queue (seq INTEGER PRIMARY KEY);
    INSERT INTO search_queue SELECT seq FROM events;
    CREATE TABLE event_keys (key TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (key, seq)) WITHOUT ROWID;
    CREATE INDEX event_keys_seq ON event_keys (seq);
    CREATE VIRTUAL TABLE event_search USING fts5(
        terms, tokenize = "unicode61 remove_diacritics 0 tokenchars '_@.+-'"
    );
    CREATE TRIGGER events_search_queue AFTER INSERT ON events BEGIN
        INSERT INTO search_queue VALUES (NEW.seq);
    END;
    CREATE TRIGGER events_search_delete AFTER DELETE ON events BEGIN
        DELETE FROM search_queue WHERE seq = OLD.seq;
        DELETE FROM event_keys WHERE seq = OLD.seq;
        DELETE FROM event_search WHERE rowid = OLD.seq;
    END;
"""

# MCP Events webhook subscriptions (#25): one row per subscription, its secret encrypted with a key kept
# outside the database, its cursor advanced only by the replica holding its lease. `generation` moves on each
# subscribe, so a delivery pass that read an older cursor cannot overwrite a replay asked for meanwhile.
EVENT_SUBSCRIPTIONS = """
    CREATE TABLE event_subscriptions (
        id TEXT PRIMARY KEY,
        principal TEXT NOT NULL,
        name TEXT NOT NULL,
        arguments TEXT NOT NULL,
        callback TEXT NOT NULL,  -- where events are POSTed, exactly as the client gave it
        secret TEXT NOT NULL,
        cursor TEXT,
        generation INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        refresh_before REAL,
        state TEXT NOT NULL CHECK (state IN ('active', 'ended')),
        ended_reason TEXT,
        terminate_pending INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_delivery_at REAL,
        last_error TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        delivered INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until REAL
    );
    CREATE INDEX event_subscriptions_principal ON event_subscriptions (principal, state);
    CREATE INDEX event_subscriptions_state ON event_subscriptions (state, lease_until);
"""

MIGRATIONS: list[str] = [
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        created INTEGER NOT NULL,
        livemode INTEGER NOT NULL,
        customer TEXT,
        account TEXT,
        object_id TEXT,
        amount INTEGER,
        currency TEXT,
        payload BLOB NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'acked')),
        received_at REAL NOT NULL,
        last_delivery_at REAL NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 1,
        acked_at REAL,
        outcome TEXT,
        note TEXT,
        classification TEXT
    );
    CREATE INDEX events_status ON events (status, seq);
    CREATE INDEX events_type ON events (type, seq);
    CREATE INDEX events_customer ON events (customer, seq);
    CREATE INDEX events_acked_at ON events (acked_at) WHERE status = 'acked';
    CREATE TABLE tickets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        priority TEXT NOT NULL,
        created_at REAL NOT NULL,
        tracker_id TEXT,
        tracker_url TEXT,
        UNIQUE (event_id, title)
    );
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT,
        channel TEXT NOT NULL,
        subject TEXT,
        message TEXT NOT NULL,
        recipient TEXT,
        idempotency_key TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE INDEX notifications_event ON notifications (event_id);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('notification', 'ticket')),
        ref_id INTEGER NOT NULL,
        target TEXT NOT NULL,
        event_id TEXT,
        status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        reason TEXT,
        created_at REAL NOT NULL,
        finished_at REAL,
        UNIQUE (kind, ref_id)
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        event_id TEXT,
        arguments TEXT NOT NULL,
        result TEXT NOT NULL
    );
    CREATE INDEX audit_event ON audit (event_id, id);
    """,
    """
    ALTER TABLE events ADD COLUMN kind TEXT NOT NULL DEFAULT 'snapshot' CHECK (kind IN ('snapshot', 'thin'));
    ALTER TABLE events ADD COLUMN related_object TEXT;
    CREATE INDEX events_account ON events (account, seq);
    CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # Counts kept by triggers, so totals and stats cost the same with a million events as with ten.
    """
    CREATE TABLE event_counts (status TEXT NOT NULL, type TEXT NOT NULL, n INTEGER NOT NULL,
                               PRIMARY KEY (status, type)) WITHOUT ROWID;
    INSERT INTO event_counts SELECT status, type, count(*) FROM events GROUP BY status, type;
    CREATE TRIGGER events_count_insert AFTER INSERT ON events BEGIN
        INSERT INTO event_counts VALUES (NEW.status, NEW.type, 1)
        ON CONFLICT (status, type) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER events_count_status AFTER UPDATE OF status ON events WHEN OLD.status != NEW.status BEGIN
        UPDATE event_counts SET n = n - 1 WHERE status = OLD.status AND type = OLD.type;
        INSERT INTO event_counts VALUES (NEW.status, NEW.type, 1)
        ON CONFLICT (status, type) DO UPDATE SET n = n + 1;
    END;
    CREATE TRIGGER events_count_delete AFTER DELETE ON events BEGIN
        UPDATE event_counts SET n = n - 1 WHERE status = OLD.status AND type = OLD.type;
    END;
    """,
    """
    ALTER TABLE events ADD COLUMN claimed_by TEXT;
    ALTER TABLE events ADD COLUMN claim_expires_at REAL;
    """,
    # The change log: which event each commit changed, read by every process's watchers.
    """
    CREATE TABLE changes (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL);
    """,
    # Approvals: a delivery may wait for a person (awaiting_approval) and end rejected (declined, rejected or
    # lapsed). SQLite cannot widen a CHECK in place, so the table is rebuilt, every column named.
    """
    CREATE TABLE deliveries_widened (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('notification', 'ticket')),
        ref_id INTEGER NOT NULL,
        target TEXT NOT NULL,
        event_id TEXT,
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'awaiting_approval', 'rejected')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        reason TEXT,
        created_at REAL NOT NULL,
        finished_at REAL,
        UNIQUE (kind, ref_id)
    );
    INSERT INTO deliveries_widened (id, kind, ref_id, target, event_id, status, attempts, next_attempt_at,
                                    lease_until, reason, created_at, finished_at)
        SELECT id, kind, ref_id, target, event_id, status, attempts, next_attempt_at, lease_until, reason,
               created_at, finished_at FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_widened RENAME TO deliveries;
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
    """,
    # Incidents the inbox alerts about: a row while one is open, so of several replicas exactly one alerts.
    """
    CREATE TABLE incidents (name TEXT PRIMARY KEY, opened_at REAL NOT NULL, detail TEXT NOT NULL);
    """,
    # OAuth for remote MCP clients: registered clients, requests awaiting the operator's consent, authorization
    # codes and tokens. Every code, token and consent request is kept only as its SHA-256 digest.
    """
    CREATE TABLE oauth_clients (
        client_id TEXT PRIMARY KEY,
        metadata TEXT NOT NULL,
        registered_at REAL NOT NULL
    );
    CREATE TABLE oauth_requests (
        request_hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        params TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE oauth_codes (
        code_hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        params TEXT NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL
    );
    CREATE TABLE oauth_tokens (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
        grant_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        client_name TEXT,
        scopes TEXT NOT NULL,
        resource TEXT,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        last_used_at REAL,
        rotated_at REAL,
        revoked_at REAL
    );
    CREATE INDEX oauth_tokens_grant ON oauth_tokens (grant_id);
    """,
    # The dashboard's arrivals per hour read only the last day's events.
    """
    CREATE INDEX events_received_at ON events (received_at);
    """,
    SEARCH_COLUMNS,
    "SELECT 1 -- (filled the columns above from stored payloads; the search index migration drops them)",
    SEARCH_INDEXES,
    # Forwards to [[forward]] destinations go through the outbox: a delivery of kind 'forward' has no
    # notification or ticket behind it (ref_id NULL) and records the destination's answer. SQLite cannot
    # change a CHECK, so the table is rebuilt. forward_health holds each destination's run of failures.
    """
    CREATE TABLE deliveries_with_forwards (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('notification', 'ticket', 'forward')),
        ref_id INTEGER,
        target TEXT NOT NULL,
        event_id TEXT,
        status TEXT NOT NULL DEFAULT 'queued'
            CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'awaiting_approval', 'rejected')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        reason TEXT,
        created_at REAL NOT NULL,
        finished_at REAL,
        status_code INTEGER,
        latency_ms REAL,
        replay INTEGER NOT NULL DEFAULT 0,
        UNIQUE (kind, ref_id)
    );
    INSERT INTO deliveries_with_forwards (id, kind, ref_id, target, event_id, status, attempts, next_attempt_at,
                                          lease_until, reason, created_at, finished_at)
    SELECT id, kind, ref_id, target, event_id, status, attempts, next_attempt_at, lease_until, reason, created_at,
           finished_at FROM deliveries;
    DROP TABLE deliveries;
    ALTER TABLE deliveries_with_forwards RENAME TO deliveries;
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at) WHERE kind != 'forward';
    CREATE INDEX deliveries_forward_due ON deliveries (status, target, next_attempt_at) WHERE kind = 'forward';
    CREATE INDEX deliveries_event ON deliveries (event_id);
    CREATE TABLE forward_health (
        destination TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        paused_until REAL,
        probe_until REAL
    );
    """,
    SEARCH_INDEX,
    # The incident log MCP Events' inbox.alert reads: each incident opened and cleared, in commit order.
    """
    CREATE TABLE incident_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('opened', 'cleared')),
        detail TEXT NOT NULL,
        at REAL NOT NULL
    );
    """,
    EVENT_SUBSCRIPTIONS,
]


async def migrate(db: aiosqlite.Connection) -> None:
    await db.execute("BEGIN IMMEDIATE")
    try:
        async with db.execute("PRAGMA user_version") as cursor:
            (version,) = await cursor.fetchone()  # type: ignore[misc]
        if version > len(MIGRATIONS):
            raise StoreUnavailable(
                f"the database has schema version {version}, newer than this stripe-inbox knows "
                f"({len(MIGRATIONS)}); upgrade stripe-inbox"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in _statements(script):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {number}")
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """A script's statements; a trigger's body has semicolons of its own, so split where SQLite would."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [statement for statement in statements if statement.rstrip(";").strip()]
