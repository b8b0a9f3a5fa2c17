"""The PostgreSQL inbox's schema: numbered migrations, applied in order on open and recorded in
`stripe_inbox_schema`. Replicas starting together take turns through an advisory lock."""

from __future__ import annotations

import asyncpg

from ..errors import StoreUnavailable

# Search as it was first built, on the commit path: columns of events, and indexes kept by triggers. The
# search index migration replaces it.
SEARCH_VECTOR = "array_to_tsvector(string_to_array(search_text, ' '))"
SEARCH_COLUMNS = """
    ALTER TABLE events ADD COLUMN email TEXT, ADD COLUMN object_status TEXT,
        ADD COLUMN search_text TEXT NOT NULL DEFAULT '', ADD COLUMN related_ids TEXT NOT NULL DEFAULT '[]';
"""
SEARCH_INDEXES = f"""
    CREATE TABLE event_objects (object_id TEXT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (object_id, seq));
    INSERT INTO event_objects SELECT DISTINCT jsonb_array_elements_text(related_ids::jsonb), seq FROM events;
    CREATE INDEX events_email ON events (email, seq) WHERE email IS NOT NULL;
    CREATE INDEX events_amount ON events (currency, amount);
    CREATE INDEX events_created ON events (created);
    CREATE INDEX events_search ON events USING GIN ({SEARCH_VECTOR});
    CREATE FUNCTION relate_inserted_events() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO event_objects SELECT DISTINCT jsonb_array_elements_text(related_ids::jsonb), seq FROM inserted
        ON CONFLICT DO NOTHING;
        RETURN NULL;
    END $$;
    CREATE FUNCTION unrelate_deleted_events() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM event_objects o USING (SELECT jsonb_array_elements_text(related_ids::jsonb) AS object_id, seq
                                           FROM deleted) AS d
        WHERE o.object_id = d.object_id AND o.seq = d.seq;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_related AFTER INSERT ON events REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION relate_inserted_events();
    CREATE TRIGGER events_unrelated AFTER DELETE ON events REFERENCING OLD TABLE AS deleted
        FOR EACH STATEMENT EXECUTE FUNCTION unrelate_deleted_events();
"""
# The search index, off the commit path: an insert only queues the events' seqs (search_queue, once per
# statement); the background indexer reads the queued events' payloads and writes their terms (event_search, a
# stored tsvector under a GIN index) and the ids and e-mails they are found by (event_keys). Every event stored so
# far is queued, so an upgrade is indexed in the background.
SEARCH_INDEX = """
    DROP TRIGGER events_related ON events;
    DROP TRIGGER events_unrelated ON events;
    DROP FUNCTION relate_inserted_events();
    DROP FUNCTION unrelate_deleted_events();
    DROP TABLE event_objects;
    DROP INDEX events_search;
    DROP INDEX events_email;
    ALTER TABLE events DROP COLUMN email, DROP COLUMN search_text, DROP COLUMN related_ids;
    CREATE TABLE search_queue (seq BIGINT PRIMARY KEY REFERENCES events (seq) ON DELETE CASCADE);
    INSERT INTO search_queue SELECT seq FROM events;
    CREATE TABLE event_keys (
        key TEXT NOT NULL,
        seq BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
        PRIMARY KEY (key, seq)
    );
    CREATE INDEX event_keys_seq ON event_keys (seq);
    CREATE TABLE event_search (
        seq BIGINT PRIMARY KEY REFERENCES events (seq) ON DELETE CASCADE,
        terms tsvector NOT NULL
    );
    CREATE INDEX event_search_terms ON event_search USING GIN (terms);
    CREATE FUNCTION queue_inserted_events() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO search_queue SELECT seq FROM inserted;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_search_queue AFTER INSERT ON events REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION queue_inserted_events();
"""

# The full-text index holds each term's prefixes as lexemes of their own (indexing.with_prefixes), which the
# queries now look for: every event stored so far is queued again, and indexed in the background, the searches
# saying meanwhile how many events they lack (their keys too, written again with their terms).
SEARCH_PREFIXES = """
    TRUNCATE event_search, event_keys;
    INSERT INTO search_queue SELECT seq FROM events ON CONFLICT DO NOTHING;
"""

