"""Every bad request is refused with a 4xx in the one error shape, and nothing is queued."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import LIVE_KEY, OTHER_KEY, SUSPENDED_KEY, TEST_KEY, Api, MemoryProvider, sms_body

SEND = "/api/v1/notifications/send"
LIST = "/api/v1/notifications"


def assert_error_shape(body: dict[str, Any], code: str) -> dict[str, Any]:
    """The one error envelope, with the expected code; returns the inner error."""
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    for detail in error["details"]:
        assert {"field", "message"} <= set(detail) <= {"field", "message", "code"}, detail
        assert isinstance(detail["field"], str)
        assert isinstance(detail["message"], str) and detail["message"]
    return error


async def assert_nothing_written(api: Api, key: str = LIVE_KEY) -> None:
    status, listing = await api.get(LIST, key=key)
    assert status == 200, listing
    assert listing["items"] == []


def detail_codes(error: dict[str, Any]) -> list[tuple[str, str]]:
    return [(d["field"], d.get("code")) for d in error["details"]]


def with_notification(**content: Any) -> dict[str, Any]:
    """A send body whose ``notification`` is exactly ``content`` (no template defaults)."""
    return {"recipient": {"phone": "+14155550100"}, "notification": content}


# Each case: (name, request body, expected status, expected code, a detail (field, code) that must be present or None)
INVALID_SENDS: list[tuple[str, Any, int, str, tuple[str, str] | None]] = [
    ("body is a JSON array", [sms_body()], 422, "validation_failed", ("", "validation_failed")),
    ("body is a JSON string", "hello", 422, "validation_failed", ("", "validation_failed")),
    ("unknown channel", sms_body(channels=["pigeon"]), 422, "unknown_channel", ("notification.channels[0]", "unknown_channel")),
    ("empty channels list", sms_body(channels=[]), 422, "validation_failed", ("notification.channels", "validation_failed")),
    ("duplicate channel", sms_body(channels=["sms", "sms"]), 422, "duplicate_channel", ("notification.channels[1]", "duplicate_channel")),
    ("unknown template", sms_body(template_id="nope"), 422, "unknown_template", ("notification.template_id", "unknown_template")),
    ("whatsapp with a raw body", with_notification(channels=["whatsapp"], body="hi"), 422, "template_required", ("notification.template_id", "template_required")),
    ("missing template variables", sms_body(data={}), 422, "missing_variables", ("notification.data", "missing_variables")),
    ("missing recipient field for the channel", {"recipient": {"email": "ada@example.com"}, "notification": sms_body()["notification"]}, 422, "missing_recipient_field", ("recipient.phone", "missing_recipient_field")),
    ("phone that is not E.164", sms_body("0415 555 0100"), 422, "invalid_recipient", ("recipient.phone", "invalid_recipient")),
    ("empty phone", sms_body(""), 422, "invalid_recipient", ("recipient.phone", "invalid_recipient")),
    ("email that is not an address", {"recipient": {"email": "not-an-email"}, "notification": {"channels": ["email"], "template_id": "otp", "data": {"code": "1"}}}, 422, "invalid_recipient", ("recipient.email", "invalid_recipient")),
    ("unknown recipient field", {"recipient": {"phone": "+14155550100", "fax": "+14155550101"}, "notification": sms_body()["notification"]}, 422, "unknown_recipient_field", ("recipient.fax", "unknown_recipient_field")),
    ("empty recipient", {"recipient": {}, "notification": sms_body()["notification"]}, 422, "validation_failed", ("recipient", "validation_failed")),
    ("missing recipient", {"notification": sms_body()["notification"]}, 422, "validation_failed", ("recipient", "validation_failed")),
    ("missing notification", {"recipient": {"phone": "+14155550100"}}, 422, "validation_failed", ("notification", "validation_failed")),
    ("channels as a string", sms_body(channels="sms"), 422, "validation_failed", ("notification.channels", "validation_failed")),
    ("channels holding a number", sms_body(channels=[1]), 422, "validation_failed", ("notification.channels[0]", "validation_failed")),
    ("data as a list", sms_body(data=["123456"]), 422, "validation_failed", ("notification.data", "validation_failed")),
    ("recipient value as a bool", {"recipient": {"phone": True}, "notification": sms_body()["notification"]}, 422, "validation_failed", None),
    ("recipient value as a list", {"recipient": {"phone": ["+14155550100"]}, "notification": sms_body()["notification"]}, 422, "validation_failed", None),
    ("recipient value as null", {"recipient": {"phone": None}, "notification": sms_body()["notification"]}, 422, "validation_failed", None),
    ("unknown top-level field", sms_body() | {"urgent": True}, 422, "validation_failed", ("urgent", "validation_failed")),
    ("unknown notification field", sms_body(colour="red"), 422, "validation_failed", ("notification.colour", "validation_failed")),
    ("priority outside the vocabulary", sms_body(priority="urgent"), 422, "validation_failed", ("notification.priority", "validation_failed")),
    ("body together with template_id", sms_body(body="hello"), 422, "conflicting_content", ("notification.body", "conflicting_content")),
    ("subject together with template_id", sms_body(subject="hello"), 422, "conflicting_content", ("notification.subject", "conflicting_content")),
    ("raw email without a subject", {"recipient": {"email": "ada@example.com"}, "notification": {"channels": ["email"], "body": "hi"}}, 422, "missing_content", ("notification.subject", "missing_content")),
    ("raw sms without a body", with_notification(channels=["sms"]), 422, "missing_content", ("notification.body", "missing_content")),
    ("channel with no provider for the tenant", {"recipient": {"device_token": "abc"}, "notification": {"channels": ["push"], "body": "hi", "subject": "s"}}, 422, "channel_unavailable", ("notification.channels[0]", "channel_unavailable")),
    ("empty idempotency_key field", sms_body() | {"idempotency_key": ""}, 422, "validation_failed", ("idempotency_key", "validation_failed")),
    ("metadata as a list", sms_body() | {"metadata": ["a"]}, 422, "validation_failed", ("metadata", "validation_failed")),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "detail"),
    [case[1:] for case in INVALID_SENDS],
    ids=[case[0] for case in INVALID_SENDS],
)
async def test_an_invalid_send_is_refused_with_a_coded_error_and_nothing_is_queued(
    api: Api, memory_provider: type[MemoryProvider], body: Any, status: int, code: str, detail: tuple[str, str] | None
) -> None:
    got, answer = await api.send(body)
    assert got == status, answer
    error = assert_error_shape(answer, code)
    if detail is not None:
        assert detail in detail_codes(error)
    await assert_nothing_written(api)
    assert memory_provider.sent == []


async def test_malformed_json_is_a_400_invalid_json(api: Api) -> None:
    response = await api.client.post(SEND, data=b'{"recipient": {"phone": "+1415', headers=api.headers(**{"Content-Type": "application/json"}))
    assert response.status == 400
    assert_error_shape(await response.json(), "invalid_json")
    await assert_nothing_written(api)


async def test_an_empty_body_is_a_400_invalid_json(api: Api) -> None:
    response = await api.client.post(SEND, data=b"", headers=api.headers(**{"Content-Type": "application/json"}))
    assert response.status == 400
    assert_error_shape(await response.json(), "invalid_json")
    await assert_nothing_written(api)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
async def test_a_body_that_is_not_declared_as_json_is_a_415(api: Api, content_type: str) -> None:
    import orjson

    response = await api.client.post(SEND, data=orjson.dumps(sms_body()), headers=api.headers(**{"Content-Type": content_type}))
    assert response.status == 415
    error = assert_error_shape(await response.json(), "unsupported_media_type")
    assert "application/json" in error["message"]
    await assert_nothing_written(api)


async def test_json_with_a_charset_parameter_is_still_json(api: Api) -> None:
    import orjson

    response = await api.client.post(
        SEND, data=orjson.dumps(sms_body()), headers=api.headers(**{"Content-Type": "application/json; charset=utf-8"})
    )
    assert response.status == 202


async def test_an_oversized_body_is_a_413_and_nothing_is_queued(aiohttp_client: Any, make_app: Callable[..., web.Application]) -> None:
    api = Api(await aiohttp_client(make_app(max_body_bytes=2048)))
    body = sms_body(data={"code": "1", "padding": "x" * 4096})
    status, answer = await api.send(body)
    assert status == 413
    error = assert_error_shape(answer, "payload_too_large")
    assert "2048" in error["message"]
    await assert_nothing_written(api)
    status, _ = await api.send(sms_body())
    assert status == 202, "a body under the limit is still accepted"


async def test_missing_template_variables_are_named_in_the_message(api: Api) -> None:
    status, answer = await api.send(
        {"recipient": {"email": "ada@example.com"}, "notification": {"channels": ["email"], "template_id": "shipped", "data": {}}}
    )
    assert status == 422
    error = assert_error_shape(answer, "missing_variables")
    assert "name" in error["message"] and "order_id" in error["message"]
    assert "name, order_id" in error["details"][0]["message"]
    await assert_nothing_written(api)


async def test_variables_a_template_declares_are_required_even_if_the_channel_text_does_not_use_them(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Any
) -> None:
    (policy_dir / "declared.yaml").write_text(
        "templates:\n  login:\n    variables: [code, device]\n    channels:\n      sms: {body: 'Code {{ code }}'}\n"
    )
    api = Api(await aiohttp_client(make_app()))
    status, answer = await api.send(sms_body(template_id="login", data={"code": "1"}))
    assert status == 422
    error = assert_error_shape(answer, "missing_variables")
    assert "device" in error["message"]
    await assert_nothing_written(api)
    status, _ = await api.send(sms_body(template_id="login", data={"code": "1", "device": "iPhone"}))
    assert status == 202


async def test_a_missing_recipient_field_names_the_field_the_channel_needs(api: Api) -> None:
    status, answer = await api.send({"recipient": {"email": "ada@example.com"}, "notification": sms_body()["notification"]})
    assert status == 422
    error = assert_error_shape(answer, "missing_recipient_field")
    assert error["details"][0]["field"] == "recipient.phone"
    assert "phone" in error["message"]


async def test_an_invalid_phone_is_reported_once_not_also_as_missing(api: Api) -> None:
    status, answer = await api.send(sms_body("0415 555 0100", channels=["sms", "whatsapp"]))
    assert status == 422
    error = assert_error_shape(answer, "invalid_recipient")
    assert detail_codes(error) == [("recipient.phone", "invalid_recipient")]


async def test_every_problem_in_a_request_is_reported_at_once(api: Api) -> None:
    status, answer = await api.send(
        {"recipient": {"phone": "nope"}, "notification": {"channels": ["sms", "pigeon"], "template_id": "otp", "data": {"code": "1"}}}
    )
    assert status == 422
    error = assert_error_shape(answer, "unknown_channel")
    assert ("notification.channels[1]", "unknown_channel") in detail_codes(error)
    await assert_nothing_written(api)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "unauthorized"),
        ({"X-API-Key": ""}, "unauthorized"),
        ({"Authorization": "Bearer "}, "unauthorized"),
        ({"Authorization": f"Basic {LIVE_KEY}"}, "unauthorized"),
        ({"X-API-Key": "tdk_acme_live_key_for_tests_9999"}, "invalid_api_key"),
        ({"X-API-Key": "short"}, "invalid_api_key"),
        ({"Authorization": "Bearer tdk_nobody_at_all_0000000000"}, "invalid_api_key"),
    ],
    ids=["no key", "empty key", "empty bearer", "basic scheme", "unknown key with a known prefix", "short key", "unknown bearer"],
)
async def test_a_send_without_a_valid_api_key_is_a_401_and_nothing_is_queued(
    api: Api, memory_provider: type[MemoryProvider], headers: dict[str, str], code: str
) -> None:
    response = await api.client.post(SEND, json=sms_body(), headers=headers)
    assert response.status == 401
    assert_error_shape(await response.json(), code)
    await assert_nothing_written(api)
    await assert_nothing_written(api, TEST_KEY)
    assert memory_provider.sent == []


@pytest.mark.parametrize("path", [LIST, "/api/v1/channels/capabilities", "/api/v1/notifications/ntf_01J9Z3ZZZZZZZZZZZZZZZZZZZZ"])
async def test_reads_without_a_valid_api_key_are_a_401(api: Api, path: str) -> None:
    response = await api.client.get(path)
    assert response.status == 401
    assert_error_shape(await response.json(), "unauthorized")
    response = await api.client.get(path, headers={"X-API-Key": "tdk_acme_live_key_for_tests_9999"})
    assert response.status == 401
    assert_error_shape(await response.json(), "invalid_api_key")


PUBLIC_ROUTES = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/api/v1/webhooks/public-key"),
                 ("GET", "/api/v1/webhooks/{provider_instance}"), ("POST", "/api/v1/webhooks/{provider_instance}"),
                 ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/{asset}")}


async def test_every_route_but_the_public_ones_refuses_a_request_without_a_key(api: Api) -> None:
    """Authentication is the middleware's, so a new route cannot forget it: only the routes listed here are open."""
    open_routes = set()
    for route in api.app.router.routes():
        if route.method in ("HEAD", "*"):  # "*": a concrete path's 405 for the methods it does not serve
            continue
        template = route.resource.canonical if route.resource is not None else ""
        if template.startswith("/dashboard"):
            continue  # signed in by session cookie, never by API key: test_dashboard_pages checks every such route refuses without one
        path = re.sub(r"\{[a-z_]+\}", "x", template.replace("{provider_instance}", "sandbox"))
        response = await api.client.request(route.method, path, json={})
        body = await response.json() if response.content_type == "application/json" else {}  # /metrics is text
        if (response.status, body.get("error", {}).get("code")) != (401, "unauthorized"):
            open_routes.add((route.method, template))
    assert open_routes == PUBLIC_ROUTES


