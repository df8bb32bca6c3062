from __future__ import annotations

import pytest

from gateway import statuses


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("queued", "sending", True),
        ("sending", "sent", True),
        ("sent", "delivered", True),
        ("delivered", "read", True),
        ("queued", "delivered", True),
        ("delivered", "sent", False),
        ("read", "delivered", False),
        ("sent", "sent", False),
        ("sent", "bounced", True),
        ("delivered", "failed", True),
        ("failed", "delivered", False),
        ("dead_lettered", "sent", False),
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


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        (["queued", "queued"], "queued"),
        (["queued", "waiting"], "queued"),
        (["sent", "skipped"], "sent"),
        (["skipped", "queued"], "queued"),
        (["skipped", "skipped"], "skipped"),  # nothing was sent, by the recipient's choice
        (["failed", "queued"], "sending"),
        (["dead_lettered", "waiting"], "sending"),
        (["queued", "sent"], "sending"),
        (["sending"], "sending"),
        (["sent", "delivered"], "delivered"),
        (["failed", "delivered"], "delivered"),
        (["failed", "failed"], "failed"),
        (["bounced", "failed"], "failed"),
        (["bounced"], "bounced"),
    ],
)
def test_a_notification_status_summarises_its_deliveries(deliveries: list[str], expected: str) -> None:
    assert statuses.aggregate(deliveries) == expected
