"""The dashboard as a person's browser meets it, over plain HTTP: a cookie jar of its own, forms posted with their CSRF token.

Shared by the HTTP tests and the Chromium tests: the operators' keys (one per role) written
into the policy beside conftest's tenants, and :class:`Browser`, which signs in and reads pages.
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

VIEWER_KEY = "tdo_viewer_key_for_dashboard_tests_01"
OPERATOR_KEY = "tdo_operatr_key_for_dashboard_tests_02"
ADMIN_KEY = "tdo_admin00_key_for_dashboard_tests_03"
OPERATORS = {"vera": (VIEWER_KEY, "viewer"), "otto": (OPERATOR_KEY, "operator"), "ada": (ADMIN_KEY, "admin")}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def operators_policy() -> str:
    lines = ["operators:"]
    for name, (key, role) in OPERATORS.items():
        lines.append(f"  {name}: {{prefix: {key[:12]}, sha256: {hashlib.sha256(key.encode()).hexdigest()}, role: {role}}}")
    return "\n".join(lines) + "\n"


def write_operators(policy_dir: Path) -> None:
    (policy_dir / "operators.yaml").write_text(operators_policy())


class Page:
    """A page as it came back: its status, where it was (after redirects), its HTML."""

    def __init__(self, status: int, url: str, text: str, headers: Any) -> None:
        self.status, self.url, self.text, self.headers = status, url, text, headers

    @property
    def csrf(self) -> str:
        found = _CSRF.search(self.text)
        assert found, "the page has a form with a CSRF token"
        return html.unescape(found[1])

    @property
    def error_code(self) -> str | None:
        found = re.search(r'id="error-code">([^<]+)<', self.text)
        return found[1] if found else None

    def __contains__(self, text: str) -> bool:
        return html.escape(text, quote=False) in self.text or text in self.text


class Browser:
    """One person's browser: its own cookies, following redirects as a browser does."""

    def __init__(self, client: TestClient) -> None:
        self._client = client
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.last: Page | None = None

    def url(self, path: str) -> str:
        return str(self._client.make_url(path))

    async def get(self, path: str, **params: str) -> Page:
        async with self.session.get(self.url(path), params=params) as response:
            self.last = Page(response.status, str(response.url.relative()), await response.text(), response.headers)
        return self.last

    async def post(self, path: str, form: dict[str, str], *, follow: bool = True, **headers: str) -> Page:
        async with self.session.post(self.url(path), data=form, allow_redirects=follow, headers=headers) as response:
            self.last = Page(response.status, str(response.url.relative()), await response.text(), response.headers)
        return self.last

    async def sign_in(self, key: str) -> Page:
        form = await self.get("/dashboard/sign-in")
        return await self.post("/dashboard/sign-in", {"csrf": form.csrf, "key": key})

    async def act(self, page_path: str, action: str, **fields: str) -> Page:
        """Post a form of ``page_path`` to ``action`` with the CSRF token the page carries, as its button would."""
        page = await self.get(page_path)
        return await self.post(action, {"csrf": page.csrf, **fields})

    def cookie(self, name: str) -> Any:
        return next((cookie for cookie in self.session.cookie_jar if cookie.key == name), None)

    async def close(self) -> None:
        await self.session.close()
