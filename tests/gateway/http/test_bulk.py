"""``POST /api/v1/notifications/bulk``: one notification per good row, a coded error per bad row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import LIVE_KEY, OTHER_KEY, Api, MemoryProvider

from gateway.http.appkeys import STORE

BULK = "/api/v1/notifications/bulk"
LIST = "/api/v1/notifications"


def phone(n: int) -> str:
    return f"+1415{n:07d}"


def otp_bulk(*rows: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"channels": ["sms"], "template_id": "otp", "recipients": list(rows)} | extra


async def post_bulk(api: Api, body: Any, key: str | None = None) -> tuple[int, dict[str, Any]]:
    response = await api.client.post(BULK, json=body, headers=api.headers(key))
    return response.status, await response.json()


async def all_listed(api: Api, key: str = LIVE_KEY) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        status, page = await api.get(f"{LIST}?limit=200&cursor={cursor}", key=key)
        assert status == 200, page
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        cursor = page["next_cursor"]


async def test_good_rows_are_accepted_and_bad_rows_are_reported_by_index(api: Api, memory_provider: type[MemoryProvider]) -> None:
    status, body = await post_bulk(
        api,
        otp_bulk(
            {"phone": phone(1), "data": {"code": "1"}},
            {"phone": "not-a-phone", "data": {"code": "2"}},
            {"phone": phone(3)},
            {"phone": phone(4), "data": {"code": "4"}},
        ),
    )
    assert status == 202, body
    assert body["accepted"] == 2
    assert body["rejected"] == 2
    assert [n["index"] for n in body["notifications"]] == [0, 3]
    assert all(n["notification_id"].startswith("ntf_") and n["status"] == "queued" for n in body["notifications"])
    assert len({n["notification_id"] for n in body["notifications"]}) == 2
    assert [[d["channel"] for d in n["deliveries"]] for n in body["notifications"]] == [["sms"], ["sms"]]

    errors = {e["index"]: e for e in body["errors"]}
    assert sorted(errors) == [1, 2]
    assert errors[1]["code"] == "invalid_recipient"
    assert [(d["field"], d["code"]) for d in errors[1]["details"]] == [("recipients[1].phone", "invalid_recipient")]
    assert errors[2]["code"] == "missing_variables"
    assert [(d["field"], d["code"]) for d in errors[2]["details"]] == [("recipients[2].data", "missing_variables")]
    assert "code" in errors[2]["message"]

    for accepted, code in zip(body["notifications"], ("1", "4"), strict=True):
        done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
        assert done["deliveries"][0]["content"] == {"body": f"Your code is {code}"}
    assert sorted(m.to for m in memory_provider.sent) == [phone(1), phone(4)]
    assert sorted(n["recipient"]["phone"] for n in await all_listed(api)) == [phone(1), phone(4)]


@pytest.mark.parametrize(
    ("row", "code", "field"),
    [
        ({"phone": "12345", "data": {"code": "1"}}, "invalid_recipient", "recipients[0].phone"),
        ({"email": "ada@example.com", "data": {"code": "1"}}, "missing_recipient_field", "recipients[0].phone"),
        ({"phone": phone(1), "fax": "x", "data": {"code": "1"}}, "unknown_recipient_field", "recipients[0].fax"),
        ({"phone": phone(1), "data": ["1"]}, "validation_failed", "recipients[0].data"),
        ({"phone": True, "data": {"code": "1"}}, "invalid_recipient", "recipients[0].phone"),
        ({"phone": phone(1)}, "missing_variables", "recipients[0].data"),
    ],
    ids=["bad phone", "wrong recipient field", "unknown field", "data not an object", "phone as bool", "missing variable"],
)
async def test_a_bad_row_is_reported_with_its_code_while_the_good_row_goes_through(
    api: Api, row: dict[str, Any], code: str, field: str
) -> None:
    status, body = await post_bulk(api, otp_bulk(row, {"phone": phone(2), "data": {"code": "2"}}))
    assert status == 202, body
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert [n["index"] for n in body["notifications"]] == [1]
    (error,) = body["errors"]
    assert error["index"] == 0
    assert error["code"] == code
    assert (field, code) in [(d["field"], d["code"]) for d in error["details"]]
    assert [n["recipient"] for n in await all_listed(api)] == [{"phone": phone(2)}]


async def test_when_no_row_is_good_the_request_is_a_422_and_nothing_is_queued(api: Api) -> None:
    status, body = await post_bulk(api, otp_bulk({"phone": "nope", "data": {"code": "1"}}, {"phone": phone(2)}))
    assert status == 422
    assert set(body) == {"error"}
    assert body["error"]["code"] == "no_valid_recipients"
    fields = [(d["field"], d["code"]) for d in body["error"]["details"]]
    assert ("recipients[0].phone", "invalid_recipient") in fields
    assert ("recipients[1].data", "missing_variables") in fields
    assert await all_listed(api) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (otp_bulk(), "validation_failed"),
        ({"channels": ["sms"], "template_id": "otp"}, "validation_failed"),
        (otp_bulk({"phone": phone(1)}, data={"code": "1"}) | {"channels": ["pigeon"]}, "unknown_channel"),
        (otp_bulk({"phone": phone(1)}, data={"code": "1"}) | {"template_id": "nope"}, "unknown_template"),
        ({"channels": ["whatsapp"], "body": "hi", "recipients": [{"phone": phone(1)}]}, "template_required"),
        (otp_bulk({"phone": phone(1)}, data={"code": "1"}, extra=True), "validation_failed"),
        (otp_bulk("+14155550100", data={"code": "1"}), "validation_failed"),
        ({"channels": ["sms"], "template_id": "otp", "recipients": {"phone": phone(1)}}, "validation_failed"),
    ],
    ids=["no recipients", "recipients missing", "unknown channel", "unknown template", "raw whatsapp", "unknown field", "row not an object", "recipients not a list"],
)
async def test_a_problem_shared_by_every_row_refuses_the_whole_request(api: Api, body: dict[str, Any], code: str) -> None:
    status, answer = await post_bulk(api, body)
    assert status == 422, answer
    assert answer["error"]["code"] == code
    assert await all_listed(api) == []


async def test_more_rows_than_bulk_max_rows_is_a_413_and_nothing_is_queued(
    aiohttp_client: Any, make_app: Callable[..., web.Application]
) -> None:
    api = Api(await aiohttp_client(make_app(bulk_max_rows=5)))
    rows = [{"phone": phone(n), "data": {"code": str(n)}} for n in range(6)]
    status, body = await post_bulk(api, otp_bulk(*rows))
    assert status == 413
    assert body["error"]["code"] == "too_many_recipients"
    assert "5" in body["error"]["message"] and "6" in body["error"]["message"]
    assert await all_listed(api) == []

    status, body = await post_bulk(api, otp_bulk(*rows[:5]))
    assert status == 202, "exactly bulk_max_rows is allowed"
    assert body["accepted"] == 5


async def test_ten_thousand_rows_are_accepted_in_one_request_and_few_transactions(api: Api) -> None:
    rows = [{"phone": phone(n), "data": {"code": str(n)}} for n in range(10_000)]
    store = api.app[STORE]
    batches_around_accept: list[int] = []
    accept = store.accept

    async def counting_accept(*args: Any, **kwargs: Any) -> Any:
        before = store._writer.batches
        result = await accept(*args, **kwargs)
        batches_around_accept.append(store._writer.batches - before)
        return result

    store.accept = counting_accept
    before = store._writer.batches
    status, body = await post_bulk(api, otp_bulk(*rows))
    after = store._writer.batches
    assert status == 202
    assert (body["accepted"], body["rejected"], body["errors"]) == (10_000, 0, [])
    assert [n["index"] for n in body["notifications"]] == list(range(10_000))
    assert len({n["notification_id"] for n in body["notifications"]}) == 10_000
    # The rows are written as one job; the dispatcher may commit a few claims alongside.
    assert batches_around_accept and batches_around_accept[0] < 5
    assert after - before < 20

    listed = await all_listed(api)
    assert len(listed) == 10_000
    assert {n["notification_id"] for n in listed} == {n["notification_id"] for n in body["notifications"]}
    assert {n["recipient"]["phone"] for n in listed} == {row["phone"] for row in rows}


async def test_common_data_is_merged_with_each_rows_data_and_the_row_wins(api: Api) -> None:
    body = {
        "channels": ["email", "sms"],
        "template_id": "shipped",
        "data": {"order_id": "A1", "name": "customer"},
        "recipients": [
            {"email": "ada@example.com", "phone": phone(1), "data": {"name": "Ada"}},
            {"email": "bob@example.com", "phone": phone(2), "data": {"name": "Bob", "order_id": "B2"}},
            {"email": "cy@example.com", "phone": phone(3)},
        ],
    }
    status, answer = await post_bulk(api, body)
    assert status == 202, answer
    assert answer["accepted"] == 3
    contents = []
    for accepted in answer["notifications"]:
        done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
        contents.append({d["channel"]: d["content"]["body"] for d in done["deliveries"]})
    assert contents == [
        {"email": "Hi Ada, order A1 is on its way.", "sms": "Order A1 shipped"},
        {"email": "Hi Bob, order B2 is on its way.", "sms": "Order B2 shipped"},
        {"email": "Hi customer, order A1 is on its way.", "sms": "Order A1 shipped"},
    ]


async def test_common_data_alone_can_supply_every_variable(api: Api) -> None:
    status, answer = await post_bulk(api, otp_bulk({"phone": phone(1)}, {"phone": phone(2)}, data={"code": "777"}))
    assert status == 202
    assert answer["accepted"] == 2
    done = await api.wait_for(answer["notifications"][1]["notification_id"], lambda n: n["status"] == "sent")
    assert done["deliveries"][0]["content"] == {"body": "Your code is 777"}


async def test_bulk_notifications_default_to_bulk_priority(api: Api) -> None:
    body = {"channels": ["sms"], "template_id": "shipped", "data": {"order_id": "1"}, "recipients": [{"phone": phone(1)}]}
    status, answer = await post_bulk(api, body)
    assert status == 202
    notification = await api.notification(answer["notifications"][0]["notification_id"])
    assert notification["priority"] == "bulk"

    status, answer = await post_bulk(api, {"channels": ["sms"], "body": "raw", "recipients": [{"phone": phone(2)}]})
    assert status == 202
    assert (await api.notification(answer["notifications"][0]["notification_id"]))["priority"] == "bulk"


async def test_an_explicit_priority_or_the_templates_priority_beats_the_bulk_default(api: Api) -> None:
    status, answer = await post_bulk(api, {"channels": ["sms"], "body": "raw", "priority": "normal", "recipients": [{"phone": phone(1)}]})
    assert status == 202
    assert (await api.notification(answer["notifications"][0]["notification_id"]))["priority"] == "normal"

    status, answer = await post_bulk(api, otp_bulk({"phone": phone(2)}, data={"code": "1"}))
    assert status == 202
    assert (await api.notification(answer["notifications"][0]["notification_id"]))["priority"] == "high"


async def test_metadata_is_copied_onto_every_notification(api: Api) -> None:
    status, answer = await post_bulk(api, otp_bulk({"phone": phone(1)}, {"phone": phone(2)}, data={"code": "1"}, metadata={"campaign": "spring"}))
    assert status == 202
    for accepted in answer["notifications"]:
        assert (await api.notification(accepted["notification_id"]))["metadata"] == {"campaign": "spring"}


async def test_bulk_rows_belong_only_to_the_calling_tenant(api: Api) -> None:
    status, answer = await post_bulk(api, otp_bulk({"phone": phone(1)}, data={"code": "1"}), key=OTHER_KEY)
    assert status == 202
    assert await all_listed(api) == []
    assert [n["notification_id"] for n in await all_listed(api, OTHER_KEY)] == [answer["notifications"][0]["notification_id"]]