async def test_a_suspended_tenant_is_a_403_and_nothing_is_queued(api: Api, memory_provider: type[MemoryProvider]) -> None:
    status, answer = await api.send(sms_body(), key=SUSPENDED_KEY)
    assert status == 403
    error = assert_error_shape(answer, "tenant_suspended")
    assert "gone" in error["message"]
    status, answer = await api.get(LIST, key=SUSPENDED_KEY)
    assert status == 403
    assert_error_shape(answer, "tenant_suspended")
    assert memory_provider.sent == []


async def test_authentication_is_checked_before_the_body_is_judged(api: Api) -> None:
    response = await api.client.post(SEND, data=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status == 401
    assert_error_shape(await response.json(), "unauthorized")


@pytest.mark.parametrize("path", ["/nope", "/api/v1/notification", "/api/v2/notifications/send", "/api/v1/notifications/send/extra"])
async def test_an_unknown_route_is_a_404_route_not_found(api: Api, path: str) -> None:
    for method in ("GET", "POST"):
        response = await api.client.request(method, path, json=sms_body(), headers=api.headers())
        assert response.status == 404
        error = assert_error_shape(await response.json(), "route_not_found")
        assert path in error["message"]
    await assert_nothing_written(api)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", SEND, {"POST"}),
        ("DELETE", SEND, {"POST"}),
        ("DELETE", "/api/v1/notifications/ntf_01J9Z3ZZZZZZZZZZZZZZZZZZZZ", {"GET"}),
        ("PUT", "/api/v1/notifications/bulk", {"POST"}),
        ("PATCH", LIST, {"GET"}),
        ("POST", LIST, {"GET"}),
        ("POST", "/healthz", {"GET"}),
        ("DELETE", "/api/v1/channels/capabilities", {"GET"}),
    ],
)
async def test_a_wrong_method_is_a_405_that_says_which_methods_are_allowed(api: Api, method: str, path: str, allowed: set[str]) -> None:
    response = await api.client.request(method, path, json=sms_body(), headers=api.headers())
    assert response.status == 405
    listed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed <= listed
    assert method not in listed
    error = assert_error_shape(await response.json(), "method_not_allowed")
    assert method in error["message"]
    await assert_nothing_written(api)


