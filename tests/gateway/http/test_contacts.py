"""``/api/v1/contacts`` and sending to a contact: a real server on loopback over a real SQLite file.

CRUD and upsert by ``external_id``; bad input refused with nothing written; tenants and modes
apart; sends and bulk rows naming a contact; preferences, legal opt-outs and ``critical``;
translations picked by locale; deleting a contact erasing its addresses from what is stored.
"""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import OTHER_KEY, TEST_KEY, Api, MemoryProvider

from gateway.http.appkeys import ERASER, SETTINGS, STORE

EMAIL = "ana.silva@example.com"
PHONE = "+351912345678"
TRANSLATED = """
templates:
  welcome:
    category: onboarding
    channels:
      email: {subject: "Welcome", body: "Hello {{ name }}"}
      sms: {body: "Hello {{ name }}"}
    translations:
      pt: {channels: {email: {subject: "Bem-vindo", body: "Olá {{ name }}"}, sms: {body: "Olá {{ name }}"}}}
      pt-BR: {channels: {sms: {body: "Oi {{ name }}"}}}
"""


@pytest.fixture
def policy_dir(policy_dir: Path) -> Path:
    (policy_dir / "contacts.yaml").write_text(textwrap.dedent(TRANSLATED))
    return policy_dir


async def call(api: Api, method: str, path: str, body: Any = None, *, key: str | None = None) -> tuple[int, Any]:
    response = await api.client.request(method, path, json=body, headers=api.headers(key))
    return response.status, (await response.json() if response.status != 204 else None)


async def create(api: Api, key: str | None = None, **fields: Any) -> dict[str, Any]:
    status, body = await call(api, "POST", "/api/v1/contacts", {"email": EMAIL, "phone": PHONE} | fields, key=key)
    assert status == 201, body
    return body  # type: ignore[no-any-return]


def to_contact(contact_id: str, channels: list[str], **notification: Any) -> dict[str, Any]:
    content = {"channels": channels, "subject": "Hi", "body": "Hello"} | notification
    return {"recipient": {"contact_id": contact_id}, "notification": content}


