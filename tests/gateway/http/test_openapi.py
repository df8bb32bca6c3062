"""``GET /openapi.json`` describes every route, matches the checked-in copy, and real answers validate against it; ``/docs`` loads nothing from elsewhere."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from conftest import LIVE_KEY, TEST_KEY, Api, MemoryProvider, sms_body
from openapi_spec_validator import validate

from gateway.http.openapi import describe, render, undescribed

CHECKED_IN = Path(__file__).parents[3] / "schema" / "openapi.json"


async def document(api: Api) -> dict[str, Any]:
    response = await api.client.get("/openapi.json")
    assert response.status == 200
    return await response.json()  # type: ignore[no-any-return]


class Conformance:
    """Calls the API and holds each answer to the schema the document gives for its operation and status."""

    def __init__(self, api: Api, described: dict[str, Any]) -> None:
        self.api = api
        self.described = described
        self.seen: set[tuple[str, str, int]] = set()

    async def call(
        self, method: str, template: str, status: int, path: str | None = None, *, json: Any = None, key: str = LIVE_KEY,
    ) -> dict[str, Any]:
        response = await self.api.client.request(method, path or template, json=json, headers={"X-API-Key": key})
        body = await response.json() if response.content_type == "application/json" else {}
        assert response.status == status, body
        answer = self.described["paths"][template][method.lower()]["responses"][str(status)]
        if status != 204:
            schema = answer["content"]["application/json"]["schema"]
            jsonschema.validate(
                body, {**schema, "components": self.described["components"]}, cls=jsonschema.Draft202012Validator,
                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
            )
        if status >= 400:
            assert body["error"]["code"] in answer["x-error-codes"], (body, answer["x-error-codes"])
        self.seen.add((method, template, status))
        return body


@pytest.fixture
async def conformance(api: Api) -> Conformance:
    return Conformance(api, await document(api))


def test_every_route_the_app_serves_is_described(make_app: Any) -> None:
    assert undescribed(make_app().router) == []


async def test_the_document_is_valid_openapi_3_1_with_both_auth_schemes(api: Api) -> None:
    described = await document(api)
    validate(described)
    assert described["openapi"] == "3.1.0"
    assert described["components"]["securitySchemes"] == {
        "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "A tenant's API key (``tdk_…``)."},
        "Bearer": {"type": "http", "scheme": "bearer", "description": "The same key as ``Authorization: Bearer tdk_…``."},
    }
    send = described["paths"]["/api/v1/notifications/send"]["post"]
    assert send["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/SendRequest"}
    assert "RateLimit-Remaining" in send["responses"]["202"]["headers"]
    assert "Retry-After" in send["responses"]["429"]["headers"]
    assert {"unknown_channel", "template_required"} <= set(send["responses"]["422"]["x-error-codes"])
    assert described["paths"]["/healthz"]["get"]["security"] == []
    assert "headers" not in described["paths"]["/api/v1/notifications"]["get"]["responses"]["200"]


def test_the_checked_in_copy_is_what_the_code_generates(make_app: Any) -> None:
    generated = render(describe(make_app().router))
    assert CHECKED_IN.read_bytes() == generated, "schema/openapi.json is stale: run `make openapi` and commit it"


async def test_the_served_document_is_the_checked_in_copy(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.content_type == "application/json"
    assert await response.read() == CHECKED_IN.read_bytes()


async def test_real_answers_validate_against_the_document(conformance: Conformance, memory_provider: type[MemoryProvider]) -> None:
    call, api = conformance.call, conformance.api
    await call("GET", "/healthz", 200)
    await call("GET", "/readyz", 200)
    await call("GET", "/api/v1/channels/capabilities", 200)
    await call("GET", "/api/v1/channels/capabilities", 200, key=TEST_KEY)
    await call("GET", "/api/v1/webhooks/public-key", 200)
    await call("GET", "/api/v1/webhook-endpoints", 200)

    sent = await call("POST", "/api/v1/notifications/send", 202, json=sms_body())
    await api.wait_for(sent["notification_id"], lambda n: n["status"] == "sent")
    one = f"/api/v1/notifications/{sent['notification_id']}"
    await call("GET", "/api/v1/notifications/{notification_id}", 200, one)
    await call("GET", "/api/v1/notifications", 200)
    await call("POST", "/api/v1/notifications/{notification_id}/acknowledge", 200, one + "/acknowledge", json={"note": "seen"})
    await call("GET", "/api/v1/notifications/{notification_id}", 200, one)  # now with its acknowledgement
    await call("GET", "/api/v1/notifications/{notification_id}", 404, "/api/v1/notifications/ntf_nope")
    await call("POST", "/api/v1/notifications/send", 422, json=sms_body(channels=["pigeon"]))
    await call("POST", "/api/v1/notifications/send", 401, json=sms_body(), key="tdk_unknown_key_000000")
    bulk = {"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}, "recipients": [{"phone": "+14155550100"}, {"phone": "nope"}]}
    await call("POST", "/api/v1/notifications/bulk", 202, json=bulk)

    memory_provider.script["+14155550122"] = ["permanent"]
    failed = await call("POST", "/api/v1/notifications/send", 202, json=sms_body("+14155550122"))
    await api.wait_for(failed["notification_id"], lambda n: n["status"] == "failed")
    letters = await call("GET", "/api/v1/dead-letters", 200)
    delivery = letters["items"][0]["delivery_id"]
    await call("POST", "/api/v1/dead-letters/{delivery_id}/replay", 202, f"/api/v1/dead-letters/{delivery}/replay")
    await call("POST", "/api/v1/dead-letters/replay", 202, json={})

    contact = await call("POST", "/api/v1/contacts", 201, json={"external_id": "c-1", "email": "ada@example.com", "locale": "pt-BR"})
    at = f"/api/v1/contacts/{contact['contact_id']}"
    await call("GET", "/api/v1/contacts/{contact_id}", 200, at)
    await call("PATCH", "/api/v1/contacts/{contact_id}", 200, at, json={"phone": "+14155550100", "locale": None})
    await call("GET", "/api/v1/contacts", 200)
    await call("DELETE", "/api/v1/contacts/{contact_id}", 204, at)
    await call("GET", "/api/v1/contacts/{contact_id}", 404, at)

    event = {"event_id": "order-1", "event_name": "order.shipped", "recipient": {"phone": "+14155550100"}, "data": {"order": 1}}
    await call("POST", "/api/v1/events", 202, json=event)
    await call("POST", "/api/v1/events", 200, json=event)
    await call("GET", "/api/v1/events/{event_id}", 200, "/api/v1/events/order-1")
    await call("GET", "/api/v1/events", 200)

    await call("POST", "/api/v1/opt-outs", 201, json={"channel": "sms", "address": "+14155550100"})
    await call("GET", "/api/v1/opt-outs", 200)
    await call("GET", "/api/v1/opt-outs", 403, key=TEST_KEY)
    await call("GET", "/api/v1/replies", 200)
    await call("GET", "/api/v1/webhook-deliveries", 200)
    await call("POST", "/api/v1/webhook-deliveries/replay", 202, json={"endpoint": "ops"})
    await call("POST", "/api/v1/webhook-endpoints/{endpoint}/enable", 404, "/api/v1/webhook-endpoints/ops/enable")
    assert len(conformance.seen) == 33  # each answer above, once per operation and status


class _Resources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


async def test_the_docs_page_loads_only_files_the_gateway_serves(api: Api) -> None:
    response = await api.client.get("/docs")
    assert response.status == 200 and response.content_type == "text/html"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    page = _Resources()
    page.feed(await response.text())
    assert len(page.urls) >= 3
    for url in page.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        loaded = await api.client.get(url)
        assert loaded.status == 200, url
        assert len(await loaded.read()) > 0
    script = await (await api.client.get("/docs/tidings-docs.js")).text()
    assert 'url: "/openapi.json"' in script and "validatorUrl: null" in script  # Swagger UI's online validator badge stays off


async def test_a_file_the_docs_page_does_not_use_is_a_404(api: Api) -> None:
    for name in ("index.html", "swagger-ui-bundle.js.map", "..%2Fpy.typed"):
        response = await api.client.get(f"/docs/{name}")
        assert response.status == 404
        assert (await response.json())["error"]["code"] in ("asset_not_found", "route_not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/api/v1/notifications/send", "POST"),  # reached GET /api/v1/notifications/{notification_id} before
        ("PUT", "/api/v1/notifications/bulk", "POST"),
        ("POST", "/api/v1/webhooks/public-key", "GET, HEAD"),  # reached a provider callback for an instance "public-key"
        ("DELETE", "/api/v1/contacts", "GET, HEAD, POST"),  # two resources of one path: both methods listed
        ("OPTIONS", "/healthz", "GET, HEAD"),
    ],
)
async def test_a_concrete_path_refuses_a_method_it_does_not_serve_with_exactly_its_own(api: Api, method: str, path: str, allow: str) -> None:
    response = await api.client.request(method, path, headers={"X-API-Key": LIVE_KEY})
    assert response.status == 405
    assert response.headers["Allow"] == allow
    assert (await response.json())["error"]["code"] == "method_not_allowed"


async def test_paths_sharing_a_concrete_path_still_serve_their_methods(api: Api) -> None:
    assert (await api.get("/api/v1/contacts"))[0] == 200
    assert (await api.get("/api/v1/webhooks/public-key"))[0] == 200
    assert (await api.get("/api/v1/notifications/ntf_unknown"))[0] == 404


async def test_the_document_describes_the_app_it_is_served_by(aiohttp_client: Any, make_app: Any) -> None:
    app: web.Application = make_app()
    client = await aiohttp_client(app)
    served = await (await client.get("/openapi.json")).json()
    assert set(served["paths"]) == {path for path in describe(app.router)["paths"]}


def test_a_route_without_a_description_is_named(make_app: Any) -> None:
    app: web.Application = make_app()

    async def handler(_request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_post("/api/v1/undescribed", handler)
    assert undescribed(app.router) == ["POST /api/v1/undescribed"]
    assert "/api/v1/undescribed" not in describe(app.router)["paths"]


@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/api/v1/notifications", ("status", "delivery_status", "limit")),
        ("/api/v1/dead-letters", ("reason", "limit")),
        ("/api/v1/webhook-deliveries", ("status", "limit")),
    ],
)
async def test_an_empty_filter_is_described_as_the_server_reads_it_absent(api: Api, path: str, names: tuple[str, ...]) -> None:
    # schemathesis sent ?status= and got a 200 the document said was impossible: empty means "no filter", in both.
    described = await document(api)
    parameters = {p["name"]: p["schema"] for p in described["paths"][path]["get"]["parameters"]}
    for name in names:
        jsonschema.validate("", parameters[name])
    status, answer = await api.get(path + "?" + "&".join(f"{name}=" for name in names))
    assert status == 200, answer
