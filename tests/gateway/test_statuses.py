"""The status vocabulary: forward-only moves, and how a notification's status follows from its deliveries'.

The aggregate cases are the README's table (section "Statuses"), read from the README itself, so
the documentation and the code cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway import statuses

README = Path(__file__).resolve().parents[2] / "README.md"
AGGREGATE_HEADER = "| deliveries, in channel order | notification |"


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("queued", "sending", True),
        ("sending", "sent", True),
        ("sent", "delivered", True),
        ("delivered", "read", True),
        ("delivered", "opened", True),
        ("opened", "clicked", True),
        ("read", "clicked", True),
        ("delivered", "clicked", True),  # a click proves the open the vendor did not report
        ("clicked", "opened", False),  # a late open after a click never moves back
        ("opened", "read", False),  # seen is seen: one step, on different channels
        ("read", "opened", False),
        ("opened", "delivered", False),
        ("queued", "delivered", True),
        ("delivered", "sent", False),
        ("read", "delivered", False),
        ("sent", "sent", False),
        ("sent", "bounced", True),
        ("clicked", "bounced", True),
        ("delivered", "failed", True),
        ("failed", "delivered", False),
        ("failed", "queued", False),  # only a replay takes a dead letter back to queued (gateway.lifecycle)
        ("bounced", "failed", False),
        ("waiting", "queued", True),
        ("waiting", "skipped", True),
        ("queued", "skipped", True),  # a contact's channel skipped from the start
        ("sending", "skipped", True),  # between attempts: its contact was deleted
        ("sent", "skipped", False),
        ("skipped", "queued", False),
        ("queued", "waiting", False),
    ],
)
def test_statuses_only_move_forward(current: str, new: str, allowed: bool) -> None:
    assert statuses.can_transition(current, new) is allowed


def test_dead_lettered_is_no_longer_a_status_and_receipts_keep_opened_and_clicked_apart() -> None:
    assert "dead_lettered" not in statuses.ALL
    assert statuses.TERMINAL_FAILURES == {"failed", "bounced"}
    assert (statuses.RECEIPT_STATUSES["opened"], statuses.RECEIPT_STATUSES["clicked"]) == ("opened", "clicked")


def readme_aggregate_table() -> list[tuple[list[str], str]]:
    """The rows of the README's aggregate table: the deliveries' statuses and the notification's."""
    lines = README.read_text().splitlines()
    start = lines.index(AGGREGATE_HEADER) + 2  # past the header and its |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        deliveries, notification = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((re.findall(r"`(\w+)`", deliveries), notification.strip("`")))
    return rows


def test_the_readme_table_covers_each_rule_of_the_aggregate() -> None:
    rows = readme_aggregate_table()
    assert len(rows) >= 10
    documented = {status for deliveries, notification in rows for status in (*deliveries, notification)}
    assert documented <= statuses.ALL
    assert {"queued", "sending", "sent", "delivered", "opened", "clicked", "failed", "bounced"} <= {n for _d, n in rows}


@pytest.mark.parametrize(("deliveries", "expected"), readme_aggregate_table())
def test_a_notification_status_follows_from_its_deliveries_as_the_readme_says(deliveries: list[str], expected: str) -> None:
    assert statuses.aggregate(deliveries) == expected


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        (["queued", "queued"], "queued"),
        (["sending"], "sending"),
        (["sent", "delivered"], "delivered"),
        (["failed", "delivered"], "delivered"),
        (["read", "opened"], "read"),  # a tie: the first in channel order
        (["clicked", "bounced"], "clicked"),
        (["bounced"], "bounced"),
        (["failed", "skipped"], "failed"),
        (["failed", "waiting"], "sending"),  # the fallback channel is about to start
    ],
)
def test_more_cases_of_the_aggregate(deliveries: list[str], expected: str) -> None:
    assert statuses.aggregate(deliveries) == expected
