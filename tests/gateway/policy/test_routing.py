"""Route matching in one table: which routes an event takes, as a pure function of the routes, the tenant and the event."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.policy.models import RoutePolicy
from gateway.policy.routing import EventFacts, fingerprint, glob_problem, lookup, matching_routes


def route(match: dict[str, Any], tenant: str | None = None) -> RoutePolicy:
    return RoutePolicy.model_validate({"match": match, "notify": {"template": "t", "channels": ["sms"]}, "tenant": tenant})


ROUTES = {
    "exact": route({"event": "order.shipped"}),
    "glob": route({"event": "order.*"}),
    "one-char": route({"event": "user.?"}),
    "set": route({"event": "job.[ab]"}),
    "not-set": route({"event": "job.[!ab]"}),
    "severe": route({"event": "alert.*", "severity": "high"}),
    "listed": route({"event": "alert.*", "severity": ["low", "critical"]}),
    "billing": route({"event": "invoice.*", "source": "billing"}),
    "billing-any": route({"event": "invoice.*", "source": "billing-*"}),
    "portugal": route({"event": "signup", "data": {"country": "PT"}}),
    "iberia": route({"event": "signup", "data": {"country": ["PT", "ES"], "plan.tier": "pro"}}),
    "flagged": route({"event": "signup", "data": {"vip": True}}),
    "numbered": route({"event": "signup", "data": {"seats": 5}}),
    "acme-only": route({"event": "tenant.*"}, tenant="acme"),
    "everyone": route({"event": "tenant.*"}),
}


def facts(name: str, severity: str = "medium", source: str | None = None, **data: Any) -> EventFacts:
    return EventFacts(name, severity, source, data)


@pytest.mark.parametrize(
    ("tenant", "event", "expected"),
    [
        ("acme", facts("order.shipped"), ["exact", "glob"]),  # several match: every one, in name order
        ("acme", facts("order.cancelled"), ["glob"]),
        ("acme", facts("order"), []),  # order.* needs the dot
        ("acme", facts("order.shipped.late"), ["glob"]),  # * crosses dots
        ("acme", facts("Order.shipped"), []),  # case counts
        ("acme", facts("user.x"), ["one-char"]),
        ("acme", facts("user.xy"), []),
        ("acme", facts("job.a"), ["set"]),
        ("acme", facts("job.c"), ["not-set"]),
        ("acme", facts("alert.disk", "high"), ["severe"]),  # a minimum
        ("acme", facts("alert.disk", "critical"), ["listed", "severe"]),
        ("acme", facts("alert.disk", "medium"), []),
        ("acme", facts("alert.disk", "low"), ["listed"]),  # a list is exactly those
        ("acme", facts("invoice.paid", source="billing"), ["billing"]),
        ("acme", facts("invoice.paid", source="billing-eu"), ["billing-any"]),
        ("acme", facts("invoice.paid", source="shop"), []),
        ("acme", facts("invoice.paid"), []),  # no source: a route naming one does not take it
        ("acme", facts("signup", country="PT"), ["portugal"]),
        ("acme", facts("signup", country="ES", plan={"tier": "pro"}), ["iberia"]),  # a dotted path, one of a list
        ("acme", facts("signup", country="PT", plan={"tier": "pro"}), ["iberia", "portugal"]),
        ("acme", facts("signup", country="ES", plan={"tier": "free"}), []),
        ("acme", facts("signup", country="ES"), []),  # a path the data lacks never matches
        ("acme", facts("signup", vip=True), ["flagged"]),
        ("acme", facts("signup", vip=1), []),  # true is not 1
        ("acme", facts("signup", seats=5.0), ["numbered"]),  # but 5 is 5.0
        ("acme", facts("signup", seats="5"), []),
        ("acme", facts("tenant.x"), ["acme-only", "everyone"]),  # a tenant-scoped route
        ("other", facts("tenant.x"), ["everyone"]),
        ("acme", facts("nothing.here"), []),  # none
    ],
)
def test_which_routes_an_event_takes(tenant: str, event: EventFacts, expected: list[str]) -> None:
    assert matching_routes(ROUTES, tenant, event) == expected


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("order.*", False), ("job.[ab]", False), ("job.[!ab]", False), ("job.[]]", False), ("job.[ab", True), ("[", True)],
)
def test_a_glob_with_an_unclosed_bracket_is_a_problem(pattern: str, problem: bool) -> None:
    assert (glob_problem(pattern) is not None) == problem


def test_a_fingerprint_is_the_listed_values_and_the_recipient() -> None:
    fields = ["event_name", "data.certificate.id"]
    event = facts("ssl.expiring", certificate={"id": "c-1"}, days=3)
    same = fingerprint("r", fields, facts("ssl.expiring", certificate={"id": "c-1"}, days=2), {"email": "a@x"})
    assert fingerprint("r", fields, event, {"email": "a@x"}) == same  # unlisted data does not count
    assert fingerprint("r", fields, event, {"email": "b@x"}) != same  # the recipient always does
    assert fingerprint("r2", fields, event, {"email": "a@x"}) != same  # and the route
    assert fingerprint("r", fields, facts("ssl.expiring", certificate={"id": "c-2"}), {"email": "a@x"}) != same
    assert lookup({"a": {"b": 1}}, "a.b") == 1
