"""POST/GET /api/v1/events on a running app: accepted once, processed from the store, routed, and shown back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import OTHER_KEY, TEST_KEY, Api, MemoryProvider, serve
from events_support import ROUTES, certificate, post_event, processed, shipped, wait_event

from gateway.http.appkeys import EVENT_PROCESSOR, STORE
from gateway.store import NewBusinessEvent


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    (policy_dir / "routes.yaml").write_text(ROUTES)
    return policy_dir


async def test_a_new_event_is_accepted_processed_and_its_notification_sent(api: Api, memory_provider: type[MemoryProvider]) -> None:
    status, answer = await post_event(api, shipped("evt-1"))
    assert (status, answer) == (202, {"status": "accepted", "event_id": "evt-1"})
    event = await wait_event(api, "evt-1")
    assert event["routes"] == ["order-shipped"]
    [outcome] = event["outcomes"]
    assert (outcome["route"], outcome["recipient_index"], outcome["result"]) == ("order-shipped", 0, "notified")
    notification = await api.wait_for(outcome["notification_id"], lambda n: n["status"] == "sent")
    assert (notification["event_id"], notification["route"]) == ("evt-1", "order-shipped")
    assert notification["deliveries"][0]["content"] == {"body": "Order 1001 shipped"}
    assert memory_provider.sent[0].to == "+14155550100"


async def test_a_repeated_event_id_is_a_duplicate_and_does_nothing_even_with_another_body(api: Api) -> None:
    await processed(api, shipped("evt-dup"))
    status, answer = await post_event(api, shipped("evt-dup", phone="+14155550111", data={"order_id": "2"}))
    assert (status, answer) == (200, {"status": "duplicate", "event_id": "evt-dup"})
    event = await wait_event(api, "evt-dup")
    assert len(event["outcomes"]) == 1 and event["recipient"]["phone"] == "+14155550100"
    _, listed = await api.get("/api/v1/notifications")
    assert len(listed["items"]) == 1


async def test_event_ids_are_per_tenant_and_per_mode(api: Api) -> None:
    assert (await post_event(api, shipped("evt-shared")))[0] == 202
    assert (await post_event(api, shipped("evt-shared"), key=TEST_KEY))[0] == 202
    assert (await post_event(api, shipped("evt-shared"), key=OTHER_KEY))[0] == 202
    live = await wait_event(api, "evt-shared")
    test = await wait_event(api, "evt-shared", key=TEST_KEY)
    assert (live["mode"], test["mode"]) == ("live", "test")
    test_notification = await api.notification(test["outcomes"][0]["notification_id"], key=TEST_KEY)
    assert test_notification["mode"] == "test"


async def test_another_tenants_or_another_modes_event_is_404(api: Api) -> None:
    await processed(api, shipped("evt-mine"))
    for key in (OTHER_KEY, TEST_KEY):
        status, error = await api.get("/api/v1/events/evt-mine", key=key)
        assert (status, error["error"]["code"]) == (404, "event_not_found")
    status, _ = await api.get("/api/v1/events/never-posted")
    assert status == 404


async def test_every_matching_route_fires_in_name_order_each_with_its_own_notification(api: Api) -> None:
    event = await processed(api, shipped("evt-both", source="billing"))
    assert event["routes"] == ["order-billing-copy", "order-shipped"]
    by_route = {outcome["route"]: outcome for outcome in event["outcomes"]}
    copy = await api.notification(by_route["order-billing-copy"]["notification_id"])
    assert (copy["channels"], copy["priority"]) == (["email"], "high")
    assert copy["deliveries"][0]["content"]["subject"] == "Order 1001 shipped"


async def test_an_event_no_route_matches_is_recorded_as_such(api: Api) -> None:
    event = await processed(api, shipped("evt-none", event_name="invoice.paid"))
    assert event["routes"] == []
    assert event["outcomes"] == [{"route": None, "recipient_index": None, "result": "suppressed", "reason": "no_route_matched",
                                  "message": "no route matches this event"}]


async def test_a_tenant_scoped_route_fires_only_for_its_tenant(api: Api) -> None:
    other = await processed(api, shipped("evt-other"), key=OTHER_KEY)
    assert other["routes"] == ["order-shipped", "other-only"]
    mine = await processed(api, shipped("evt-acme"))
    assert "other-only" not in mine["routes"]


async def test_severity_defaults_from_the_event_type_and_the_template_sees_the_event(api: Api) -> None:
    event = await processed(api, certificate("evt-cert"))
    assert event["severity"] == "high"
    notification = await api.notification(event["outcomes"][0]["notification_id"])
    email = notification["deliveries"][0]
    assert email["content"]["subject"] == "high ssl.certificate_expiring"
    assert email["content"]["body"] == "certificate c-1 (evt-cert)"
    low = await processed(api, certificate("evt-cert-low", certificate_id="c-2", severity="medium"))
    assert low["outcomes"][0]["reason"] == "no_route_matched"


async def test_each_recipient_gets_its_own_notification_and_a_bad_one_is_suppressed_with_its_code(api: Api) -> None:
    body = shipped("evt-many") | {"recipient": None}
    body.pop("recipient")
    body["recipients"] = [{"phone": "+14155550100"}, {"email": "only@example.com"}, {"phone": "12"}]
    event = await processed(api, body)
    outcomes = [(o["recipient_index"], o["result"], o.get("reason")) for o in event["outcomes"]]
    assert outcomes == [(0, "notified", None), (1, "suppressed", "missing_recipient_field"), (2, "suppressed", "invalid_recipient")]


async def test_an_opted_out_recipient_is_suppressed_not_sent(api: Api) -> None:
    response = await api.client.post("/api/v1/opt-outs", json={"channel": "sms", "address": "+14155550177"}, headers=api.headers())
    assert response.status == 201
    event = await processed(api, shipped("evt-optout", phone="+14155550177"))
    assert event["outcomes"][0]["reason"] == "recipient_opted_out"


async def test_a_route_whose_channel_has_no_provider_is_suppressed_with_the_send_paths_code(aiohttp_client: Any, tmp_path: Path, clock: Any) -> None:
    policy = tmp_path / "p"
    policy.mkdir()
    from conftest import LIVE_KEY, key_entry

    (policy / "a.yaml").write_text(
        f"tenants:\n  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]\nproviders:\n  sandbox: {{plugin: sandbox}}\n"
        "templates:\n  t: {channels: {sms: {body: hi}}}\nroutes:\n  r:\n    match: {event: x}\n    notify: {template: t, channels: [sms]}\n"
    )
    from plugins.sandbox import SandboxProvider

    api = await serve(aiohttp_client, policy, {"sandbox": SandboxProvider}, clock)
    event = await processed(api, {"event_id": "e", "event_name": "x", "recipient": {"phone": "+14155550100"}})
    assert event["outcomes"][0]["reason"] == "channel_unavailable"


async def test_the_event_is_shown_as_received_with_its_processing(api: Api) -> None:
    body = shipped("evt-full", source="shop", occurred_at="2027-01-01T10:00:00+01:00", actor={"type": "user", "id": "u-1"}, severity="low")
    event = await processed(api, body)
    for field in ("event_id", "event_name", "source", "occurred_at", "actor", "recipient", "data"):
        assert event[field] == body[field]
    assert (event["severity"], event["mode"], event["status"], event["received_by"]) == ("low", "live", "processed", "tdk_acme_liv")
    assert event["received_at"].endswith("Z") and event["processed_at"].endswith("Z")


async def test_events_are_listed_newest_first_by_name_a_page_at_a_time(api: Api) -> None:
    for index in range(3):
        await post_event(api, shipped(f"evt-list-{index}"))
    await post_event(api, certificate("evt-list-cert"))
    await post_event(api, shipped("evt-list-test"), key=TEST_KEY)
    _, page = await api.get("/api/v1/events?event_name=order.shipped&limit=2")
    assert [item["event_id"] for item in page["items"]] == ["evt-list-2", "evt-list-1"]
    assert "outcomes" not in page["items"][0]
    assert "data" not in page["items"][0] and "recipient" not in page["items"][0], "a list shows summaries"
    assert page["items"][0]["recipient_count"] == 1
    _, rest = await api.get(f"/api/v1/events?event_name=order.shipped&limit=2&cursor={page['next_cursor']}")
    assert [item["event_id"] for item in rest["items"]] == ["evt-list-0"] and rest["next_cursor"] is None
    _, everything = await api.get("/api/v1/events")
    assert len(everything["items"]) == 4
    status, error = await api.get("/api/v1/events?cursor=nonsense")
    assert (status, error["error"]["code"]) == (400, "invalid_parameter")


async def test_an_event_accepted_before_a_stop_is_processed_after_the_restart(
    aiohttp_client: Any, make_app: Any, memory_provider: type[MemoryProvider]
) -> None:
    first = Api(await aiohttp_client(make_app()))
    await first.app[EVENT_PROCESSOR].stop()  # accepted, then the process "dies" before processing it
    assert (await post_event(first, shipped("evt-restart")))[0] == 202
    _, pending = await first.get("/api/v1/events/evt-restart")
    assert pending["status"] == "pending"
    await first.client.close()

    second = Api(await aiohttp_client(make_app()))
    event = await wait_event(second, "evt-restart")
    assert event["outcomes"][0]["result"] == "notified"
    await second.wait_for(event["outcomes"][0]["notification_id"], lambda n: n["status"] == "sent")


async def test_an_event_processed_once_is_never_processed_again(api: Api) -> None:
    event = await processed(api, shipped("evt-once"))
    stored = await api.app[STORE].get_business_event("acme", "live", "evt-once")
    assert stored is not None
    await api.app[EVENT_PROCESSOR].process(stored)  # processing it again (a crash between commit and the next read)
    again = await wait_event(api, "evt-once")
    assert [o["notification_id"] for o in again["outcomes"]] == [o["notification_id"] for o in event["outcomes"]]
    _, listed = await api.get("/api/v1/notifications")
    assert len(listed["items"]) == 1


async def test_the_store_keeps_an_event_id_once_per_tenant_and_mode(fresh_store: Any) -> None:
    event = NewBusinessEvent("acme", "live", "e", "x", "low", {"event_id": "e"}, "tdk_acme_liv")
    assert await fresh_store.accept_business_event(event) is True
    assert await fresh_store.accept_business_event(event) is False


def _without(body: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: value for name, value in body.items() if name not in names}


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (_without(shipped("e"), "event_id"), 422, "validation_failed", "event_id"),
        (shipped(""), 422, "validation_failed", "event_id"),
        (shipped("x" * 256), 422, "validation_failed", "event_id"),
        (shipped("a/b"), 422, "validation_failed", "event_id"),
        (shipped("e", event_name="order shipped!"), 422, "validation_failed", "event_name"),
        (_without(shipped("e"), "event_name"), 422, "validation_failed", "event_name"),
        (shipped("e", severity="urgent"), 422, "validation_failed", "severity"),
        (shipped("e", occurred_at="2027-01-01T10:00:00"), 422, "validation_failed", "occurred_at"),
        (shipped("e", occurred_at="yesterday"), 422, "validation_failed", "occurred_at"),
        (shipped("e", actor={"type": "user"}), 422, "validation_failed", "actor.id"),
        (shipped("e", colour="red"), 422, "validation_failed", "colour"),
        (shipped("e", data=[1, 2]), 422, "validation_failed", "data"),
        (shipped("e", recipient={}), 422, "validation_failed", "recipient"),
        (shipped("e", recipient={"phone": ["+1"]}), 422, "validation_failed", "recipient.phone"),
        (shipped("e", recipient={"email": "a" * 400}), 422, "validation_failed", "recipient.email"),
        (_without(shipped("e"), "recipient"), 422, "missing_recipient", "recipient"),
        (shipped("e", contact_id="ctc_1"), 422, "conflicting_recipients", "recipient"),
        (_without(shipped("e"), "recipient") | {"recipients": []}, 422, "validation_failed", "recipients"),
        (_without(shipped("e"), "recipient") | {"recipients": [{}]}, 422, "validation_failed", "recipients"),
        (_without(shipped("e"), "recipient") | {"recipients": [{"phone": "+14155550100"}] * 1001}, 413, "too_many_recipients", None),
        (shipped("e", data={"blob": "x" * 70_000}), 413, "event_data_too_large", None),
    ],
)
async def test_a_bad_event_is_refused_with_a_clear_code_and_nothing_is_kept(
    api: Api, body: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    got, error = await post_event(api, body)
    assert (got, error["error"]["code"]) == (status, code), error
    if field is not None:
        assert any(detail["field"].startswith(field) for detail in error["error"]["details"]), error
    _, listed = await api.get("/api/v1/events")
    assert listed["items"] == []


async def test_an_event_that_is_not_json_or_has_no_key_is_refused(api: Api) -> None:
    response = await api.client.post("/api/v1/events", data="not json", headers=api.headers(**{"Content-Type": "application/json"}))
    assert (response.status, (await response.json())["error"]["code"]) == (400, "invalid_json")
    response = await api.client.post("/api/v1/events", json=shipped("e"))
    assert response.status == 401
    status, error = await api.get("/api/v1/events?limit=0")
    assert (status, error["error"]["code"]) == (400, "invalid_parameter")


async def test_an_event_processing_fails_on_is_recorded_and_holds_up_none_behind_it(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.engine import event_processor

    real = event_processor.matching_routes

    def broken(routes: Any, tenant: str, event: Any) -> list[str]:
        if event.name == "order.boom":
            raise KeyError("a bug")
        return real(routes, tenant, event)

    monkeypatch.setattr(event_processor, "matching_routes", broken)
    await post_event(api, shipped("evt-boom", event_name="order.boom"))
    after = await processed(api, shipped("evt-after"))
    failed = await wait_event(api, "evt-boom")
    assert failed["outcomes"][0]["reason"] == "processing_failed"
    assert after["outcomes"][0]["result"] == "notified"


async def test_processed_events_are_purged_with_the_tenants_retention(api: Api, clock: Any) -> None:
    from gateway.http.appkeys import PURGER

    await processed(api, shipped("evt-old"))
    clock.advance(31 * 86400)  # acme keeps the default 30 days
    await processed(api, shipped("evt-new"))
    await api.app[PURGER].purge()
    assert (await api.get("/api/v1/events/evt-old"))[0] == 404
    assert (await api.get("/api/v1/events/evt-new"))[0] == 200