def by_channel(notification: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {d["channel"]: (d["status"], d["skip_reason"]) for d in notification["deliveries"]}


# -- the contact itself --------------------------------------------------------------------


async def test_a_contact_is_created_read_listed_patched_and_deleted(api: Api) -> None:
    contact = await create(
        api, external_id="u-42", locale="pt-BR", timezone="Europe/Lisbon", metadata={"plan": "pro"},
        preferences={"channels": {"sms": False}, "categories": {"marketing": False}},
    )
    contact_id = contact["contact_id"]
    assert contact_id.startswith("ctc_") and contact["mode"] == "live"
    assert (contact["email"], contact["phone"], contact["external_id"]) == (EMAIL, PHONE, "u-42")
    assert contact["preferences"] == {"channels": {"sms": False}, "categories": {"marketing": False}}
    assert contact["opt_outs"] == []

    assert await call(api, "GET", f"/api/v1/contacts/{contact_id}") == (200, contact)
    status, listed = await call(api, "GET", "/api/v1/contacts?external_id=u-42")
    assert status == 200 and [item["contact_id"] for item in listed["items"]] == [contact_id]

    # A merge patch: null removes a field (here an address and a preference), the rest is merged.
    status, patched = await call(
        api, "PATCH", f"/api/v1/contacts/{contact_id}",
        {"phone": None, "slack_user_id": "U024BE7LH", "preferences": {"channels": {"sms": None, "email": True}}},
    )
    assert status == 200, patched
    assert "phone" not in patched and patched["slack_user_id"] == "U024BE7LH" and patched["email"] == EMAIL
    assert patched["preferences"] == {"channels": {"email": True}, "categories": {"marketing": False}}
    assert (patched["external_id"], patched["locale"], patched["metadata"]) == ("u-42", "pt-BR", {"plan": "pro"})

    assert await call(api, "DELETE", f"/api/v1/contacts/{contact_id}") == (204, None)
    status, gone = await call(api, "GET", f"/api/v1/contacts/{contact_id}")
    assert (status, gone["error"]["code"]) == (404, "contact_not_found")
    assert (await call(api, "DELETE", f"/api/v1/contacts/{contact_id}"))[0] == 404


async def test_a_post_with_a_known_external_id_replaces_that_contact(api: Api) -> None:
    first = await create(api, external_id="u-42", locale="en")
    status, again = await call(api, "POST", "/api/v1/contacts", {"external_id": "u-42", "email": "new@example.com"})
    assert status == 200, again
    assert again["contact_id"] == first["contact_id"] and again["created_at"] == first["created_at"]
    assert again["email"] == "new@example.com" and "phone" not in again and again["locale"] is None
    status, listed = await call(api, "GET", "/api/v1/contacts")
    assert [item["contact_id"] for item in listed["items"]] == [first["contact_id"]]


async def test_contacts_are_listed_newest_first_a_page_at_a_time(api: Api) -> None:
    made = [(await create(api, external_id=f"u-{n}"))["contact_id"] for n in range(3)]
    status, first = await call(api, "GET", "/api/v1/contacts?limit=2")
    assert status == 200 and [item["contact_id"] for item in first["items"]] == made[:0:-1]
    status, second = await call(api, "GET", f"/api/v1/contacts?limit=2&cursor={first['next_cursor']}")
    assert [item["contact_id"] for item in second["items"]] == [made[0]] and second["next_cursor"] is None
    status, bad = await call(api, "GET", "/api/v1/contacts?cursor=bm9wZQ")
    assert (status, bad["error"]["code"]) == (400, "invalid_parameter")


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"email": "not-an-email"}, "email", "invalid_recipient"),
        ({"phone": "912345678"}, "phone", "invalid_recipient"),
        ({"phone": True}, "phone", "invalid_recipient"),
        ({"fax": "+351212345678"}, "fax", "unknown_field"),
        ({"external_id": "x" * 256}, "external_id", "validation_failed"),
        ({"external_id": ""}, "external_id", "validation_failed"),
        ({"email": "a@example.com", "metadata": {f"k{n}": n for n in range(33)}}, "metadata", "validation_failed"),
        ({"metadata": {"note": "x" * 1025}}, "metadata.note", "validation_failed"),
        ({"locale": "Portuguese"}, "locale", "validation_failed"),
        ({"timezone": "Mars/Olympus"}, "timezone", "invalid_timezone"),
        ({"preferences": {"channels": {"fax": False}}}, "preferences.channels.fax", "unknown_channel"),
        ({"preferences": {"channels": {"sms": "no"}}}, "preferences.channels.sms", "validation_failed"),
        ({"preferences": {"categories": {"a b": False}}}, "preferences.categories.a b.[key]", "validation_failed"),
        ({"preferences": {"sms": False}}, "preferences.sms", "validation_failed"),
        ({"preferences": {"categories": {f"c{n}": False for n in range(65)}}}, "preferences.categories", "validation_failed"),
    ],
)
async def test_a_bad_contact_is_refused_with_a_code_and_nothing_is_written(api: Api, body: dict[str, Any], field: str, code: str) -> None:
    status, answer = await call(api, "POST", "/api/v1/contacts", body)
    assert status == 422, answer
    assert [(d["field"], d["code"]) for d in answer["error"]["details"]] == [(field, code)]
    assert (await call(api, "GET", "/api/v1/contacts"))[1]["items"] == []


async def test_a_bad_patch_is_refused_and_leaves_the_contact_as_it_was(api: Api) -> None:
    contact = await create(api, external_id="u-1")
    await create(api, external_id="u-2")
    path = f"/api/v1/contacts/{contact['contact_id']}"
    status, answer = await call(api, "PATCH", path, {"email": "nope"})
    assert (status, answer["error"]["details"][0]["code"]) == (422, "invalid_recipient")
    status, answer = await call(api, "PATCH", path, {"external_id": "u-2"})
    assert (status, answer["error"]["code"]) == (409, "external_id_taken")
    assert await call(api, "GET", path) == (200, contact)