@pytest.mark.parametrize("path", [SEND, "/api/v1/notifications/bulk"])
async def test_get_on_a_post_only_path_is_a_405_not_a_notification_lookup(api: Api, path: str) -> None:
    # /notifications/send and /notifications/bulk also match GET /notifications/{id}; the concrete path wins, as in OpenAPI.
    response = await api.client.get(path, headers=api.headers())
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert_error_shape(await response.json(), "method_not_allowed")


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=201", "limit"),
        ("limit=1.5", "limit"),
        ("status=bogus", "status"),
        ("status=QUEUED", "status"),
        ("channel=pigeon", "channel"),
        ("cursor=garbage", "cursor"),
        ("cursor=%25%25%25", "cursor"),
        ("cursor=bnRmX2Zvbw", "cursor"),
    ],
)
async def test_a_bad_list_query_parameter_is_a_400_naming_the_parameter(api: Api, query: str, parameter: str) -> None:
    status, answer = await api.get(f"{LIST}?{query}")
    assert status == 400, answer
    error = assert_error_shape(answer, "invalid_parameter")
    assert [d["field"] for d in error["details"]] == [parameter]
    assert parameter in error["message"]


@pytest.mark.parametrize(
    "notification_id",
    ["nope", "ntf_", "ntf_tooshort", "dlv_01J9Z3ZZZZZZZZZZZZZZZZZZZZ", "ntf_01J9Z3ZZZZZZZZZZZZZZZZZZZZ", "ntf_01J9Z3ZZZZZZZZZZZZZZZZZZZZZZZZ", "%27%20OR%201%3D1"],
)
async def test_getting_a_malformed_or_unknown_id_is_a_404(api: Api, notification_id: str) -> None:
    status, answer = await api.get(f"{LIST}/{notification_id}")
    assert status == 404
    assert_error_shape(answer, "notification_not_found")


