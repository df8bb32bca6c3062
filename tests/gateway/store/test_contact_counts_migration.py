"""Upgrading a store to counted contacts: the contacts it already holds are counted per tenant and mode."""

from __future__ import annotations

from pathlib import Path

from gateway.store.migrations import MIGRATIONS, migrate
from tests.gateway.store.test_history import store_at_version

COUNTED = next(number for number, script in enumerate(MIGRATIONS) if "CREATE TABLE contact_counts" in script)
"""The number of migrations before the one this tests (it is positional: found by what it does, not by its place)."""

CONTACTS = [("ctc_1", "acme", "live"), ("ctc_2", "acme", "live"), ("ctc_3", "acme", "test"), ("ctc_4", "other", "live")]


def test_the_contacts_a_store_holds_are_counted_when_it_is_upgraded(tmp_path: Path) -> None:
    conn = store_at_version(tmp_path / "old.sqlite3", COUNTED)
    conn.executemany(
        "INSERT INTO contacts (id, tenant, mode, addresses, channels, categories, metadata, version, created_at, updated_at) "
        "VALUES (?, ?, ?, '{}', '{}', '{}', '{}', 1, 0, 0)",
        CONTACTS,
    )
    conn.commit()
    assert migrate(conn) == len(MIGRATIONS)
    counts = sorted(conn.execute("SELECT tenant, mode, count FROM contact_counts"))
    assert counts == [("acme", "live", 2), ("acme", "test", 1), ("other", "live", 1)]