async def test_a_tenant_holds_at_most_the_contacts_the_setting_allows_per_mode(aiohttp_client: Any, make_app: Any) -> None:
    api = Api(await aiohttp_client(make_app(max_contacts_per_tenant=2)))
    first = await create(api, external_id="u-1")
    await create(api, external_id="u-2")
    status, answer = await call(api, "POST", "/api/v1/contacts", {"external_id": "u-3", "email": EMAIL})
    assert (status, answer["error"]["code"]) == (409, "contact_limit_reached"), answer
    assert len((await call(api, "GET", "/api/v1/contacts"))[1]["items"]) == 2, "nothing was written"
    status, _ = await call(api, "POST", "/api/v1/contacts", {"external_id": "u-1", "email": "new@example.com"})
    assert status == 200, "replacing one by its external_id still works"
    assert (await call(api, "POST", "/api/v1/contacts", {"email": EMAIL}, key=TEST_KEY))[0] == 201, "the other mode counts apart"
    assert (await call(api, "POST", "/api/v1/contacts", {"email": EMAIL}, key=OTHER_KEY))[0] == 201, "so does another tenant"
    assert (await call(api, "DELETE", f"/api/v1/contacts/{first['contact_id']}"))[0] == 204
    assert (await call(api, "POST", "/api/v1/contacts", {"external_id": "u-3", "email": EMAIL}))[0] == 201, "a deleted one frees its place"
    status, answer = await call(api, "POST", "/api/v1/contacts", {"external_id": "u-4", "email": EMAIL})
    assert (status, answer["error"]["code"]) == (409, "contact_limit_reached")


async def test_another_tenant_and_the_other_mode_never_see_a_contact(api: Api) -> None:
    live = await create(api, external_id="u-42")
    path = f"/api/v1/contacts/{live['contact_id']}"
    for key in (OTHER_KEY, TEST_KEY):
        for method, body in (("GET", None), ("PATCH", {"locale": "en"}), ("DELETE", None)):
            status, answer = await call(api, method, path, body, key=key)
            assert (status, answer["error"]["code"]) == (404, "contact_not_found"), (key, method)
        assert (await call(api, "GET", "/api/v1/contacts?external_id=u-42", key=key))[1]["items"] == []
        status, answer = await api.send({"recipient": {"external_id": "u-42"}, "notification": {"channels": ["sms"], "body": "x"}}, key=key)
        assert (status, answer["error"]["code"]) == (422, "contact_not_found")
    # The test key's own contact with the same external id is another contact, unseen by the live key.
    test = await create(api, TEST_KEY, external_id="u-42")
    assert test["contact_id"] != live["contact_id"] and test["mode"] == "test"
    assert (await call(api, "GET", f"/api/v1/contacts/{test['contact_id']}"))[0] == 404
    assert (await call(api, "GET", path))[1]["external_id"] == "u-42"


# -- sending to a contact ------------------------------------------------------------------


async def test_a_send_names_a_contact_by_id_or_external_id(api: Api, memory_provider: type[MemoryProvider]) -> None:
    contact = await create(api, external_id="u-42")
    for recipient in ({"contact_id": contact["contact_id"]}, {"external_id": "u-42"}):
        status, accepted = await api.send({"recipient": recipient, "notification": {"channels": ["email"], "subject": "Hi", "body": "Hello"}})
        assert status == 202, accepted
        assert accepted["contact_id"] == contact["contact_id"] and accepted["status"] == "queued"
        done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
        assert done["contact_id"] == contact["contact_id"]
        assert done["recipient"] == {"email": EMAIL}  # the addresses used, not every address the contact has
        assert done["deliveries"][0]["address"] == EMAIL and done["deliveries"][0]["skip_reason"] is None
    assert [message.to for message in memory_provider.sent] == [EMAIL, EMAIL]


@pytest.mark.parametrize(
    ("recipient", "field", "code"),
    [
        ({"contact_id": "ctc_01J0000000000000000000000"}, "recipient.contact_id", "contact_not_found"),
        ({"external_id": "nobody"}, "recipient.external_id", "contact_not_found"),
        ({"contact_id": "ctc_x", "email": EMAIL}, "recipient.contact_id", "conflicting_recipient"),
        ({"external_id": 42}, "recipient.external_id", "invalid_recipient"),
    ],
)
async def test_a_send_naming_no_known_contact_is_refused(api: Api, recipient: dict[str, Any], field: str, code: str) -> None:
    status, answer = await api.send({"recipient": recipient, "notification": {"channels": ["sms"], "body": "x"}})
    assert status == 422 and answer["error"]["code"] == code
    assert [(d["field"], d["code"]) for d in answer["error"]["details"]] == [(field, code)]
    assert (await api.get("/api/v1/notifications"))[1]["items"] == []


