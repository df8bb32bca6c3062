"""Pages from the package's Jinja2 templates, with headers that keep them to this origin and out of caches.

Every value is escaped (autoescape), a template that names a value it was not given fails
(``StrictUndefined``) rather than showing a blank, and the Content-Security-Policy lets a page
load its stylesheet from this origin and nothing else: no script, no frame, no other site, so
an appliance with no internet shows the whole page and an injected tag could do nothing.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any, Final, TypeVar

import jinja2
from aiohttp import web

from gateway.errors import ApiError

R = TypeVar("R", bound=web.StreamResponse)
ROOT: Final = "/dashboard"
"""Where the dashboard lives; every link and cookie path starts with it."""
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",  # not no-referrer: with it a browser posts forms with Origin: null
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@functools.cache
def environment() -> jinja2.Environment:
    """The templates in ``gateway/dashboard/templates``, loaded once and compiled on first use."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.dashboard", "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["percent"] = percent
    return env


def when(timestamp: float | str | None) -> str:
    """A time as people read it in a table: UTC to the second; one the API already wrote out as it is; a dash for none."""
    if timestamp is None:
        return "—"
    if isinstance(timestamp, str):
        return timestamp
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def percent(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.0f}%"


def render(template: str, status: int = 200, **context: Any) -> web.Response:
    """``template`` filled with ``context``, as an HTML response with the dashboard's headers."""
    body = environment().get_template(template).render({"root": ROOT, **context})
    return secured(web.Response(text=body, status=status, content_type="text/html", charset="utf-8"))


def render_error(error: ApiError, **context: Any) -> web.Response:
    """A refusal as a page: its status, its message and its code (the same codes the API uses)."""
    return render("error.html", error.status, error=error, **context)


def redirect(location: str) -> web.Response:
    """303 See Other to ``location``: after a form, the browser asks for the page with GET (reloading it posts nothing again)."""
    return secured(web.Response(status=303, headers={"Location": location}))


def secured(response: R) -> R:
    response.headers.update(SECURITY_HEADERS)
    return response