async def test_a_template_of_another_tenant_is_unknown_to_the_caller(api: Api) -> None:
    body = {"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "template_id": "acme_only", "data": {"code": "1"}}}
    status, answer = await api.send(body, key=OTHER_KEY)
    assert status == 422
    assert_error_shape(answer, "unknown_template")
    await assert_nothing_written(api, OTHER_KEY)


async def test_another_tenants_request_is_not_affected_by_a_refused_one(api: Api) -> None:
    status, _ = await api.send(sms_body(channels=["pigeon"]), key=OTHER_KEY)
    assert status == 422
    await assert_nothing_written(api, OTHER_KEY)
    await assert_nothing_written(api, LIVE_KEY)


async def test_no_bad_input_ever_gets_a_500(api: Api) -> None:
    """A sweep of hostile bodies: whatever is wrong, the answer is a 4xx in the error shape."""
    import orjson

    bodies: list[bytes] = [
        b"null", b"true", b"1", b"[]", b'""', b"{}", b"{" * 10_000, b"\xff\xfe", b'{"recipient": 1, "notification": 2}',
        b'{"recipient": {"phone": 14155550100}, "notification": {"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}}}',
        b'{"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "template_id": null, "body": null}}',
        b'{"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}}, "metadata": {"a": {"b": 1}}}',
        b'{"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "template_id": 7}}',
        b'{"recipient": {"phone": "+14155550100"}, "notification": {"channels": ' + orjson.dumps(["sms"] * 17) + b"}}",
        b'{"recipient": {"phone": "' + b"+1" * 600 + b'"}, "notification": {"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}}}',
        b'{"recipients": "x", "channels": "y"}',
    ]
    for path in (SEND, "/api/v1/notifications/bulk"):
        for raw in bodies:
            response = await api.client.post(path, data=raw, headers=api.headers(**{"Content-Type": "application/json"}))
            assert 400 <= response.status < 500, (path, raw[:200], response.status, await response.text())
            assert "error" in await response.json()
    for case in INVALID_SENDS:
        status, answer = await api.send(case[1])
        assert 400 <= status < 500, (case[0], status, answer)
    await assert_nothing_written(api)
