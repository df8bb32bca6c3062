"""Upgrading a store to honest statuses: dead letters become failed (still dead letters), sandbox sends become simulated."""

from __future__ import annotations

from pathlib import Path

from gateway.store import DeadLetterFilter, NotificationFilter, SqliteStore
from gateway.store.migrations import MIGRATIONS, migrate
from tests.conftest import FakeClock
from tests.gateway.store.test_history import store_at_version

HONEST = next(number for number, script in enumerate(MIGRATIONS) if "ADD COLUMN simulated" in script)
"""The number of migrations before the one this tests (it is positional: found by what it does, not by its place)."""

NOTIFICATIONS = [  # id, status, mode
    ("ntf_dead", "dead_lettered", "live"),
    ("ntf_test", "delivered", "test"),
    ("ntf_play", "delivered", "live"),
    ("ntf_real", "delivered", "live"),
]
DELIVERIES = [  # id, notification, status, mode, provider, provider message id, dead reason
    ("dlv_dead", "ntf_dead", "dead_lettered", "live", "acme_twilio", None, "retries_exhausted"),
    ("dlv_test", "ntf_test", "delivered", "test", "sandbox", "sbx_dlv_test", None),
    ("dlv_play", "ntf_play", "delivered", "live", "play", "sbx_dlv_play", None),  # a sandbox instance by another name
    ("dlv_real", "ntf_real", "delivered", "live", "acme_twilio", "SM0001", None),
]


def old_store(path: Path) -> None:
    conn = store_at_version(path, HONEST)
    conn.executemany(
        "INSERT INTO notifications (id, tenant, status, mode, priority, strategy, recipient, channels, created_by, created_at, updated_at) "
        "VALUES (?, 'acme', ?, ?, 'normal', 'all', '{}', '[\"sms\"]', 'key:k', 1, 2)",
        NOTIFICATIONS,
    )
    conn.executemany(
        "INSERT INTO deliveries (id, notification_id, tenant, channel, position, address, mode, priority_rank, status, content, "
        "provider, provider_message_id, dead_reason, attempts, next_attempt_at, created_at, updated_at) "
        "VALUES (?, ?, 'acme', 'sms', 0, '+14155550100', ?, 1, ?, '{}', ?, ?, ?, 1, 0, 1, 2)",
        [(d, n, mode, status, provider, message, reason) for d, n, status, mode, provider, message, reason in DELIVERIES],
    )
    conn.executemany(
        "INSERT INTO history (at, tenant, notification_id, delivery_id, actor, action, from_status, to_status, reason, event_type, "
        "attempt, provider, started_at, finished_at, outcome, provider_message_id) VALUES (2, 'acme', ?, ?, ?, ?, 'sending', ?, NULL, ?, 1, ?, 1, 2, ?, ?)",
        [
            ("ntf_dead", "dlv_dead", "provider:acme_twilio", "dead_lettered", "dead_lettered", "message.dead_lettered", "acme_twilio", "transient", None),
            ("ntf_play", "dlv_play", "provider:play", "sent", "sent", "message.sent", "play", "sent", "sbx_dlv_play"),
            ("ntf_real", "dlv_real", "provider:acme_twilio", "sent", "sent", "message.sent", "acme_twilio", "sent", "SM0001"),
        ],
    )
    assert migrate(conn) == len(MIGRATIONS)
    conn.close()


async def test_stored_dead_letters_become_failed_dead_letters_and_sandbox_sends_become_simulated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old_store(path)
    store = SqliteStore(path, FakeClock(100.0))
    await store.open()
    try:
        dead = await store.get_notification("acme", "ntf_dead")
        assert dead is not None and dead.status == "failed"
        [delivery] = dead.deliveries
        assert (delivery.status, delivery.dead_reason) == ("failed", "retries_exhausted")
        assert dead.history is not None and [(h.action, h.to_status) for h in dead.history] == [("dead_lettered", "failed")]
        [letter] = (await store.list_dead_letters("acme", DeadLetterFilter(), limit=10, cursor=None)).items
        assert letter.delivery_id == "dlv_dead"
        failed = await store.list_notifications("acme", NotificationFilter(status="failed"), limit=10, cursor=None)
        assert [n.id for n in failed.items] == ["ntf_dead"]
        replayed = await store.replay("acme", delivery_ids=["dlv_dead"], actor="key:ops")
        assert replayed.delivery_ids == ["dlv_dead"], "a migrated dead letter can be replayed"

        simulated = {}
        for notification_id in ("ntf_test", "ntf_play", "ntf_real"):
            found = await store.get_notification("acme", notification_id)
            assert found is not None
            [one] = found.deliveries
            simulated[notification_id] = (found.simulated, one.simulated, [a.simulated for a in one.attempts or ()])
        assert simulated == {
            "ntf_test": (True, True, []),  # a test key's: always
            "ntf_play": (True, True, [True]),  # known by its sbx_ message id
            "ntf_real": (False, False, [False]),
        }
    finally:
        await store.close()
