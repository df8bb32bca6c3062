"""The plugin kit: what every plugin needs, in one place, so no plugin writes its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import InboundRequest, provider_kit
from gateway.provider_kit import MAX_RETRY_AFTER, json_answer, json_object, retry_after_seconds

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_792_567_280.0  # Wed, 21 Oct 2026 07:21:20 GMT
CONTRACT = {"gateway", "gateway.plugin_api", "gateway.provider_kit"}


def test_the_kit_exports_exactly_what_plugins_are_given() -> None:
    assert provider_kit.__all__ == sorted(provider_kit.__all__)
    assert set(provider_kit.__all__) == {
        "DEFAULT_TIMEOUT", "TIMEOUT_PROPERTY", "VendorError", "failure", "form_value", "isoformat", "json_answer", "json_object",
        "public_connector", "refused_as_private", "retry_after_seconds", "same_secret", "signature_headers", "timeout_of", "utc_time", "vendor_call",
    }


@pytest.mark.parametrize(
    "module", sorted([*ROOT.glob("plugins/*.py"), ROOT / "examples/tidings-ntfy/tidings_ntfy/provider.py"]), ids=lambda path: path.stem
)
def test_a_plugin_imports_from_the_gateway_only_its_contract(module: Path) -> None:
    tree = ast.parse(module.read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {name for name in imported if name == "gateway" or name.startswith("gateway.")} <= CONTRACT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (7, 7.0),
        ("0", 0.0),
        ("-5", 0.0),  # never a wait into the past
        ("Wed, 21 Oct 2026 07:28:00 GMT", 400.0),  # the HTTP-date form, counted from now
        ("Wednesday, 21-Oct-26 07:28:00 GMT", 400.0),  # the obsolete RFC 850 form HTTP still allows
        ("Wed, 21 Oct 2026 07:00:00 GMT", 0.0),  # a date already past: at once
        ("Sat, 21 Oct 2028 07:28:00 GMT", MAX_RETRY_AFTER),  # capped at a day
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_both_forms_http_allows(value: str | int | None, expected: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("raw", "text_key", "expected"),
    [
        (b'{"id": "m1"}', None, {"id": "m1"}),
        (b"[1, 2]", None, {}),  # not an object
        (b"Forbidden", None, {}),
        (b"Forbidden\n", "message", {"message": "Forbidden"}),  # a vendor that answers errors in text keeps its words
        (b"", "message", {}),
        ('{"ok": true}', None, {"ok": True}),
    ],
)
def test_a_vendor_answer_is_a_json_object_or_nothing(raw: bytes | str, text_key: str | None, expected: dict[str, object]) -> None:
    assert json_object(raw, text_key=text_key) == expected


async def test_json_answer_reads_what_the_vendor_sent(aiohttp_client: object) -> None:
    async def as_json(_request: web.Request) -> web.Response:
        return web.json_response({"id": "m1"})

    async def as_text(_request: web.Request) -> web.Response:
        return web.Response(text="Domain not found", status=404)

    app = web.Application()
    app.router.add_get("/json", as_json)
    app.router.add_get("/text", as_text)
    client: TestClient = await aiohttp_client(app)  # type: ignore[operator]
    async with client.get("/json") as response:
        assert await json_answer(response) == {"id": "m1"}
    async with client.get("/text") as response:
        assert await json_answer(response, text_key="message") == {"message": "Domain not found"}


def test_a_callbacks_headers_are_read_in_any_case() -> None:
    request = InboundRequest("POST", "/", {"X-Hub-Signature-256": "sha256=abc"}, {}, b"")
    assert request.headers.get("x-hub-signature-256") == request.headers["X-HUB-SIGNATURE-256"] == "sha256=abc"
    assert request.headers.get("X-Missing") is None
