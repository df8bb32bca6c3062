"""The dashboard over plain HTTP: signing in and out, every page, every filter, and who may see and do what.

A real server on loopback over a real SQLite file, as the API's tests run; each visitor is a
browser of its own (its own cookies), posting the forms the pages carry.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import LIVE_KEY, OTHER_KEY, SUSPENDED_KEY, TEST_KEY, Api, FakeClock, MemoryProvider, sms_body
from dashboard_support import ADMIN_KEY, OPERATOR_KEY, VIEWER_KEY, Browser, write_operators
from yarl import URL

from gateway import signing
from gateway.dashboard.sessions import SESSION_COOKIE, SESSION_SECONDS
from gateway.http.appkeys import POLICIES, POLICY_WATCHER, STORE
from gateway.store import DeadLetterFilter

Open = Callable[[str], Awaitable[Browser]]


@pytest.fixture(autouse=True)
def operators(policy_dir: Path) -> None:
    write_operators(policy_dir)


@pytest.fixture
async def signed_in(api: Api) -> AsyncIterator[Open]:
    """Open a browser signed in with a key; every browser is closed after the test."""
    opened: list[Browser] = []

    async def open_with(key: str) -> Browser:
        browser = Browser(api.client)
        opened.append(browser)
        page = await browser.sign_in(key)
        assert page.status == 200 and page.url.startswith("/dashboard/activity"), page.text
        return browser

    yield open_with
    for browser in opened:
        await browser.close()


async def dead_letter(api: Api, memory_provider: type[MemoryProvider], phone: str = "+14155550199", key: str = LIVE_KEY) -> tuple[str, str]:
    """A live SMS refused for good by the provider: its notification and delivery ids."""
    memory_provider.script[phone] = ["permanent"]
    _, accepted = await api.send(sms_body(phone), key=key)
    found = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "failed", key=key)
    return accepted["notification_id"], found["deliveries"][0]["delivery_id"]


# Signing in and out


async def test_every_page_sends_someone_not_signed_in_to_the_sign_in_form(api: Api) -> None:
    browser = Browser(api.client)
    try:
        for path in ("/dashboard", "/dashboard/activity", "/dashboard/dead-letters", "/dashboard/providers", "/dashboard/policy", "/dashboard/webhooks"):
            page = await browser.get(path)
            assert (page.status, page.url) == (200, "/dashboard/sign-in"), path
            assert 'name="key"' in page.text
        refused = await browser.post("/dashboard/dead-letters/dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV/replay", {"csrf": "x"})
        assert (refused.status, refused.error_code) == (401, "session_expired")
    finally:
        await browser.close()


async def test_signing_in_sets_a_strict_httponly_cookie_that_names_the_key_without_holding_it(api: Api) -> None:
    browser = Browser(api.client)
    try:
        form = await browser.get("/dashboard/sign-in")
        answer = await browser.post("/dashboard/sign-in", {"csrf": form.csrf, "key": LIVE_KEY}, follow=False)
        assert answer.status == 303 and answer.headers["Location"] == "/dashboard/activity"
        [header] = [value for value in answer.headers.getall("Set-Cookie") if value.startswith(SESSION_COOKIE)]
        assert all(flag in header for flag in ("HttpOnly", "SameSite=Strict", "Path=/dashboard", f"Max-Age={SESSION_SECONDS}"))
        assert LIVE_KEY not in header and LIVE_KEY[12:] not in header
        page = await browser.get("/dashboard/activity")
        assert page.status == 200 and "acme" in page and LIVE_KEY not in page.text
        assert re.search(r'id="role">tenant<', page.text)
    finally:
        await browser.close()


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        ("tdk_not_a_key_anyone_holds_0000", 401, "invalid_api_key"),
        ("tdo_not_a_key_anyone_holds_0000", 401, "invalid_api_key"),
        ("", 401, "key_required"),
        ("x" * 5000, 401, "invalid_api_key"),
        (SUSPENDED_KEY, 403, "tenant_suspended"),
    ],
)
async def test_a_key_that_is_not_in_force_is_refused_with_the_form_again_and_no_session(api: Api, key: str, status: int, code: str) -> None:
    browser = Browser(api.client)
    try:
        page = await browser.sign_in(key)
        assert (page.status, page.error_code) == (status, code)
        assert 'name="key"' in page.text and (not key or key not in page.text), "the form again, never the key echoed"
        assert browser.cookie(SESSION_COOKIE) is None
    finally:
        await browser.close()


async def test_a_sign_in_without_the_forms_token_or_from_another_site_is_refused(api: Api) -> None:
    browser = Browser(api.client)
    try:
        await browser.get("/dashboard/sign-in")
        forged = await browser.post("/dashboard/sign-in", {"csrf": "forged", "key": LIVE_KEY})
        assert (forged.status, forged.error_code) == (403, "csrf_failed")
        form = await browser.get("/dashboard/sign-in")
        elsewhere = await browser.post("/dashboard/sign-in", {"csrf": form.csrf, "key": LIVE_KEY}, Origin="https://evil.example")
        assert (elsewhere.status, elsewhere.error_code) == (403, "csrf_failed")
        assert browser.cookie(SESSION_COOKIE) is None
    finally:
        await browser.close()


async def test_signing_out_ends_the_session_and_a_post_without_the_sessions_token_is_refused(api: Api, signed_in: Open) -> None:
    browser = await signed_in(LIVE_KEY)
    forged = await browser.post("/dashboard/sign-out", {"csrf": "not-the-token"})
    assert (forged.status, forged.error_code) == (403, "csrf_failed")
    assert (await browser.get("/dashboard/activity")).url == "/dashboard/activity", "still signed in"
    out = await browser.act("/dashboard/activity", "/dashboard/sign-out")
    assert out.url == "/dashboard/sign-in" and browser.cookie(SESSION_COOKIE) is None
    assert (await browser.get("/dashboard/activity")).url == "/dashboard/sign-in"


async def test_a_session_ends_when_it_expires_or_its_key_leaves_the_policy(
    api: Api, signed_in: Open, clock: FakeClock, policy_dir: Path
) -> None:
    browser = await signed_in(LIVE_KEY)
    clock.advance(SESSION_SECONDS - 1)
    assert (await browser.get("/dashboard/activity")).url == "/dashboard/activity"
    clock.advance(2)
    assert (await browser.get("/dashboard/activity")).url == "/dashboard/sign-in", "expired"

    operator = await signed_in(OPERATOR_KEY)
    (policy_dir / "operators.yaml").write_text("operators: {}\n")
    assert await api.app[POLICY_WATCHER].reload()
    assert (await operator.get("/dashboard/activity")).url == "/dashboard/sign-in", "the key left the policy: the session with it"


async def test_a_tampered_session_cookie_is_no_session(api: Api, signed_in: Open) -> None:
    browser = await signed_in(VIEWER_KEY)
    cookie = browser.cookie(SESSION_COOKIE)
    payload, _, mac = cookie.value.partition(".")
    forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    browser.session.cookie_jar.update_cookies({SESSION_COOKIE: f"{forged}.{mac}"}, URL(browser.url("/dashboard/")))
    page = await browser.get("/dashboard/activity")
    assert page.url == "/dashboard/sign-in"


# Pages


async def test_pages_load_nothing_from_elsewhere_and_forbid_framing_and_scripts(api: Api, signed_in: Open) -> None:
    browser = await signed_in(ADMIN_KEY)
    for path in ("/dashboard/activity", "/dashboard/dead-letters", "/dashboard/providers", "/dashboard/policy", "/dashboard/webhooks", "/dashboard/sign-in"):
        page = await browser.get(path)
        assert page.status == 200, path
        assert "<script" not in page.text
        assert not re.search(r'(?:src|href|action)="(?!/dashboard)', page.text), f"{path} names only this origin's /dashboard"
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "style-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert page.headers["Cache-Control"] == "no-store"
    css = await browser.get("/dashboard/static/dashboard.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css") and "url(" not in css.text


async def test_activity_lists_the_tenants_notifications_and_filters_by_channel_recipient_status_and_attempts(
    api: Api, signed_in: Open, memory_provider: type[MemoryProvider], clock: FakeClock
) -> None:
    _, plain = await api.send(sms_body("+14155550101"))
    memory_provider.script["+14155550102"] = ["transient", "ok"]
    _, retried = await api.send(sms_body("+14155550102"))
    _, mail = await api.send({"recipient": {"email": "ana@example.com"}, "notification": {"channels": ["email"], "template_id": "otp", "data": {"code": "1"}}})
    await api.idle()
    clock.advance(3600)
    api.wake()
    await api.wait_for(retried["notification_id"], lambda n: n["status"] == "sent")
    ids = {"plain": plain["notification_id"], "retried": retried["notification_id"], "mail": mail["notification_id"]}

    browser = await signed_in(LIVE_KEY)

    async def shown(**query: str) -> set[str]:
        page = await browser.get("/dashboard/activity", **query)
        assert page.status == 200, page.text
        return {name for name, notification_id in ids.items() if notification_id in page.text}

    assert await shown() == {"plain", "retried", "mail"}
    assert await shown(channel="email") == {"mail"}
    assert await shown(recipient="+14155550102") == {"retried"}
    assert await shown(attempts="2") == {"retried"}
    assert await shown(status="sent", channel="sms") == {"plain", "retried"}
    assert await shown(status="failed") == set()
    other = await (await signed_in(OTHER_KEY)).get("/dashboard/activity")
    assert not any(notification_id in other.text for notification_id in ids.values()), "another tenant's key sees none of them"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"channel": "pigeon"}, "channel"),
        ({"status": "lost"}, "status"),
        ({"status": "dead_lettered"}, "status"),
        ({"attempts": "0"}, "attempts"),
        ({"attempts": "two"}, "attempts"),
        ({"attempts": "²"}, "attempts"),
        ({"recipient": "x" * 400}, "recipient"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"mode": "both"}, "mode"),
    ],
)
async def test_a_filter_that_cannot_match_as_meant_is_a_400_naming_it(signed_in: Open, query: dict[str, str], field: str) -> None:
    browser = await signed_in(VIEWER_KEY)
    page = await browser.get("/dashboard/activity", **query)
    assert (page.status, page.error_code) == (400, "invalid_parameter")
    assert f"{field}:" in page.text


async def test_a_notification_opens_its_timeline_of_changes_and_attempts_in_order(
    api: Api, signed_in: Open, memory_provider: type[MemoryProvider], clock: FakeClock
) -> None:
    memory_provider.script["+14155550103"] = ["transient", "ok"]
    _, accepted = await api.send(sms_body("+14155550103"))
    await api.idle()
    clock.advance(3600)
    api.wake()
    await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    browser = await signed_in(LIVE_KEY)
    page = await browser.get(f"/dashboard/notifications/{accepted['notification_id']}")
    assert page.status == 200
    timeline = page.text[page.text.index('id="timeline"'):]
    steps = re.findall(r"<strong>([^<]+)</strong>", timeline)
    assert steps[0].startswith("accepted")
    attempts = [step for step in steps if step.startswith("attempt")]
    assert attempts == ["attempt 1 via memory: transient in 0 ms", "attempt 2 via memory: sent in 0 ms"]
    assert steps.index(attempts[0]) < steps.index(attempts[1])
    assert "provider hiccup" in page and "+14155550103" in page


async def test_a_tenant_key_gets_404_for_another_tenants_or_another_modes_notification(api: Api, signed_in: Open) -> None:
    _, live = await api.send(sms_body())
    _, test = await api.send(sms_body(), key=TEST_KEY)
    other = await signed_in(OTHER_KEY)
    for path in (f"/dashboard/notifications/{live['notification_id']}", f"/dashboard/notifications/{live['notification_id']}?tenant=acme"):
        page = await other.get(path)
        assert page.status == 404 and page.error_code in ("notification_not_found", "tenant_not_found"), path
    for path in ("/dashboard/activity?tenant=acme", "/dashboard/dead-letters?tenant=acme", "/dashboard/webhooks?tenant=acme"):
        assert ((await other.get(path)).status, other.last.error_code if other.last else None) == (404, "tenant_not_found")
    test_key = await signed_in(TEST_KEY)
    assert (await test_key.get(f"/dashboard/notifications/{live['notification_id']}")).status == 404
    assert (await test_key.get(f"/dashboard/notifications/{test['notification_id']}")).status == 200
    live_key = await signed_in(LIVE_KEY)
    assert (await live_key.get(f"/dashboard/notifications/{test['notification_id']}")).status == 404, "a live key sees live traffic"
    operator = await signed_in(VIEWER_KEY)
    assert (await operator.get(f"/dashboard/notifications/{test['notification_id']}", tenant="acme")).status == 200
    assert (await operator.get(f"/dashboard/notifications/{live['notification_id']}", tenant="other")).status == 404
    assert (await operator.get("/dashboard/notifications/ntf_nonsense", tenant="acme")).status == 404
    assert (await operator.get("/dashboard/activity", tenant="nobody")).status == 404


async def test_an_operator_sees_every_tenant_and_picks_one(api: Api, signed_in: Open) -> None:
    _, acme = await api.send(sms_body())
    _, other = await api.send(sms_body(), key=OTHER_KEY)
    viewer = await signed_in(VIEWER_KEY)
    first = await viewer.get("/dashboard/activity")
    assert re.search(r'<option value="acme" selected>', first.text) and '<option value="other"' in first.text
    assert acme["notification_id"] in first and other["notification_id"] not in first
    second = await viewer.get("/dashboard/activity", tenant="other")
    assert other["notification_id"] in second and acme["notification_id"] not in second


# Dead letters and replay


async def test_an_operator_replays_a_dead_letter_and_the_history_says_who(
    api: Api, signed_in: Open, memory_provider: type[MemoryProvider]
) -> None:
    notification_id, delivery_id = await dead_letter(api, memory_provider)
    operator = await signed_in(OPERATOR_KEY)
    listing = await operator.get("/dashboard/dead-letters", tenant="acme")
    assert delivery_id in listing and f'action="/dashboard/dead-letters/{delivery_id}/replay"' in listing.text
    done = await operator.post(f"/dashboard/dead-letters/{delivery_id}/replay", {"csrf": listing.csrf, "tenant": "acme"})
    assert done.status == 200 and done.url.startswith("/dashboard/dead-letters") and 'id="replayed"' in done.text
    found = await api.wait_for(notification_id, lambda n: n["status"] == "sent")
    assert any(entry["actor"] == "operator:otto" and entry["action"] == "replayed" for entry in found["audit"]), found["audit"]
    again = await operator.post(f"/dashboard/dead-letters/{delivery_id}/replay", {"csrf": listing.csrf, "tenant": "acme"})
    assert (again.status, again.error_code) == (409, "not_dead_lettered")
    unknown = await operator.post("/dashboard/dead-letters/dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV/replay", {"csrf": listing.csrf, "tenant": "acme"})
    assert (unknown.status, unknown.error_code) == (404, "delivery_not_found")
    elsewhere = await operator.post(f"/dashboard/dead-letters/{delivery_id}/replay", {"csrf": listing.csrf, "tenant": "other"})
    assert elsewhere.status == 404, "another tenant has no such delivery"


async def test_a_viewer_sees_dead_letters_without_a_replay_button_and_its_post_is_refused(
    api: Api, signed_in: Open, memory_provider: type[MemoryProvider]
) -> None:
    _, delivery_id = await dead_letter(api, memory_provider)
    viewer = await signed_in(VIEWER_KEY)
    listing = await viewer.get("/dashboard/dead-letters", tenant="acme")
    assert delivery_id in listing and "/replay" not in listing.text and 'id="replay-hint"' in listing.text
    refused = await viewer.post(f"/dashboard/dead-letters/{delivery_id}/replay", {"csrf": listing.csrf, "tenant": "acme"})
    assert (refused.status, refused.error_code) == (403, "role_forbidden")
    rows = await api.app[STORE].list_dead_letters("acme", DeadLetterFilter(), limit=5, cursor=None)
    assert [row.delivery_id for row in rows.items] == [delivery_id], "still dead-lettered"


async def test_a_tenant_key_replays_its_own_dead_letters_only_and_a_forged_form_is_refused(
    api: Api, signed_in: Open, memory_provider: type[MemoryProvider]
) -> None:
    _, delivery_id = await dead_letter(api, memory_provider)
    other = await signed_in(OTHER_KEY)
    page = await other.get("/dashboard/dead-letters")
    assert delivery_id not in page
    assert (await other.post(f"/dashboard/dead-letters/{delivery_id}/replay", {"csrf": page.csrf})).status == 404
    test_key = await signed_in(TEST_KEY)
    test_page = await test_key.get("/dashboard/dead-letters")
    assert delivery_id not in test_page, "a live dead letter is not the test key's"
    assert (await test_key.post(f"/dashboard/dead-letters/{delivery_id}/replay", {"csrf": test_page.csrf})).status == 404
    owner = await signed_in(LIVE_KEY)
    forged = await owner.post(f"/dashboard/dead-letters/{delivery_id}/replay", {"csrf": page.csrf})
    assert (forged.status, forged.error_code) == (403, "csrf_failed"), "another session's token is no token"
    done = await owner.act("/dashboard/dead-letters", f"/dashboard/dead-letters/{delivery_id}/replay")
    assert done.status == 200 and 'id="replayed"' in done.text


async def test_dead_letters_filter_by_channel_and_reason(api: Api, signed_in: Open, memory_provider: type[MemoryProvider]) -> None:
    _, delivery_id = await dead_letter(api, memory_provider)
    viewer = await signed_in(VIEWER_KEY)
    assert delivery_id in await viewer.get("/dashboard/dead-letters", tenant="acme", channel="sms", reason="permanent")
    assert delivery_id not in await viewer.get("/dashboard/dead-letters", tenant="acme", channel="email")
    assert delivery_id not in await viewer.get("/dashboard/dead-letters", tenant="acme", reason="expired")
    bad = await viewer.get("/dashboard/dead-letters", tenant="acme", reason="bored")
    assert (bad.status, bad.error_code) == (400, "invalid_parameter")


# Providers, policy, webhooks


async def test_providers_show_each_instances_breaker_error_rate_and_throughput(
    api: Api, signed_in: Open, memory_provider: type[MemoryProvider]
) -> None:
    memory_provider.script["+14155550110"] = ["permanent"]
    for phone in ("+14155550110", "+14155550111", "+14155550112", "+14155550113"):
        await api.send(sms_body(phone))
    await api.idle()
    viewer = await signed_in(VIEWER_KEY)
    page = await viewer.get("/dashboard/providers")
    row = page.text[page.text.index('id="instance-memory"'):].split("</tr>")[0]
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[0] == "memory" and "closed" in cells[4]
    assert cells[5:10] == ["3", "1", "0", "25%", "0.8"], cells
    assert 'id="instance-sandbox"' in page.text
    tenant = await signed_in(OTHER_KEY)
    assert 'id="instance-memory"' in (await tenant.get("/dashboard/providers")).text
    test_key = await signed_in(TEST_KEY)
    sandbox_only = await test_key.get("/dashboard/providers")
    assert 'id="instance-sandbox"' in sandbox_only.text and 'id="instance-memory"' not in sandbox_only.text


async def test_policy_shows_the_version_in_force_and_the_last_reload_error_to_operators_only(
    api: Api, signed_in: Open, policy_dir: Path
) -> None:
    version = api.app[POLICIES].current.version
    admin = await signed_in(ADMIN_KEY)
    page = await admin.get("/dashboard/policy")
    assert f'id="policy-version">{version}<' in page.text and "none: the files on disk" in page.text
    (policy_dir / "broken.yaml").write_text("channels:\n  sms: {providers: [nowhere]}\n")
    reloaded = await admin.act("/dashboard/policy", "/dashboard/policy/reload")
    assert reloaded.url == "/dashboard/policy?reloaded=refused"
    assert "broken.yaml:2" in reloaded.text and f'id="policy-version">{version}<' in reloaded.text
    tenant = await signed_in(LIVE_KEY)
    tenant_page = await tenant.get("/dashboard/policy")
    assert "were refused" in tenant_page.text and "broken.yaml" not in tenant_page.text, "another tenant's files are not a tenant's to read"
    assert 'id="reload"' not in tenant_page.text
    operator = await signed_in(OPERATOR_KEY)
    assert 'id="reload"' not in (await operator.get("/dashboard/policy")).text
    refused = await operator.act("/dashboard/policy", "/dashboard/policy/reload")
    assert (refused.status, refused.error_code) == (403, "role_forbidden")
    (policy_dir / "broken.yaml").unlink()
    fixed = await admin.act("/dashboard/policy", "/dashboard/policy/reload")
    assert fixed.url == "/dashboard/policy?reloaded=unchanged" and "none: the files on disk" in fixed.text


async def test_webhooks_show_each_endpoint_with_its_state_last_error_and_deliveries_given_up_on(
    aiohttp_client: Any, aiohttp_server: Any, make_app: Callable[..., web.Application], policy_dir: Path
) -> None:
    async def failing(_request: web.Request) -> web.Response:
        return web.Response(status=500)

    receiver = web.Application()
    receiver.router.add_post("/hook", failing)
    url = (await aiohttp_server(receiver)).make_url("/hook")
    (policy_dir / "webhooks.yaml").write_text(
        f"webhooks:\n  acme:\n    main:\n      url: {url}\n      events: [message.queued]\n      secret: {signing.new_secret()}\n"
        "      allow_private: true\nretry_schedules:\n  webhooks: {delays: [0s], max_attempts: 2}\n"
    )
    api = Api(await aiohttp_client(make_app()))
    await api.send(sms_body())
    store = api.app[STORE]

    async def given_up() -> None:
        while not (await store.list_webhook_deliveries("acme", status="dead")).items:
            await store.wait_for_commit(store.commits)

    await asyncio.wait_for(given_up(), 5)
    for key, shows in ((VIEWER_KEY, True), (LIVE_KEY, True), (OTHER_KEY, False)):
        browser = Browser(api.client)
        try:
            await browser.sign_in(key)
            page = await browser.get("/dashboard/webhooks")
            assert page.status == 200
            assert ('id="endpoint-main"' in page.text) is shows, key
            if shows:
                section = page.text[page.text.index('id="endpoint-main"'):]
                assert "e-failing" in section and "HTTP 500" in section and "message.queued" in section and str(url) in section
        finally:
            await browser.close()


OPEN_DASHBOARD_ROUTES = {("GET", "/dashboard"), ("GET", "/dashboard/sign-in"), ("POST", "/dashboard/sign-in"), ("GET", "/dashboard/static/dashboard.css")}


async def test_every_dashboard_route_but_signing_in_and_the_stylesheet_needs_a_session(api: Api) -> None:
    """The API's key check leaves /dashboard to the session: without one, a page sends to the sign-in form and a form is refused."""
    browser = Browser(api.client)
    try:
        for route in api.app.router.routes():
            template = route.resource.canonical if route.resource is not None else ""
            if route.method in ("HEAD", "*") or not template.startswith("/dashboard") or (route.method, template) in OPEN_DASHBOARD_ROUTES:
                continue
            path = re.sub(r"\{[a-z_]+\}", "x", template)
            page = await (browser.get(path) if route.method == "GET" else browser.post(path, {"csrf": "x"}))
            expected = (200, "/dashboard/sign-in", None) if route.method == "GET" else (401, path, "session_expired")
            assert (page.status, page.url, page.error_code) == expected, (route.method, template)
        with_a_key = await api.client.get("/dashboard/activity", headers=api.headers(), allow_redirects=False)
        assert with_a_key.status == 303, "an API key in a header opens no page: the dashboard takes it once, in its form"
    finally:
        await browser.close()
