"""The dashboard in headless Chromium: what a person clicks, with a screenshot of each step kept as a test artifact.

Driven by Playwright with the system's Chromium (Debian's ``chromium`` package; Playwright's own
browser download is never used). Without a Chromium binary, or without the ``playwright``
package, these tests skip and say why; the plain HTTP tests in ``test_dashboard_pages.py``
check every page and permission everywhere. Screenshots go to ``test-artifacts/dashboard/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LIVE_KEY, OTHER_KEY, Api, FakeClock, MemoryProvider, sms_body
from dashboard_support import OPERATOR_KEY, VIEWER_KEY, write_operators

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "dashboard"


def chromium_binary() -> str | None:
    return next((path for path in CHROMIUM_PATHS if Path(path).exists()), None) or shutil.which("chromium")


@pytest.fixture(autouse=True)
def operators(policy_dir: Path) -> None:
    write_operators(policy_dir)


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    """A headless Chromium, or a skip saying what is missing."""
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("TIDINGS_BROWSER_TESTS") == "required":  # CI installs Chromium and must not skip these
            pytest.fail("TIDINGS_BROWSER_TESTS=required but no Chromium binary was found (apt-get install chromium)")
        pytest.skip("no Chromium binary (apt-get install chromium): the browser tests need one; the HTTP tests cover the pages")
    playwright_api = pytest.importorskip("playwright.async_api", reason="the playwright package is not installed (pip install -e '.[test]')")
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            await browser.close()


class Person:
    """One person at one browser window, signed in with a key; every step can leave a screenshot."""

    def __init__(self, page: Any, base: str, name: str) -> None:
        self.page, self.base, self.name = page, base, name

    async def open(self, path: str) -> Any:
        return await self.page.goto(self.base + path)

    async def snap(self, step: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{step}.png"), full_page=True)

    async def sign_in(self, key: str) -> None:
        await self.open("/dashboard")
        await self.page.fill("#key", key)
        await self.snap("0-sign-in")
        await self.page.click("#sign-in")
        await self.page.wait_for_url("**/dashboard/activity**")


async def person(chromium: Any, api: Api, name: str, key: str) -> Person:
    context = await chromium.new_context(viewport={"width": 1280, "height": 800})
    visitor = Person(await context.new_page(), str(api.client.make_url("")).rstrip("/"), name)
    await visitor.sign_in(key)
    return visitor


async def test_an_operator_filters_activity_opens_a_timeline_and_replays_a_dead_letter(
    api: Api, chromium: Any, memory_provider: type[MemoryProvider], clock: FakeClock
) -> None:
    memory_provider.script["+14155550102"] = ["transient", "ok"]
    memory_provider.script["+14155550199"] = ["permanent"]
    _, plain = await api.send(sms_body("+14155550101"))
    _, retried = await api.send(sms_body("+14155550102"))
    _, dead = await api.send(sms_body("+14155550199"))
    await api.idle()
    clock.advance(3600)
    api.wake()
    await api.wait_for(retried["notification_id"], lambda n: n["status"] == "sent")

    otto = await person(chromium, api, "operator", OPERATOR_KEY)
    page = otto.page
    assert await page.locator("#role").inner_text() == "operator"
    assert await page.locator("#activity tbody tr").count() == 3
    await otto.snap("1-activity")

    await page.select_option("#filter-channel", "sms")
    await page.fill("#filter-attempts", "2")
    await page.click("#apply-filters")
    await page.wait_for_url("**attempts=2**")
    rows = page.locator("#activity tbody tr")
    assert await rows.count() == 1 and retried["notification_id"] in await rows.inner_text()
    await otto.snap("2-filtered")

    await page.click(f"text={retried['notification_id']}")
    await page.wait_for_url(f"**/notifications/{retried['notification_id']}**")
    steps = await page.locator("#timeline li").all_inner_texts()
    assert any("attempt 1 via memory: transient" in step for step in steps) and any("attempt 2 via memory: sent" in step for step in steps)
    assert await page.locator("#notification-status").inner_text() == "sent"
    await otto.snap("3-timeline")

    await page.click("nav >> text=Dead letters")
    await page.wait_for_url("**/dead-letters**")
    assert await page.locator("#dead-letters tbody tr").count() == 1
    await otto.snap("4-dead-letters")
    await page.click("button.replay")
    await page.wait_for_selector("#replayed")
    await otto.snap("5-replayed")
    found = await api.wait_for(dead["notification_id"], lambda n: n["status"] == "sent")
    assert any(entry["actor"] == "operator:otto" for entry in found["audit"])
    assert plain["notification_id"] not in await page.content()


async def test_a_viewer_has_no_replay_and_is_refused_one_and_a_tenant_never_sees_another_tenants_message(
    api: Api, chromium: Any, memory_provider: type[MemoryProvider]
) -> None:
    memory_provider.script["+14155550199"] = ["permanent"]
    _, dead = await api.send(sms_body("+14155550199"))
    found = await api.wait_for(dead["notification_id"], lambda n: n["status"] == "failed")
    delivery_id = found["deliveries"][0]["delivery_id"]

    vera = await person(chromium, api, "viewer", VIEWER_KEY)
    page = vera.page
    await vera.open("/dashboard/dead-letters?tenant=acme")
    assert await page.locator("#dead-letters tbody tr").count() == 1
    assert await page.locator("button.replay").count() == 0 and await page.locator("#replay-hint").is_visible()
    await vera.snap("1-dead-letters-no-replay")
    csrf = await page.locator("input[name=csrf]").first.get_attribute("value")
    refused = await page.request.post(
        f"{vera.base}/dashboard/dead-letters/{delivery_id}/replay", form={"csrf": csrf, "tenant": "acme"}, headers={"Origin": vera.base}
    )
    assert refused.status == 403 and "role_forbidden" in await refused.text()
    for section in ("providers", "policy", "webhooks"):
        await vera.open(f"/dashboard/{section}")
        await vera.snap(f"2-{section}")

    acme = await person(chromium, api, "tenant-acme", LIVE_KEY)
    await acme.open(f"/dashboard/notifications/{dead['notification_id']}")
    assert await acme.page.locator("#notification-status").inner_text() == "failed"
    await acme.snap("1-own-timeline")

    other = await person(chromium, api, "tenant-other", OTHER_KEY)
    response = await other.open(f"/dashboard/notifications/{dead['notification_id']}")
    assert response.status == 404 and await other.page.locator("#error-code").inner_text() == "notification_not_found"
    await other.snap("1-another-tenants-message-404")
    await other.open("/dashboard/activity")
    assert dead["notification_id"] not in await other.page.content()
    await other.page.click("#sign-out")
    await other.page.wait_for_url("**/dashboard/sign-in")
    await other.snap("2-signed-out")
