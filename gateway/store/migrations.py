"""Schema migrations, applied in order and recorded in SQLite's ``user_version``."""

from __future__ import annotations

import sqlite3
from typing import Final

MIGRATIONS: Final = (
    # 1: the outbox, idempotency records, attempts, audit trail and held receipts.
    """
    CREATE TABLE notifications (
        id              TEXT PRIMARY KEY,
        tenant          TEXT NOT NULL,
        status          TEXT NOT NULL,
        mode            TEXT NOT NULL,
        priority        TEXT NOT NULL,
        strategy        TEXT NOT NULL,
        template_id     TEXT,
        recipient       TEXT NOT NULL,
        channels        TEXT NOT NULL,
        metadata        TEXT,
        idempotency_key TEXT,
        created_by      TEXT NOT NULL,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL
    );
    CREATE INDEX notifications_by_tenant ON notifications (tenant, id);
    CREATE INDEX notifications_by_tenant_status ON notifications (tenant, status, id);

    CREATE TABLE deliveries (
        id                  TEXT PRIMARY KEY,
        notification_id     TEXT NOT NULL REFERENCES notifications (id),
        tenant              TEXT NOT NULL,
        channel             TEXT NOT NULL,
        position            INTEGER NOT NULL,
        address             TEXT NOT NULL,
        mode                TEXT NOT NULL,
        priority_rank       INTEGER NOT NULL,
        status              TEXT NOT NULL,
        content             TEXT NOT NULL,
        provider            TEXT,
        provider_message_id TEXT,
        attempts            INTEGER NOT NULL DEFAULT 0,
        next_attempt_at     REAL NOT NULL,
        lease_owner         TEXT,
        lease_until         REAL,
        last_error          TEXT,
        created_at          REAL NOT NULL,
        updated_at          REAL NOT NULL
    );
    CREATE INDEX deliveries_by_notification ON deliveries (notification_id);
    CREATE INDEX deliveries_due ON deliveries (channel, priority_rank, next_attempt_at)
        WHERE status IN ('queued', 'sending');
    CREATE INDEX deliveries_by_provider_message ON deliveries (provider, provider_message_id)
        WHERE provider_message_id IS NOT NULL;
    CREATE INDEX deliveries_by_address ON deliveries (tenant, address);

    CREATE TABLE attempts (
        id                  TEXT PRIMARY KEY,
        delivery_id         TEXT NOT NULL REFERENCES deliveries (id),
        notification_id     TEXT NOT NULL,
        number              INTEGER NOT NULL,
        provider            TEXT NOT NULL,
        started_at          REAL NOT NULL,
        finished_at         REAL NOT NULL,
        outcome             TEXT NOT NULL,
        provider_message_id TEXT,
        error               TEXT,
        detail              TEXT
    );
    CREATE INDEX attempts_by_notification ON attempts (notification_id);

    CREATE TABLE audit_events (
        seq             INTEGER PRIMARY KEY,
        tenant          TEXT NOT NULL,
        notification_id TEXT NOT NULL,
        delivery_id     TEXT,
        at              REAL NOT NULL,
        actor           TEXT NOT NULL,
        action          TEXT NOT NULL,
        from_status     TEXT,
        to_status       TEXT,
        reason          TEXT
    );
    CREATE INDEX audit_by_notification ON audit_events (notification_id, seq);

    CREATE TABLE idempotency_keys (
        tenant      TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status_code INTEGER NOT NULL,
        response    BLOB NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (tenant, key)
    ) WITHOUT ROWID;

    CREATE TABLE held_receipts (
        seq                 INTEGER PRIMARY KEY,
        provider            TEXT NOT NULL,
        provider_message_id TEXT NOT NULL,
        status              TEXT NOT NULL,
        occurred_at         REAL,
        error               TEXT,
        detail              TEXT,
        received_at         REAL NOT NULL
    );
    CREATE INDEX held_receipts_by_message ON held_receipts (provider, provider_message_id);
    """,
    # 2: fallback between channels, expiry, dead letters, provider events.
    """
    ALTER TABLE notifications ADD COLUMN fallback_after REAL;
    ALTER TABLE notifications ADD COLUMN expires_at REAL;
    ALTER TABLE deliveries ADD COLUMN expires_at REAL;
    ALTER TABLE deliveries ADD COLUMN dead_reason TEXT;
    CREATE INDEX deliveries_waiting ON deliveries (channel, next_attempt_at) WHERE status = 'waiting';
    CREATE INDEX deliveries_dead ON deliveries (tenant, id) WHERE status = 'dead_lettered';

    -- Things tenants (and operators) are told about: the outbox of the event webhooks.
    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY,
        id      TEXT NOT NULL UNIQUE,
        tenant  TEXT,
        type    TEXT NOT NULL,
        subject TEXT NOT NULL,
        data    TEXT NOT NULL,
        at      REAL NOT NULL
    );
    CREATE INDEX events_by_tenant ON events (tenant, seq);
    """,
    # 3: inbound provider callbacks kept raw, replies, and opt-outs (STOP).
    """
    -- Every callback as it arrived, stored before anything is parsed; purged after the retention period.
    CREATE TABLE inbound_requests (
        id          TEXT PRIMARY KEY,
        provider    TEXT NOT NULL,
        received_at REAL NOT NULL,
        source      TEXT,
        method      TEXT NOT NULL,
        target      TEXT NOT NULL,
        headers     TEXT NOT NULL,
        body        BLOB NOT NULL,
        outcome     TEXT NOT NULL,
        reason      TEXT
    );
    CREATE INDEX inbound_requests_by_age ON inbound_requests (received_at);

    CREATE TABLE replies (
        seq                 INTEGER PRIMARY KEY,
        tenant              TEXT,
        provider            TEXT NOT NULL,
        channel             TEXT NOT NULL,
        sender              TEXT NOT NULL,
        body                TEXT NOT NULL,
        provider_message_id TEXT,
        in_reply_to         TEXT,
        notification_id     TEXT,
        delivery_id         TEXT,
        request_id          TEXT,
        received_at         REAL NOT NULL,
        detail              TEXT
    );
    CREATE INDEX replies_by_tenant ON replies (tenant, seq);

    CREATE TABLE opt_outs (
        tenant  TEXT NOT NULL,
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        since   REAL NOT NULL,
        source  TEXT NOT NULL,
        PRIMARY KEY (tenant, address, channel)  -- address before channel: a send looks up its addresses
    ) WITHOUT ROWID;
    """,
    # 4: event webhooks: one row per (event, endpoint), the fan-out cursor, endpoints a 410 disabled.
    """
    CREATE TABLE webhook_deliveries (
        id              TEXT PRIMARY KEY,
        event_seq       INTEGER NOT NULL,
        event_id        TEXT NOT NULL,
        tenant          TEXT NOT NULL,
        endpoint        TEXT NOT NULL,
        status          TEXT NOT NULL,  -- pending, succeeded, dead, disabled
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until     REAL,
        last_status     INTEGER,
        last_error      TEXT,
        created_at      REAL NOT NULL,
        updated_at      REAL NOT NULL,
        UNIQUE (event_id, tenant, endpoint)
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_by_tenant ON webhook_deliveries (tenant, id);

    -- The last event seq fanned out; events before this version existed are not sent.
    CREATE TABLE webhook_fanout (id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL);
    INSERT INTO webhook_fanout (id, last_seq) SELECT 1, COALESCE(MAX(seq), 0) FROM events;

    -- An endpoint that answered 410 Gone stays disabled while the policy keeps the same url.
    CREATE TABLE webhook_endpoints_disabled (
        tenant      TEXT NOT NULL,
        endpoint    TEXT NOT NULL,
        url         TEXT NOT NULL,
        disabled_at REAL NOT NULL,
        reason      TEXT NOT NULL,
        PRIMARY KEY (tenant, endpoint)
    ) WITHOUT ROWID;
    """,
    # v5: how each event webhook endpoint is faring, to disable one that keeps failing.
    """
    CREATE TABLE webhook_endpoint_health (
        tenant          TEXT NOT NULL,
        endpoint        TEXT NOT NULL,
        failing_since   REAL,             -- first failure since the last success; NULL while healthy
        last_success_at REAL,
        last_failure_at REAL,
        last_error      TEXT,
        PRIMARY KEY (tenant, endpoint)
    ) WITHOUT ROWID;
    """,
    # v6: a vendor retrying a callback must not store its reply (and its event) twice.
    """
    CREATE UNIQUE INDEX replies_once ON replies (provider, provider_message_id, tenant) WHERE provider_message_id IS NOT NULL;
    """,
    # v7: a receipt naming our delivery id (its send timed out, but the vendor took it) waits for that delivery's attempt.
    """
    ALTER TABLE held_receipts ADD COLUMN delivery_id TEXT;
    CREATE INDEX held_receipts_by_delivery ON held_receipts (provider, delivery_id) WHERE delivery_id IS NOT NULL;
    CREATE INDEX held_receipts_by_age ON held_receipts (received_at);
    """,
    # v8: one history. A line of a notification's timeline and the event tenants are told of it
    # are one row when they are one happening; ``seq`` orders both, and the fan-out to event
    # webhooks follows it. Old events keep their seq (webhook deliveries point at it); the old
    # audit trail follows them, without its claims (attempts record those).
    """
    CREATE TABLE history (
        seq             INTEGER PRIMARY KEY,
        at              REAL NOT NULL,
        tenant          TEXT,            -- NULL: about a provider instance, told to every tenant
        subject         TEXT NOT NULL,   -- the notification, address or instance it is about
        notification_id TEXT,            -- set: a line of that notification's timeline
        delivery_id     TEXT,
        actor           TEXT NOT NULL,   -- who or what made it happen: a key, the dispatcher, provider:<instance>
        action          TEXT NOT NULL,
        from_status     TEXT,            -- with to_status: the status change it made, if any
        to_status       TEXT,
        reason          TEXT,
        event_id        TEXT UNIQUE,     -- set: tenants are told, as this event
        event_type      TEXT,
        data            TEXT             -- the event's payload
    );
    CREATE INDEX history_by_notification ON history (notification_id, seq) WHERE notification_id IS NOT NULL;
    CREATE INDEX history_events_by_tenant ON history (tenant, seq) WHERE event_type IS NOT NULL;
    INSERT INTO history (seq, tenant, subject, at, actor, action, event_id, event_type, data)
        SELECT seq, tenant, subject, at, 'gateway', type, id, type, data FROM events ORDER BY seq;
    INSERT INTO history (tenant, subject, notification_id, delivery_id, at, actor, action, from_status, to_status, reason)
        SELECT tenant, notification_id, notification_id, delivery_id, at, actor, action, from_status, to_status, reason
        FROM audit_events WHERE action != 'claimed' ORDER BY seq;
    DROP TABLE audit_events;
    DROP TABLE events;
    """,
    # v9: a callback that fails verification is kept as a summary only — never its body or
    # headers, and only the newest so many (the store cuts by ``seq``) — so that anyone without
    # a key cannot fill the disk. Refusals kept whole before now become summaries (their hash
    # unknown: SQLite has no sha256); verified callbacks a plugin could not parse stay whole.
    """
    CREATE TABLE refused_callbacks (
        seq         INTEGER PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        provider    TEXT NOT NULL,
        received_at REAL NOT NULL,
        source      TEXT,
        method      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        sha256      TEXT,
        reason      TEXT NOT NULL
    );
    CREATE INDEX refused_callbacks_by_age ON refused_callbacks (received_at);
    INSERT INTO refused_callbacks (id, provider, received_at, source, method, size, sha256, reason)
        SELECT id, provider, received_at, source, method, length(body), NULL, coalesce(reason, '')
        FROM inbound_requests
        WHERE outcome = 'rejected' AND coalesce(reason, '') NOT LIKE 'could not be parsed:%'
          AND coalesce(reason, '') != 'its provider instance is no longer in policy'
        ORDER BY received_at, id;
    DELETE FROM inbound_requests WHERE id IN (SELECT id FROM refused_callbacks);
    """,
    # v10: where /readyz writes a page and takes it out again, to learn that a full disk takes writes again.
    """
    CREATE TABLE store_probe (id INTEGER PRIMARY KEY, filler BLOB NOT NULL);
    """,
    # v11: idempotency keys are scoped by (tenant, mode): a test key's request never answers for a
    # live one. A key kept from before takes the mode of the notifications it made (live if none).
    # Kept for a retention window, then purged by age. And an index for claims that take tenants in turn.
    """
    CREATE TABLE idempotency_keys_v9 (
        tenant      TEXT NOT NULL,
        mode        TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status_code INTEGER NOT NULL,
        response    BLOB NOT NULL,
        created_at  REAL NOT NULL,
        PRIMARY KEY (tenant, mode, key)
    ) WITHOUT ROWID;
    INSERT INTO idempotency_keys_v9 (tenant, mode, key, fingerprint, status_code, response, created_at)
        SELECT k.tenant,
               COALESCE((SELECT n.mode FROM notifications n WHERE n.tenant = k.tenant AND n.idempotency_key = k.key LIMIT 1), 'live'),
               k.key, k.fingerprint, k.status_code, k.response, k.created_at
        FROM idempotency_keys k;
    DROP TABLE idempotency_keys;
    ALTER TABLE idempotency_keys_v9 RENAME TO idempotency_keys;
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
    -- Claims take tenants in turn, each from its own queue: due work by (channel, mode, tenant).
    CREATE INDEX deliveries_due_by_tenant ON deliveries (channel, mode, tenant, priority_rank, next_attempt_at)
        WHERE status IN ('queued', 'sending');
    """,
    # v12: each endpoint's pending event webhooks are a lane, sent in order: found by endpoint, oldest first.
    """
    CREATE INDEX webhook_deliveries_lanes ON webhook_deliveries (tenant, endpoint, event_seq) WHERE status = 'pending';
    """,
    # v13: fewer rows and bytes per message. An attempt is a line of history (the line of the
    # transition it made, or a line of its own), not a row of another table. An event that is a
    # notification's own keeps no payload (it is built from the line and its notification) and no
    # id (derived from seq and the store's salt); events written before keep theirs. ``seq`` never
    # goes back even when the newest lines are purged: the fan-out cursor relies on it. The index
    # of due work by channel alone had no query left.
    """
    CREATE TABLE history_v13 (
        seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
        at                  REAL NOT NULL,
        tenant              TEXT,            -- NULL: about a provider instance, told to every tenant
        subject             TEXT,            -- what it is about, when that is not its notification
        notification_id     TEXT,            -- set: a line of that notification's timeline
        delivery_id         TEXT,
        actor               TEXT NOT NULL,   -- who or what made it happen: a key, the dispatcher, provider:<instance>
        action              TEXT NOT NULL,   -- 'attempt': only an attempt's record, not a line of the timeline
        from_status         TEXT,            -- with to_status: the status change it made, if any
        to_status           TEXT,
        reason              TEXT,
        event_type          TEXT,            -- set: tenants are told, as this event
        data                TEXT,            -- the event's payload, unless it is built from the line (NULL)
        event_id            TEXT,            -- only events from before v13 keep a stored id
        attempt             INTEGER,         -- set: the line records attempt number N of its delivery
        provider            TEXT,
        started_at          REAL,
        finished_at         REAL,
        outcome             TEXT,
        provider_message_id TEXT,
        error               TEXT,
        detail              TEXT
    );
    INSERT INTO history_v13 (seq, at, tenant, subject, notification_id, delivery_id, actor, action, from_status, to_status,
                             reason, event_type, data, event_id)
        SELECT seq, at, tenant, CASE WHEN subject = notification_id THEN NULL ELSE subject END, notification_id, delivery_id,
               actor, action, from_status, to_status, reason, event_type, data, event_id
        FROM history ORDER BY seq;
    INSERT INTO history_v13 (at, tenant, notification_id, delivery_id, actor, action, attempt, provider, started_at, finished_at,
                             outcome, provider_message_id, error, detail)
        SELECT a.finished_at, d.tenant, a.notification_id, a.delivery_id,
               CASE WHEN a.provider != '' THEN 'provider:' || a.provider ELSE 'dispatcher' END, 'attempt', a.number,
               a.provider, a.started_at, a.finished_at, a.outcome, a.provider_message_id, a.error, a.detail
        FROM attempts a JOIN deliveries d ON d.id = a.delivery_id ORDER BY a.started_at, a.number;
    DROP TABLE attempts;
    DROP TABLE history;
    ALTER TABLE history_v13 RENAME TO history;
    CREATE INDEX history_by_notification ON history (notification_id, seq) WHERE notification_id IS NOT NULL;
    CREATE INDEX history_events_by_tenant ON history (tenant, seq) WHERE event_type IS NOT NULL;
    CREATE UNIQUE INDEX history_stored_event_ids ON history (event_id) WHERE event_id IS NOT NULL;
    DROP INDEX deliveries_due;
    -- What the store keeps about itself: the salt of the ids it derives.
    CREATE TABLE store_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    INSERT INTO store_meta (name, value) VALUES ('id_salt', randomblob(16));
    """,
    # v14: retention purges find a tenant's history lines about no notification (opt-outs,
    # replies, circuits) by age, and the event webhook deliveries of the lines they purge.
    """
    CREATE INDEX history_lines_by_age ON history (tenant, at) WHERE notification_id IS NULL;
    CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_seq);
    """,
    # v15: quotas. Per tenant and mode, the UTC day's count of accepted messages, the thresholds whose
    # quota.threshold event went out that day, and the rate limit's level; written with each acceptance.
    """
    CREATE TABLE quota_usage (
        tenant     TEXT NOT NULL,
        mode       TEXT NOT NULL,
        day        TEXT NOT NULL,              -- the UTC date counted, YYYY-MM-DD
        used       INTEGER NOT NULL,           -- messages accepted that day
        fired      TEXT NOT NULL DEFAULT '[]', -- JSON list of the thresholds (fractions) that fired that day
        tokens     REAL,                       -- the rate limit's level at tokens_at; NULL: no rate limit
        tokens_at  REAL NOT NULL,
        PRIMARY KEY (tenant, mode)
    ) WITHOUT ROWID;
    """,
    # v16: contacts, per tenant and mode, found by id or by the tenant's external id. A
    # notification records its contact, category, severity and the translation it was rendered
    # in; a delivery why it was skipped. A deleted contact's addresses wait in contact_erasures
    # until every notification that holds them is erased (batch by batch, resumed after a restart).
    """
    CREATE TABLE contacts (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL,
        mode        TEXT NOT NULL,
        external_id TEXT,
        addresses   TEXT NOT NULL,   -- {recipient field: address}
        locale      TEXT,
        timezone    TEXT,
        channels    TEXT NOT NULL,   -- {channel: wanted}
        categories  TEXT NOT NULL,   -- {category: wanted}
        metadata    TEXT NOT NULL,
        version     INTEGER NOT NULL,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE UNIQUE INDEX contacts_by_external_id ON contacts (tenant, mode, external_id) WHERE external_id IS NOT NULL;
    CREATE INDEX contacts_by_tenant ON contacts (tenant, mode, id);
    CREATE TABLE contact_erasures (
        contact_id TEXT PRIMARY KEY,
        tenant     TEXT NOT NULL,
        mode       TEXT NOT NULL,
        addresses  TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    ALTER TABLE notifications ADD COLUMN contact_id TEXT;
    ALTER TABLE notifications ADD COLUMN category TEXT;
    ALTER TABLE notifications ADD COLUMN severity TEXT;
    ALTER TABLE notifications ADD COLUMN locale TEXT;
    ALTER TABLE deliveries ADD COLUMN skip_reason TEXT;
    """,
    # v17: honest statuses. A delivery that failed for good is ``failed``; being in the dead-letter
    # queue is its dead_reason, no longer a status of its own (history says the same). What went
    # through a plugin that reaches no one (the sandbox) is recorded as simulated, on the delivery
    # and on each attempt's line: test-mode deliveries, and sandbox sends known by their instance
    # or their sbx_ message id. A notification keeps the version and language of its template.
    """
    UPDATE deliveries SET status = 'failed' WHERE status = 'dead_lettered';
    UPDATE notifications SET status = 'failed' WHERE status = 'dead_lettered';
    UPDATE history SET to_status = 'failed' WHERE to_status = 'dead_lettered';
    UPDATE history SET from_status = 'failed' WHERE from_status = 'dead_lettered';
    DROP INDEX deliveries_dead;
    CREATE INDEX deliveries_dead ON deliveries (tenant, id) WHERE status = 'failed' AND dead_reason IS NOT NULL;
    ALTER TABLE deliveries ADD COLUMN simulated INTEGER NOT NULL DEFAULT 0;
    UPDATE deliveries SET simulated = 1
        WHERE mode = 'test' OR provider = 'sandbox' OR substr(provider_message_id, 1, 4) = 'sbx_';
    ALTER TABLE history ADD COLUMN simulated INTEGER;  -- on an attempt's line: 1 when its instance reaches no one
    UPDATE history SET simulated = 1
        WHERE attempt IS NOT NULL AND (provider = 'sandbox' OR substr(provider_message_id, 1, 4) = 'sbx_');
    ALTER TABLE notifications ADD COLUMN template_version TEXT;
    ALTER TABLE notifications ADD COLUMN template_language TEXT;
    """,
    # v18: business events: kept as received and processed from this outbox; what each route did; dedupe windows,
    # repeats held by acknowledgements, digests collecting events; which event and route made a notification,
    # and its acknowledgement.
    """
    CREATE TABLE business_events (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant       TEXT NOT NULL,
        mode         TEXT NOT NULL,
        event_id     TEXT NOT NULL,
        name         TEXT NOT NULL,
        severity     TEXT NOT NULL,
        received     TEXT NOT NULL,           -- the request as it came
        key_prefix   TEXT NOT NULL,
        key_name     TEXT,
        received_at  REAL NOT NULL,
        processed_at REAL                     -- NULL: still to be processed
    );
    CREATE UNIQUE INDEX business_events_by_id ON business_events (tenant, mode, event_id);
    CREATE INDEX business_events_pending ON business_events (seq) WHERE processed_at IS NULL;
    CREATE INDEX business_events_by_name ON business_events (tenant, mode, name, seq);
    CREATE INDEX business_events_by_age ON business_events (tenant, received_at);
    CREATE TABLE event_outcomes (
        event_seq       INTEGER NOT NULL,
        position        INTEGER NOT NULL,
        route           TEXT,
        recipient_index INTEGER,
        result          TEXT NOT NULL,        -- notified, digested, suppressed
        reason          TEXT,
        message         TEXT,
        notification_id TEXT,
        first_event_id  TEXT,
        digest_id       INTEGER,
        PRIMARY KEY (event_seq, position)
    ) WITHOUT ROWID;
    CREATE TABLE event_dedupe (
        tenant         TEXT NOT NULL,
        mode           TEXT NOT NULL,
        route          TEXT NOT NULL,
        fingerprint    TEXT NOT NULL,
        first_event_id TEXT NOT NULL,
        expires_at     REAL NOT NULL,
        PRIMARY KEY (tenant, mode, route, fingerprint)
    ) WITHOUT ROWID;
    CREATE INDEX event_dedupe_by_expiry ON event_dedupe (expires_at);
    CREATE TABLE repeat_holds (
        tenant          TEXT NOT NULL,
        mode            TEXT NOT NULL,
        route           TEXT NOT NULL,
        fingerprint     TEXT NOT NULL,
        until           REAL NOT NULL,
        notification_id TEXT NOT NULL,
        PRIMARY KEY (tenant, mode, route, fingerprint)
    ) WITHOUT ROWID;
    CREATE INDEX repeat_holds_by_expiry ON repeat_holds (until);
    CREATE TABLE digests (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant          TEXT NOT NULL,
        mode            TEXT NOT NULL,
        route           TEXT NOT NULL,
        recipient_key   TEXT NOT NULL,
        recipient       TEXT NOT NULL,
        key_prefix      TEXT NOT NULL,
        key_name        TEXT,
        due_at          REAL NOT NULL,
        status          TEXT NOT NULL,        -- open, sent, failed
        notification_id TEXT,
        reason          TEXT,
        message         TEXT,
        created_at      REAL NOT NULL,
        settled_at      REAL
    );
    CREATE UNIQUE INDEX digests_open ON digests (tenant, mode, route, recipient_key) WHERE status = 'open';
    CREATE INDEX digests_due ON digests (due_at) WHERE status = 'open';
    CREATE TABLE digest_items (
        digest_id INTEGER NOT NULL,
        event_seq INTEGER NOT NULL,
        event_id  TEXT NOT NULL,
        variables TEXT NOT NULL,
        PRIMARY KEY (digest_id, event_seq)
    ) WITHOUT ROWID;
    ALTER TABLE notifications ADD COLUMN event_id TEXT;
    ALTER TABLE notifications ADD COLUMN route TEXT;
    ALTER TABLE notifications ADD COLUMN fingerprint TEXT;
    ALTER TABLE notifications ADD COLUMN acknowledged_by TEXT;
    ALTER TABLE notifications ADD COLUMN acknowledged_at REAL;
    ALTER TABLE notifications ADD COLUMN acknowledged_note TEXT;
    """,
    # v19: how many contacts each tenant holds per mode, kept with every creation and deletion, so
    # TIDINGS_MAX_CONTACTS_PER_TENANT is checked without counting the contacts each time.
    """
    CREATE TABLE contact_counts (
        tenant TEXT NOT NULL,
        mode   TEXT NOT NULL,
        count  INTEGER NOT NULL,
        PRIMARY KEY (tenant, mode)
    ) WITHOUT ROWID;
    INSERT INTO contact_counts (tenant, mode, count) SELECT tenant, mode, count(*) FROM contacts GROUP BY tenant, mode;
    """,
    # v20: business events and due digests are taken a (tenant, mode) lane at a time, in turns: each lane's
    # pending events (open digests) are found from an index of their own, so a flood in one lane is never read
    # to reach another's first event.
    """
    DROP INDEX business_events_pending;
    CREATE INDEX business_events_pending ON business_events (mode, tenant, seq) WHERE processed_at IS NULL;
    CREATE INDEX digests_due_by_lane ON digests (mode, tenant, due_at) WHERE status = 'open';
    """,
)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than the database; return the resulting version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise RuntimeError(f"database schema v{version} is newer than this Tidings (v{len(MIGRATIONS)})")
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)