async def test_bulk_rows_may_name_contacts_and_a_row_naming_none_is_refused(api: Api) -> None:
    ana = await create(api, external_id="u-1")
    rows = [
        {"contact_id": ana["contact_id"], "data": {"name": "Ana"}},
        {"external_id": "nobody", "data": {"name": "X"}},
        {"phone": "+14155550100", "data": {"name": "Bo"}},
        {"external_id": "u-1", "email": EMAIL},
    ]
    status, answer = await api.send_bulk({"channels": ["sms"], "template_id": "welcome", "recipients": rows})
    assert status == 202, answer
    assert [n["index"] for n in answer["notifications"]] == [0, 2]
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [(1, "contact_not_found"), (3, "conflicting_recipient")]
    first = await api.notification(answer["notifications"][0]["notification_id"])
    assert first["contact_id"] == ana["contact_id"] and first["deliveries"][0]["address"] == PHONE
    assert first["category"] == "onboarding"  # the template's


async def test_a_bulk_row_to_a_contact_whose_address_said_stop_is_accepted_with_that_channel_skipped(api: Api) -> None:
    contact = await create(api, external_id="u-1")
    await call(api, "POST", "/api/v1/opt-outs", {"channel": "sms", "address": PHONE})
    rows = [{"external_id": "u-1"}, {"phone": PHONE, "email": "bo@example.com"}]
    status, answer = await api.send_bulk({"channels": ["sms", "email"], "subject": "Hi", "body": "Hello", "recipients": rows})
    assert status == 202, answer
    assert [(e["index"], e["code"]) for e in answer["errors"]] == [(1, "recipient_opted_out")]  # an address given directly: refused
    (row,) = answer["notifications"]
    assert (row["index"], row["contact_id"]) == (0, contact["contact_id"])
    assert [(d["channel"], d["status"], d.get("skip_reason")) for d in row["deliveries"]] == [
        ("sms", "skipped", "opted_out"), ("email", "queued", None),
    ]


async def test_channels_the_contact_refuses_or_cannot_get_are_skipped_with_the_reason(api: Api, memory_provider: type[MemoryProvider]) -> None:
    contact = await create(api, preferences={"channels": {"sms": False}, "categories": {"marketing": False}})
    status, accepted = await api.send(to_contact(contact["contact_id"], ["email", "sms", "slack"]))
    assert status == 202
    assert {d["channel"]: (d["status"], d.get("skip_reason")) for d in accepted["deliveries"]} == {
        "email": ("queued", None), "sms": ("skipped", "channel_opted_out"), "slack": ("skipped", "no_address"),
    }
    done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    assert by_channel(done) == {"email": ("sent", None), "sms": ("skipped", "channel_opted_out"), "slack": ("skipped", "no_address")}
    assert done["recipient"] == {"email": EMAIL}
    skipped = [(e["delivery_id"], e["from_status"], e["to_status"], e["reason"]) for e in done["audit"] if e["action"] == "skipped"]
    sms, slack = (d["delivery_id"] for d in done["deliveries"][1:])
    assert skipped == [
        (sms, "queued", "skipped", "channel_opted_out: the contact opted out of this channel"),
        (slack, "queued", "skipped", "no_address: the contact has no address on this channel"),
    ]
    assert [message.channel for message in memory_provider.sent] == ["email"]


async def test_a_category_opt_out_skips_unless_the_message_is_critical(api: Api, memory_provider: type[MemoryProvider]) -> None:
    contact = await create(api, preferences={"categories": {"security": False}})
    status, accepted = await api.send(to_contact(contact["contact_id"], ["email", "sms"], category="security", severity="high"))
    assert status == 202 and accepted["status"] == "skipped"  # every channel skipped: nothing to send, still accepted
    skipped = await api.notification(accepted["notification_id"])
    assert skipped["status"] == "skipped" and (skipped["category"], skipped["severity"]) == ("security", "high")
    assert by_channel(skipped) == {"email": ("skipped", "category_opted_out"), "sms": ("skipped", "category_opted_out")}

    status, accepted = await api.send(to_contact(contact["contact_id"], ["email", "sms"], category="security", severity="critical"))
    assert status == 202
    done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    assert by_channel(done) == {"email": ("sent", None), "sms": ("sent", None)}
    await api.idle()
    assert len(memory_provider.sent) == 2


async def test_a_channel_preference_binds_even_a_critical_message(api: Api) -> None:
    contact = await create(api, preferences={"channels": {"sms": False}})
    _, accepted = await api.send(to_contact(contact["contact_id"], ["sms"], severity="critical"))
    assert accepted["deliveries"][0]["skip_reason"] == "channel_opted_out"


