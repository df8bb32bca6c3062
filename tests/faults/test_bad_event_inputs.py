"""Hostile input at the surfaces of business events, contacts and acknowledgements: a 4xx with a code, and nothing written.

A real server on loopback over a real SQLite file, with a contact and a processed event in
place. Every case is sent as bytes (so a body may be what no JSON encoder writes: a lone
surrogate, an array, nothing), its answer must be the error envelope with the case's status and
code, and the rows those endpoints write must read exactly as before, straight from the file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import LIVE_KEY, OTHER_KEY, Api, FakeClock, MemoryProvider
from events_support import ROUTES, post_event, processed, shipped, wait_event

from gateway.http.appkeys import SETTINGS

JSON = "application/json"
EVENTS = "/api/v1/events"
CONTACTS = "/api/v1/contacts"
UNKNOWN_NOTIFICATION = "ntf_01HZZZZZZZZZZZZZZZZZZZZZZZ"
LONG = "x" * 10_000
WRITTEN = {
    "business_events": "SELECT * FROM business_events",
    "event_outcomes": "SELECT * FROM event_outcomes",
    "event_dedupe": "SELECT * FROM event_dedupe",
    "repeat_holds": "SELECT * FROM repeat_holds",
    "digests": "SELECT * FROM digests",
    "digest_items": "SELECT * FROM digest_items",
    "contacts": "SELECT * FROM contacts",
    "contact_counts": "SELECT * FROM contact_counts",
    "contact_erasures": "SELECT * FROM contact_erasures",
    "acknowledgements": "SELECT id, acknowledged_by, acknowledged_at, acknowledged_note FROM notifications",
}
"""Every row the event, contact and acknowledgement endpoints write, read as an operator would."""


BREAKABLE = """
templates:
  short:
    channels:
      sms: {body: "Hi {{ name | truncate(3) }}"}
  short_digest:
    channels:
      sms: {body: "{% if count > 1 %}{{ events[0].name | truncate(3) }}{% endif %}{{ count }} events"}
routes:
  breaks-at-render:
    match: {event: "render.*"}
    notify: {template: short, channels: [sms]}
  breaks-when-due:
    match: {event: "digest.*"}
    notify: {template: short_digest, channels: [sms]}
    digest: {every: 1h}