# Amount and time ranges read their matches' seqs from the index alone (an index-only scan), both to count them
# and to pick a narrow range's page, instead of reading each matching event's row.
SEARCH_RANGES = """
    DROP INDEX events_amount;
    CREATE INDEX events_amount ON events (currency, amount) INCLUDE (seq);
    DROP INDEX events_created;
    CREATE INDEX events_created ON events (created) INCLUDE (seq);
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
        created_at DOUBLE PRECISION NOT NULL,
        refresh_before DOUBLE PRECISION,
        state TEXT NOT NULL CHECK (state IN ('active', 'ended')),
        ended_reason TEXT,
        terminate_pending INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_delivery_at DOUBLE PRECISION,
        last_error TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        delivered INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION
    );
    CREATE INDEX event_subscriptions_principal ON event_subscriptions (principal, state);
    CREATE INDEX event_subscriptions_state ON event_subscriptions (state, lease_until);
"""

MIGRATIONS: list[str] = [
    """
    CREATE TABLE events (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        created BIGINT NOT NULL,
        livemode BOOLEAN NOT NULL,
        customer TEXT,
        account TEXT,
        object_id TEXT,
        amount BIGINT,
        currency TEXT,
        payload BYTEA NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'acked')),
        received_at DOUBLE PRECISION NOT NULL,
        last_delivery_at DOUBLE PRECISION NOT NULL,
        deliveries INTEGER NOT NULL DEFAULT 1,
        acked_at DOUBLE PRECISION,
        outcome TEXT,
        note TEXT,
        classification TEXT,
        kind TEXT NOT NULL DEFAULT 'snapshot' CHECK (kind IN ('snapshot', 'thin')),
        related_object TEXT,
        claimed_by TEXT,
        claim_expires_at DOUBLE PRECISION
    );
    CREATE INDEX events_status ON events (status, seq);
    CREATE INDEX events_type ON events (type, seq);
    CREATE INDEX events_customer ON events (customer, seq);
    CREATE INDEX events_account ON events (account, seq);
    CREATE INDEX events_acked_at ON events (acked_at) WHERE status = 'acked';
    CREATE TABLE tickets (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL,
        title TEXT NOT NULL,
        body TEXT NOT NULL,
        priority TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        tracker_id TEXT,
        tracker_url TEXT,
        UNIQUE (event_id, title)
    );
    CREATE TABLE notifications (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id TEXT,
        channel TEXT NOT NULL,
        subject TEXT,
        message TEXT NOT NULL,
        recipient TEXT,
        idempotency_key TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX notifications_event ON notifications (event_id);
    CREATE TABLE deliveries (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('notification', 'ticket')),
        ref_id BIGINT NOT NULL,
        target TEXT NOT NULL,
        event_id TEXT,
        status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION,
        reason TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        UNIQUE (kind, ref_id)
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
    CREATE TABLE audit (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        event_id TEXT,
        arguments TEXT NOT NULL,
        result TEXT NOT NULL
    );
    CREATE INDEX audit_event ON audit (event_id, id);
    CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # Counts kept by triggers, so totals and stats cost the same with a million events as with ten. Each
    # server connection counts into a shard of its own (its backend pid), so replicas committing at once
    # do not queue on one counts row; readers add the shards up. Count rows are locked in (status, type)
    # order, so two transactions never wait on each other in a circle.
    """
    CREATE TABLE event_counts (
        status TEXT NOT NULL,
        type TEXT NOT NULL,
        shard INTEGER NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (status, type, shard)
    );
    INSERT INTO event_counts SELECT status, type, 0, count(*) FROM events GROUP BY status, type;
    CREATE FUNCTION count_inserted_events() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO event_counts AS c
        SELECT status, type, pg_backend_pid() % 64, count(*) FROM inserted GROUP BY status, type ORDER BY 1, 2
        ON CONFLICT (status, type, shard) DO UPDATE SET n = c.n + excluded.n;
        RETURN NULL;
    END $$;
    CREATE FUNCTION count_deleted_events() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO event_counts AS c
        SELECT status, type, pg_backend_pid() % 64, -count(*) FROM deleted GROUP BY status, type ORDER BY 1, 2
        ON CONFLICT (status, type, shard) DO UPDATE SET n = c.n + excluded.n;
        RETURN NULL;
    END $$;
    CREATE FUNCTION count_event_status() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO event_counts AS c
        SELECT * FROM (VALUES (OLD.status, OLD.type, pg_backend_pid() % 64, -1),
                              (NEW.status, NEW.type, pg_backend_pid() % 64, 1)) AS change ORDER BY 1, 2
        ON CONFLICT (status, type, shard) DO UPDATE SET n = c.n + excluded.n;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_inserted AFTER INSERT ON events REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION count_inserted_events();
    CREATE TRIGGER events_deleted AFTER DELETE ON events REFERENCING OLD TABLE AS deleted
        FOR EACH STATEMENT EXECUTE FUNCTION count_deleted_events();
    CREATE TRIGGER events_status AFTER UPDATE OF status ON events
        FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION count_event_status();
    """,
    # The change log: which event each commit changed, read by every replica's watchers.
    """
    CREATE TABLE changes (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id TEXT NOT NULL);
    """,
    # Approvals: a delivery may wait for a person (awaiting_approval) and end rejected (declined, rejected or
    # lapsed).
    """
    ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
    ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
        CHECK (status IN ('queued', 'sending', 'sent', 'failed', 'awaiting_approval', 'rejected'));
    """,
    # Incidents the inbox alerts about: a row while one is open, so of several replicas exactly one alerts.
    """
    CREATE TABLE incidents (name TEXT PRIMARY KEY, opened_at DOUBLE PRECISION NOT NULL, detail TEXT NOT NULL);
    """,
    # OAuth for remote MCP clients: registered clients, requests awaiting the operator's consent, authorization
    # codes and tokens. Every code, token and consent request is kept only as its SHA-256 digest.
    """
    CREATE TABLE oauth_clients (
        client_id TEXT PRIMARY KEY,
        metadata TEXT NOT NULL,
        registered_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE oauth_requests (
        request_hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        params TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE oauth_codes (
        code_hash TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        grant_id TEXT NOT NULL,
        params TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        used_at DOUBLE PRECISION
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
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        last_used_at DOUBLE PRECISION,
        rotated_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION
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
    # notification or ticket behind it (ref_id NULL) and records the destination's answer. forward_health
    # holds each destination's run of failures.
    """
    ALTER TABLE deliveries DROP CONSTRAINT deliveries_kind_check;
    ALTER TABLE deliveries ADD CONSTRAINT deliveries_kind_check CHECK (kind IN ('notification', 'ticket', 'forward'));
    ALTER TABLE deliveries ALTER COLUMN ref_id DROP NOT NULL;
    ALTER TABLE deliveries ADD COLUMN status_code INTEGER, ADD COLUMN latency_ms DOUBLE PRECISION,
                           ADD COLUMN replay BOOLEAN NOT NULL DEFAULT false;
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at) WHERE kind != 'forward';
    CREATE INDEX deliveries_forward_due ON deliveries (status, target, next_attempt_at) WHERE kind = 'forward';
    CREATE INDEX deliveries_event ON deliveries (event_id);
    CREATE TABLE forward_health (
        destination TEXT PRIMARY KEY,
        failures INTEGER NOT NULL,
        paused_until DOUBLE PRECISION,
        probe_until DOUBLE PRECISION
    );
    """,
    SEARCH_INDEX,
    SEARCH_RANGES,
    # The incident log MCP Events' inbox.alert reads: each incident opened and cleared, in commit order.
    """
    CREATE TABLE incident_log (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('opened', 'cleared')),
        detail TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    """,
    EVENT_SUBSCRIPTIONS,
    SEARCH_PREFIXES,
]


async def migrate(db: asyncpg.Connection) -> None:
    async with db.transaction():
        schema = await db.fetchval("SELECT current_schema()")
        if schema is None:
            path = await db.fetchval("SHOW search_path")
            raise StoreUnavailable(f"no schema of the search_path ({path}) exists in this database; create it first")
        # Held until this transaction ends: a replica starting meanwhile waits, then finds the work done.
        await db.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{schema}.stripe_inbox_schema")
        await db.execute("CREATE TABLE IF NOT EXISTS stripe_inbox_schema (version INTEGER NOT NULL)")
        version = await db.fetchval("SELECT coalesce(max(version), 0) FROM stripe_inbox_schema")
        if version > len(MIGRATIONS):
            raise StoreUnavailable(
                f"the database has schema version {version}, newer than this stripe-inbox knows "
                f"({len(MIGRATIONS)}); upgrade stripe-inbox"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await db.execute(script)
            await db.execute("INSERT INTO stripe_inbox_schema (version) VALUES ($1)", number)