async def test_a_legal_opt_out_shows_on_the_contact_and_skips_its_channel_even_for_critical(
    api: Api, memory_provider: type[MemoryProvider]
) -> None:
    contact = await create(api, external_id="u-42", email="Ana.Silva@Example.com")
    for channel, address in (("sms", PHONE), ("email", EMAIL)):  # as a STOP reply or the tenant's unsubscribe page records them
        status, _ = await call(api, "POST", "/api/v1/opt-outs", {"channel": channel, "address": address})
        assert status == 201
    status, shown = await call(api, "GET", f"/api/v1/contacts/{contact['contact_id']}")
    assert [(o["channel"], o["address"]) for o in shown["opt_outs"]] == [("sms", PHONE), ("email", EMAIL)]  # by address
    # Not the contact's to change: the field is read-only, and preferences cannot lift it.
    status, answer = await call(api, "PATCH", f"/api/v1/contacts/{contact['contact_id']}", {"opt_outs": []})
    assert (status, answer["error"]["details"][0]["code"]) == (422, "unknown_field")
    await call(api, "PATCH", f"/api/v1/contacts/{contact['contact_id']}", {"preferences": {"channels": {"sms": True}}})

    status, accepted = await api.send(to_contact(contact["contact_id"], ["sms", "email"], severity="critical"))
    assert status == 202 and accepted["status"] == "skipped"
    found = await api.notification(accepted["notification_id"])
    assert by_channel(found) == {"sms": ("skipped", "opted_out"), "email": ("skipped", "opted_out")}
    assert found["recipient"] == {}
    await api.idle()
    assert memory_provider.sent == []
    # Sending to the address itself is still refused outright, as before contacts.
    status, answer = await api.send({"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "body": "x"}})
    assert (status, answer["error"]["code"]) == (422, "recipient_opted_out")


async def test_with_fallback_a_skipped_first_channel_hands_over_at_once(api: Api, memory_provider: type[MemoryProvider]) -> None:
    contact = await create(api, preferences={"channels": {"email": False}})
    body = to_contact(contact["contact_id"], ["email", "sms"], strategy="fallback", fallback_after="1h")
    status, accepted = await api.send(body)
    assert status == 202
    done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    assert by_channel(done) == {"email": ("skipped", "channel_opted_out"), "sms": ("sent", None)}
    assert [message.to for message in memory_provider.sent] == [PHONE]


@pytest.mark.parametrize(
    ("contact_locale", "send_locale", "sms", "email_subject", "picked"),
    [
        ("pt-BR", None, "Oi Ana", "Bem-vindo", "pt-BR"),  # exact (shown as policy spells it); email is not in pt-BR: its language's
        ("PT-br", None, "Oi Ana", "Bem-vindo", "pt-BR"),  # tags compare without regard to case
        ("pt-PT", None, "Olá Ana", "Bem-vindo", "pt"),  # the language part
        ("fr", None, "Hello Ana", "Welcome", None),  # none: the template's own
        (None, None, "Hello Ana", "Welcome", None),
        ("fr", "pt-BR", "Oi Ana", "Bem-vindo", "pt-BR"),  # the send's locale wins
    ],
)
async def test_the_contacts_locale_picks_a_translation(
    api: Api, contact_locale: str | None, send_locale: str | None, sms: str, email_subject: str, picked: str | None
) -> None:
    contact = await create(api, **({"locale": contact_locale} if contact_locale else {}))
    notification = {"channels": ["sms", "email"], "template_id": "welcome", "data": {"name": "Ana"}}
    if send_locale:
        notification["locale"] = send_locale
    status, accepted = await api.send({"recipient": {"contact_id": contact["contact_id"]}, "notification": notification})
    assert status == 202, accepted
    found = await api.notification(accepted["notification_id"])
    contents = {d["channel"]: d["content"] for d in found["deliveries"]}
    assert (contents["sms"]["body"], contents["email"]["subject"], found["locale"]) == (sms, email_subject, picked)


async def test_a_direct_send_may_name_its_locale_category_and_severity(api: Api) -> None:
    body = {"recipient": {"phone": PHONE}, "notification": {"channels": ["sms"], "template_id": "welcome", "data": {"name": "Ana"},
                                                            "locale": "pt", "category": "news", "severity": "low"}}
    status, accepted = await api.send(body)
    assert status == 202, accepted
    found = await api.notification(accepted["notification_id"])
    assert (found["locale"], found["category"], found["severity"], found["contact_id"]) == ("pt", "news", "low", None)
    assert found["deliveries"][0]["content"]["body"] == "Olá Ana"
    for bad in ({"severity": "urgent"}, {"category": "no spaces please"}, {"locale": "português"}):
        status, answer = await api.send(body | {"notification": body["notification"] | bad})
        assert (status, answer["error"]["code"]) == (422, "validation_failed"), bad


# -- deleting a contact erases its addresses -----------------------------------------------


def stored_text(api: Api) -> str:
    """Every table of the server's own SQLite file, dumped as an operator would read it."""
    with sqlite3.connect(f"file:{api.app[SETTINGS].database_path}?mode=ro", uri=True) as conn:
        return "\n".join(conn.iterdump())


def opt_out_rows(api: Api) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{api.app[SETTINGS].database_path}?mode=ro", uri=True) as conn:
        return [(row[0], row[1]) for row in conn.execute("SELECT channel, address FROM opt_outs")]


@pytest.fixture
async def small_batches(aiohttp_client: Any, make_app: Any) -> Api:
    """A server whose erasures (and purges) go two notifications a write, to show they go batch after batch."""
    return Api(await aiohttp_client(make_app(retention_batch=2)))


async def test_deleting_a_contact_erases_its_addresses_and_keeps_the_shape_of_the_history(
    small_batches: Api, memory_provider: type[MemoryProvider], clock: Any
) -> None:
    api = small_batches
    contact = await create(api, external_id="u-42")
    await call(api, "POST", "/api/v1/opt-outs", {"channel": "voice", "address": PHONE})  # a STOP the law keeps
    memory_provider.script[EMAIL] = ["permanent"]  # the provider's error is kept, scrubbed
    sent = []
    for n in range(5):
        status, accepted = await api.send(to_contact(contact["contact_id"], ["sms", "email"], body=f"Hello {EMAIL} #{n}") | {"metadata": {"to": EMAIL}})
        assert status == 202, accepted
        sent.append(accepted["notification_id"])
    later_at = "2027-02-01T00:00:00Z"  # the clock starts on 2027-01-15: this one waits
    status, later = await api.send(to_contact(contact["contact_id"], ["sms"], send_at=later_at))
    assert status == 202, later
    await api.idle()
    before = {nid: await api.notification(nid) for nid in sent}
    assert EMAIL in stored_text(api)

    assert await call(api, "DELETE", f"/api/v1/contacts/{contact['contact_id']}") == (204, None)

    dump = stored_text(api)
    assert EMAIL not in dump and EMAIL.upper() not in dump
    assert opt_out_rows(api) == [("voice", PHONE)]  # the legal opt-out stays: deleting the contact must not resume messaging
    assert all("opt_outs" in line or "recipient.opted_out" in line for line in dump.splitlines() if PHONE in line)  # only there
    for nid, was in before.items():
        now = await api.notification(nid)
        assert now["recipient"] == {"phone": "[erased]", "email": "[erased]"} and now["metadata"] == {"to": "[erased]"}
        assert [(d["status"], d["address"]) for d in now["deliveries"]] == [(d["status"], "[erased]") for d in was["deliveries"]]
        assert [(e["action"], e["to_status"], e["at"]) for e in now["audit"]] == [(e["action"], e["to_status"], e["at"]) for e in was["audit"]]
        assert now["deliveries"][1]["content"]["body"].startswith("Hello [erased] #") and EMAIL not in str(now)
        assert (now["status"], now["created_at"], now["contact_id"]) == (was["status"], was["created_at"], contact["contact_id"])
    waiting = await api.notification(later["notification_id"])
    assert by_channel(waiting) == {"sms": ("skipped", "contact_deleted")} and waiting["status"] == "skipped"
    clock.advance(30 * 86400)
    api.wake()
    await api.idle()
    assert len(memory_provider.sent) == 10  # the waiting one was never sent


async def test_an_erasure_cut_short_by_a_stop_is_finished_at_the_next_start(
    aiohttp_client: Any, make_app: Any, memory_provider: type[MemoryProvider]
) -> None:
    first = Api(await aiohttp_client(make_app()))
    contact = await create(first)
    _, accepted = await first.send(to_contact(contact["contact_id"], ["email"]))
    await first.idle()
    erasure = await first.app[STORE].delete_contact("acme", "live", contact["contact_id"])  # the write a DELETE makes, then a stop
    assert erasure is not None and EMAIL in stored_text(first)
    await first.client.close()

    second = Api(await aiohttp_client(make_app()))
    await second.app[ERASER].wait()  # what the start resumed
    assert EMAIL not in stored_text(second)
    assert (await second.notification(accepted["notification_id"]))["deliveries"][0]["address"] == "[erased]"