"""
"""Routes whose templates an event's data can break: ``truncate`` of a number, and a digest that only reads its first event
once it holds two (so each event renders alone, and the digest fails only when it is due)."""


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    (policy_dir / "routes.yaml").write_text(ROUTES)
    (policy_dir / "breakable.yaml").write_text(BREAKABLE)
    return policy_dir


def rows(api: Api) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(f"file:{api.app[SETTINGS].database_path}?mode=ro", uri=True) as conn:
        return {table: sorted(tuple(row) for row in conn.execute(sql)) for table, sql in WRITTEN.items()}


def event(**fields: Any) -> bytes:
    return orjson.dumps(shipped("evt-bad") | fields)


def without_recipient(**fields: Any) -> bytes:
    body = shipped("evt-bad")
    del body["recipient"]
    return orjson.dumps(body | fields)


def nested(depth: int) -> bytes:
    return b'{"a": ' * (depth - 1) + b"1" + b"}" * (depth - 1)


def wide_recipients() -> bytes:
    """1,000 valid-looking recipients whose addresses together take the event past 512 KiB."""
    rows = [{"email": f"{n}{'a' * 300}@example.com", "slack_user_id": "U" + "A" * 300} for n in range(1000)]
    return without_recipient(recipients=rows)


CONTACT = "{contact}"  # replaced by the id of the contact in place
NOTIFICATION = "{notification}"  # replaced by the id of a notification in place
# (what it is, method, path, content type, body, status, code)
CASES: list[tuple[str, str, str, str | None, bytes, int, str]] = [
    # POST /api/v1/events
    ("event: no body", "POST", EVENTS, JSON, b"", 400, "invalid_json"),
    ("event: not JSON", "POST", EVENTS, JSON, b"{event", 400, "invalid_json"),
    ("event: as text/plain", "POST", EVENTS, "text/plain", event(), 415, "unsupported_media_type"),
    ("event: no content type", "POST", EVENTS, None, event(), 415, "unsupported_media_type"),
    ("event: an array", "POST", EVENTS, JSON, b"[]", 422, "validation_failed"),
    ("event: null", "POST", EVENTS, JSON, b"null", 422, "validation_failed"),
    ("event: a lone surrogate in event_id", "POST", EVENTS, JSON, event(event_id="x")[:-1].replace(b'"x"', b'"\\ud800"') + b"}", 400,
     "invalid_json"),
    ("event: event_id a number", "POST", EVENTS, JSON, event(event_id=42), 422, "validation_failed"),
    ("event: event_id a float", "POST", EVENTS, JSON, event(event_id=4.2), 422, "validation_failed"),
    ("event: event_id true", "POST", EVENTS, JSON, event(event_id=True), 422, "validation_failed"),
    ("event: event_id null", "POST", EVENTS, JSON, event(event_id=None), 422, "validation_failed"),
    ("event: event_id an object", "POST", EVENTS, JSON, event(event_id={"a": 1}), 422, "validation_failed"),
    ("event: event_id '.'", "POST", EVENTS, JSON, event(event_id="."), 422, "validation_failed"),
    ("event: event_id '..'", "POST", EVENTS, JSON, event(event_id=".."), 422, "validation_failed"),
    ("event: event_id with a /", "POST", EVENTS, JSON, event(event_id="a/b"), 422, "validation_failed"),
    ("event: event_id with a NUL", "POST", EVENTS, JSON, event(event_id="a\x00b"), 422, "validation_failed"),
    ("event: event_id of 10 KB", "POST", EVENTS, JSON, event(event_id=LONG), 422, "validation_failed"),
    ("event: event_name a number", "POST", EVENTS, JSON, event(event_name=7), 422, "validation_failed"),
    ("event: event_name with an RTL mark", "POST", EVENTS, JSON, event(event_name="order\u202eshipped"), 422, "validation_failed"),
    ("event: event_name of 10 KB", "POST", EVENTS, JSON, event(event_name=LONG), 422, "validation_failed"),
    ("event: source a number", "POST", EVENTS, JSON, event(source=1), 422, "validation_failed"),
    ("event: source with a NUL", "POST", EVENTS, JSON, event(source="bill\x00ing"), 422, "validation_failed"),
    ("event: source with a line break", "POST", EVENTS, JSON, event(source="billing\nFAKE LOG LINE"), 422, "validation_failed"),
    ("event: source of 10 KB", "POST", EVENTS, JSON, event(source=LONG), 422, "validation_failed"),
    ("event: severity in capitals", "POST", EVENTS, JSON, event(severity="CRITICAL"), 422, "validation_failed"),
    ("event: severity a number", "POST", EVENTS, JSON, event(severity=4), 422, "validation_failed"),
    ("event: occurred_at a number", "POST", EVENTS, JSON, event(occurred_at=1_700_000_000), 422, "validation_failed"),
    ("event: actor an array", "POST", EVENTS, JSON, event(actor=["user", "1"]), 422, "validation_failed"),
    ("event: actor id a number", "POST", EVENTS, JSON, event(actor={"type": "user", "id": 1}), 422, "validation_failed"),
    ("event: actor id with a NUL", "POST", EVENTS, JSON, event(actor={"type": "user", "id": "1\x00"}), 422, "validation_failed"),
    ("event: recipient an array", "POST", EVENTS, JSON, event(recipient=[{"phone": "+14155550100"}]), 422, "validation_failed"),
    ("event: recipient a string", "POST", EVENTS, JSON, event(recipient="+14155550100"), 422, "validation_failed"),
    ("event: an address a float", "POST", EVENTS, JSON, event(recipient={"phone": 14155550100.5}), 422, "validation_failed"),
    ("event: an address true", "POST", EVENTS, JSON, event(recipient={"phone": True}), 422, "validation_failed"),
    ("event: a huge number as an address", "POST", EVENTS, JSON, event(recipient={"phone": 1})[:-1].replace(b":1}", b":1" + b"0" * 40 + b"}")
     + b"}", 422, "validation_failed"),
    ("event: recipients an object", "POST", EVENTS, JSON, without_recipient(recipients={"phone": "+14155550100"}), 422, "validation_failed"),
    ("event: recipients of numbers", "POST", EVENTS, JSON, without_recipient(recipients=[1, 2]), 422, "validation_failed"),
    ("event: contact_id a number", "POST", EVENTS, JSON, without_recipient(contact_id=5), 422, "validation_failed"),
    ("event: external_id with a line break", "POST", EVENTS, JSON, without_recipient(external_id="u-1\r\nX: y"), 422, "validation_failed"),
    ("event: external_id of 10 KB", "POST", EVENTS, JSON, without_recipient(external_id=LONG), 422, "validation_failed"),
    ("event: data an array", "POST", EVENTS, JSON, event(data=[1]), 422, "validation_failed"),
    ("event: data a string", "POST", EVENTS, JSON, event(data="{}"), 422, "validation_failed"),
    ("event: data null", "POST", EVENTS, JSON, event(data=None), 422, "validation_failed"),
    ("event: data 40 levels deep", "POST", EVENTS, JSON, event(data={"x": 1}).replace(b'{"x":1}', nested(40)), 422, "validation_failed"),
    ("event: data over 64 KiB", "POST", EVENTS, JSON, event(data={"blob": "x" * 70_000}), 413, "event_data_too_large"),
    ("event: over 512 KiB in all", "POST", EVENTS, JSON, wide_recipients(), 413, "event_too_large"),
    ("event: an unknown field", "POST", EVENTS, JSON, event(tenant="other"), 422, "validation_failed"),
    # GET /api/v1/events and /api/v1/events/{id}
    ("events: event_name not UTF-8", "GET", f"{EVENTS}?event_name=%FF", None, b"", 400, "invalid_parameter"),
    ("events: event_name with a NUL", "GET", f"{EVENTS}?event_name=order%00shipped", None, b"", 400, "invalid_parameter"),
    ("events: event_name of 10 KB", "GET", f"{EVENTS}?event_name={LONG}", None, b"", 400, "invalid_parameter"),
    ("events: a bogus cursor", "GET", f"{EVENTS}?cursor=bogus", None, b"", 400, "invalid_parameter"),
    ("events: a cursor not UTF-8", "GET", f"{EVENTS}?cursor=%FF%FE", None, b"", 400, "invalid_parameter"),
    ("events: a notification's cursor", "GET", f"{EVENTS}?cursor=ntf_01HZZZZZZZZZZZZZZZZZZZZZZZ", None, b"", 400, "invalid_parameter"),
    ("events: limit a float", "GET", f"{EVENTS}?limit=1.5", None, b"", 400, "invalid_parameter"),
    ("event: an unknown id", "GET", f"{EVENTS}/evt-none", None, b"", 404, "event_not_found"),
    ("event: an id of 10 KB", "GET", f"{EVENTS}/{LONG}", None, b"", 404, "event_not_found"),
    ("event: an id with %2F", "GET", f"{EVENTS}/evt-ok%2Fx", None, b"", 404, "event_not_found"),
    ("event: an id not UTF-8", "GET", f"{EVENTS}/%FF", None, b"", 404, "event_not_found"),
    ("event: an id with a NUL", "GET", f"{EVENTS}/evt-ok%00", None, b"", 404, "event_not_found"),
    # POST /api/v1/contacts
    ("contact: no body", "POST", CONTACTS, JSON, b"", 400, "invalid_json"),
    ("contact: as a form", "POST", CONTACTS, "application/x-www-form-urlencoded", b"email=a@example.com", 415, "unsupported_media_type"),
    ("contact: an array", "POST", CONTACTS, JSON, b'[{"email": "a@example.com"}]', 422, "validation_failed"),
    ("contact: a string", "POST", CONTACTS, JSON, b'"a@example.com"', 422, "validation_failed"),
    ("contact: a lone surrogate", "POST", CONTACTS, JSON, b'{"email": "\\udfff@example.com"}', 400, "invalid_json"),
    ("contact: email a number", "POST", CONTACTS, JSON, b'{"email": 5}', 422, "invalid_recipient"),
    ("contact: email an array", "POST", CONTACTS, JSON, b'{"email": ["a@example.com"]}', 422, "invalid_recipient"),
    ("contact: phone not E.164", "POST", CONTACTS, JSON, b'{"phone": "0800 FLOWERS"}', 422, "invalid_recipient"),
    ("contact: an unknown field", "POST", CONTACTS, JSON, b'{"email": "a@example.com", "tenant": "other"}', 422, "unknown_field"),
    ("contact: external_id a number", "POST", CONTACTS, JSON, b'{"external_id": 42}', 422, "validation_failed"),
    ("contact: external_id with a NUL", "POST", CONTACTS, JSON, b'{"external_id": "u\\u0000-2"}', 422, "validation_failed"),
    ("contact: external_id with a line break", "POST", CONTACTS, JSON, b'{"external_id": "u-2\\n"}', 422, "validation_failed"),
    ("contact: external_id of 10 KB", "POST", CONTACTS, JSON, orjson.dumps({"external_id": LONG}), 422, "validation_failed"),
    ("contact: locale a path", "POST", CONTACTS, JSON, b'{"locale": "../../etc"}', 422, "validation_failed"),
    ("contact: timezone a path", "POST", CONTACTS, JSON, b'{"timezone": "../../../../etc/passwd"}', 422, "invalid_timezone"),
    ("contact: timezone absolute", "POST", CONTACTS, JSON, b'{"timezone": "/etc/localtime"}', 422, "invalid_timezone"),
    ("contact: timezone a number", "POST", CONTACTS, JSON, b'{"timezone": 1}', 422, "validation_failed"),
    ("contact: preferences an array", "POST", CONTACTS, JSON, b'{"preferences": []}', 422, "validation_failed"),
    ("contact: a preference a string", "POST", CONTACTS, JSON, b'{"preferences": {"channels": {"sms": "no"}}}', 422, "validation_failed"),
    ("contact: a preference 1", "POST", CONTACTS, JSON, b'{"preferences": {"channels": {"sms": 1}}}', 422, "validation_failed"),
    ("contact: a preference for no channel", "POST", CONTACTS, JSON, b'{"preferences": {"channels": {"pigeon": false}}}', 422,
     "unknown_channel"),
    ("contact: metadata nested", "POST", CONTACTS, JSON, b'{"metadata": {"a": {"b": 1}}}', 422, "validation_failed"),
    ("contact: metadata a null value", "POST", CONTACTS, JSON, b'{"metadata": {"a": null}}', 422, "validation_failed"),
    ("contact: 33 metadata values", "POST", CONTACTS, JSON, orjson.dumps({"metadata": {str(n): n for n in range(33)}}), 422,
     "validation_failed"),
    ("contact: a metadata text of 1,025", "POST", CONTACTS, JSON, orjson.dumps({"metadata": {"a": "x" * 1025}}), 422, "validation_failed"),
    ("contact: a metadata key of 65", "POST", CONTACTS, JSON, orjson.dumps({"metadata": {"k" * 65: 1}}), 422, "validation_failed"),
    ("contact: nested 40 levels", "POST", CONTACTS, JSON, nested(40), 422, "validation_failed"),
    # GET, PATCH, DELETE /api/v1/contacts/{id}
    ("contacts: a bogus cursor", "GET", f"{CONTACTS}?cursor=bogus", None, b"", 400, "invalid_parameter"),
    ("contacts: an event's cursor", "GET", f"{CONTACTS}?cursor=t{'A' * 10}", None, b"", 400, "invalid_parameter"),
    ("contacts: limit 0", "GET", f"{CONTACTS}?limit=0", None, b"", 400, "invalid_parameter"),
    ("contact: an unknown id", "GET", f"{CONTACTS}/ctc_01HZZZZZZZZZZZZZZZZZZZZZZZ", None, b"", 404, "contact_not_found"),
    ("contact: not a contact id", "GET", f"{CONTACTS}/ntf_01HZZZZZZZZZZZZZZZZZZZZZZZ", None, b"", 404, "contact_not_found"),
    ("contact: an id of 10 KB", "GET", f"{CONTACTS}/ctc_{LONG}", None, b"", 404, "contact_not_found"),
    ("contact: an id not UTF-8", "GET", f"{CONTACTS}/ctc_%FF", None, b"", 404, "contact_not_found"),
    ("contact: an id with ..", "GET", f"{CONTACTS}/ctc_..", None, b"", 404, "contact_not_found"),
    ("patch: an array", "PATCH", f"{CONTACTS}/{CONTACT}", JSON, b'[{"op": "remove", "path": "/email"}]', 422, "validation_failed"),
    ("patch: a string", "PATCH", f"{CONTACTS}/{CONTACT}", JSON, b'"x"', 422, "validation_failed"),
    ("patch: null", "PATCH", f"{CONTACTS}/{CONTACT}", JSON, b"null", 422, "validation_failed"),
    ("patch: no body", "PATCH", f"{CONTACTS}/{CONTACT}", JSON, b"", 400, "invalid_json"),
    ("patch: as text", "PATCH", f"{CONTACTS}/{CONTACT}", "text/plain", b'{"locale": "pt"}', 415, "unsupported_media_type"),
    ("patch: email a number", "PATCH", f"{CONTACTS}/{CONTACT}", JSON, b'{"email": 1}', 422, "invalid_recipient"),
    ("patch: preferences a string", "PATCH", f"{CONTACTS}/{CONTACT}", JSON, b'{"preferences": "none"}', 422, "validation_failed"),
    ("patch: another contact's external_id", "PATCH", f"{CONTACTS}/{CONTACT}", JSON, b'{"external_id": "u-other"}', 409,
     "external_id_taken"),
    ("patch: an unknown contact", "PATCH", f"{CONTACTS}/ctc_01HZZZZZZZZZZZZZZZZZZZZZZZ", JSON, b'{"locale": "pt"}', 404, "contact_not_found"),
    ("patch: an id of 10 KB", "PATCH", f"{CONTACTS}/{LONG}", JSON, b'{"locale": "pt"}', 404, "contact_not_found"),
    ("delete: an unknown contact", "DELETE", f"{CONTACTS}/ctc_01HZZZZZZZZZZZZZZZZZZZZZZZ", None, b"", 404, "contact_not_found"),
    ("delete: an id of 10 KB", "DELETE", f"{CONTACTS}/ctc_{LONG}", None, b"", 404, "contact_not_found"),
    ("delete: not a contact id", "DELETE", f"{CONTACTS}/..%2F..", None, b"", 404, "contact_not_found"),
    # POST /api/v1/notifications/{id}/acknowledge
    ("ack: an unknown notification", "POST", f"/api/v1/notifications/{UNKNOWN_NOTIFICATION}/acknowledge", None, b"", 404,
     "notification_not_found"),
    ("ack: not a notification id", "POST", "/api/v1/notifications/evt-ok/acknowledge", None, b"", 404, "notification_not_found"),
    ("ack: an id of 10 KB", "POST", f"/api/v1/notifications/ntf_{LONG}/acknowledge", None, b"", 404, "notification_not_found"),
    ("ack: an array", "POST", f"/api/v1/notifications/{NOTIFICATION}/acknowledge", JSON, b"[]", 422, "validation_failed"),
    ("ack: note a number", "POST", f"/api/v1/notifications/{NOTIFICATION}/acknowledge", JSON, b'{"note": 1}', 422, "validation_failed"),
    ("ack: note of 1,001", "POST", f"/api/v1/notifications/{NOTIFICATION}/acknowledge", JSON, orjson.dumps({"note": "x" * 1001}), 422,
     "validation_failed"),
    ("ack: note a lone surrogate", "POST", f"/api/v1/notifications/{NOTIFICATION}/acknowledge", JSON, b'{"note": "\\ud800"}', 400,
     "invalid_json"),
    ("ack: an unknown field", "POST", f"/api/v1/notifications/{NOTIFICATION}/acknowledge", JSON, b'{"by": "someone else"}', 422,
     "validation_failed"),
    ("ack: a body as text", "POST", f"/api/v1/notifications/{NOTIFICATION}/acknowledge", "text/plain", b"seen", 415, "unsupported_media_type"),
    # The list filters of notifications these steps added
    ("notifications: status unknown", "GET", "/api/v1/notifications?status=dead_lettered", None, b"", 400, "invalid_parameter"),
    ("notifications: status not UTF-8", "GET", "/api/v1/notifications?status=%FF", None, b"", 400, "invalid_parameter"),
    ("notifications: status of 10 KB", "GET", f"/api/v1/notifications?status={LONG}", None, b"", 400, "invalid_parameter"),
    ("notifications: delivery_status unknown", "GET", "/api/v1/notifications?delivery_status=read%00", None, b"", 400, "invalid_parameter"),
]


@pytest.fixture
async def in_place(api: Api) -> dict[str, str]:
    """A live contact (and another with external_id ``u-other``) and a processed event with its notification."""
    ids = {}
    for external_id in ("u-1", "u-other"):
        response = await api.client.post(CONTACTS, json={"external_id": external_id, "email": "ana@example.com"}, headers=api.headers())
        assert response.status == 201
        ids[external_id] = (await response.json())["contact_id"]
    done = await processed(api, shipped("evt-ok"))
    return {CONTACT: ids["u-1"], NOTIFICATION: done["outcomes"][0]["notification_id"]}


@pytest.mark.parametrize(("what", "method", "path", "content_type", "body", "status", "code"), CASES, ids=[case[0] for case in CASES])
async def test_bad_input_to_events_contacts_and_acknowledgements_is_a_4xx_and_writes_nothing(
    api: Api, in_place: dict[str, str], what: str, method: str, path: str, content_type: str | None, body: bytes, status: int, code: str
) -> None:
    for name, value in in_place.items():
        path = path.replace(name, value)
    before = rows(api)
    headers = api.headers(**({"Content-Type": content_type} if content_type else {}))
    response = await api.client.request(method, path, data=body or None, headers=headers)
    raw = await response.read()
    answer = orjson.loads(raw)
    assert (response.status, answer["error"]["code"]) == (status, code), (what, raw[:300])
    assert isinstance(answer["error"]["message"], str) and isinstance(answer["error"]["details"], list)
    assert rows(api) == before, "nothing was written"


async def test_data_that_breaks_a_template_is_a_recorded_suppression_and_holds_up_no_other_tenant(
    api: Api, clock: FakeClock, memory_provider: type[MemoryProvider]
) -> None:
    to = {"recipient": {"phone": "+14155550100"}}
    for body in (
        {"event_id": "render-number", "event_name": "render.x", "data": {"name": 12345}},
        {"event_id": "render-missing", "event_name": "render.x", "data": {}},
        {"event_id": "digest-number", "event_name": "digest.x", "data": {"name": 12345}},
        {"event_id": "digest-text", "event_name": "digest.x", "data": {"name": "Ada"}},
    ):
        assert (await post_event(api, body | to))[0] == 202
    other = await processed(api, shipped("other-after"), key=OTHER_KEY)
    assert [outcome["result"] for outcome in other["outcomes"]] == ["notified", "notified"], "another tenant's event went on"

    results = {event_id: (await wait_event(api, event_id))["outcomes"][0] for event_id in ("render-number", "render-missing", "digest-text")}
    assert (results["render-number"]["result"], results["render-number"]["reason"]) == ("suppressed", "template_render_failed")
    assert (results["render-missing"]["result"], results["render-missing"]["reason"]) == ("suppressed", "missing_variables")
    assert results["digest-text"]["result"] == "digested"

    clock.advance(3600)
    due = await wait_event(api, "digest-text", lambda e: e["outcomes"][0]["digest"]["status"] != "open")
    assert (due["outcomes"][0]["digest"]["status"], due["outcomes"][0]["reason"]) == ("failed", "template_render_failed")
    after = await processed(api, {"event_id": "render-after", "event_name": "render.x", "data": {"name": "Grace"}} | to)
    assert after["outcomes"][0]["result"] == "notified", "the processor and the digest sender carry on"
    await api.idle()
    assert "Hi Grace" in [message.body for message in memory_provider.sent]


async def test_no_view_of_an_event_or_acknowledgement_shows_the_api_key(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    done = await processed(api, shipped("evt-keyed"))
    notification_id = done["outcomes"][0]["notification_id"]
    answers = []
    for method, path in (("GET", f"{EVENTS}/evt-keyed"), ("GET", EVENTS), ("POST", f"/api/v1/notifications/{notification_id}/acknowledge"),
                         ("GET", f"/api/v1/notifications/{notification_id}")):
        response = await api.client.request(method, path, headers=api.headers())
        assert response.status == 200
        answers.append(await response.read())
    assert done["received_by"] == LIVE_KEY[:12], "the key's prefix (its public label, in policy) when it has no name"
    for raw in answers:
        assert LIVE_KEY.encode() not in raw
    assert LIVE_KEY not in caplog.text
