"""``/openapi.json`` (the API description) and ``/docs`` (a page that renders it), with no key and no CDN.

The document is generated once, on its first request, from the routes the application serves
(:func:`gateway.http.openapi.describe`), and served as bytes from then on. ``/docs`` is Swagger
UI, whose files come from the ``swagger-ui-bundle-v2`` package and are served by the gateway
itself under ``/docs/``: an appliance without internet shows its documentation all the same.
Its ``Content-Security-Policy`` lets the page load nothing from elsewhere, and the validator
badge, which Swagger UI fetches from the internet by default, is turned off.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Final

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # the package ships no type information

from gateway.errors import NotFoundError
from gateway.http.api import raw_json_response
from gateway.http.auth import public

routes = web.RouteTableDef()
class _Document:
    """The application's OpenAPI document, described on its first request and kept (generating the
    models' schemas takes tens of milliseconds: a gateway that is never asked for it never pays)."""

    def __init__(self) -> None:
        self._rendered: bytes | None = None

    def of(self, router: web.UrlDispatcher) -> bytes:
        if self._rendered is None:
            # Imported here: the description's response models cost a server ~40 ms of start-up and
            # their memory, and most gateways are never asked for the document.
            from gateway.http.openapi import describe, render

            self._rendered = render(describe(router))
        return self._rendered


DOCUMENT: Final = web.AppKey("openapi_document", _Document)
VIEWER: Final = Path(str(swagger_ui_path))
VIEWER_FILES: Final = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png"})
"""What the page loads of Swagger UI's distribution; nothing else of the package is served."""
INITIALIZER: Final = "tidings-docs.js"
CSP: Final = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
PAGE: Final = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Tidings API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/tidings-docs.js"></script>
</body>
</html>
"""
SCRIPT: Final = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""


def setup(app: web.Application) -> None:
    """Mount the routes; the application is described when first asked, once its routes are all in place."""
    app.add_routes(routes)
    app[DOCUMENT] = _Document()


@routes.get("/openapi.json")
@public
async def openapi_document(request: web.Request) -> web.Response:
    return raw_json_response(request.app[DOCUMENT].of(request.app.router))


@routes.get("/docs")
@public
async def docs_page(_request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html", headers={"Content-Security-Policy": CSP})


@routes.get("/docs/{asset}")
@public
async def docs_asset(request: web.Request) -> web.StreamResponse:
    """One of the page's own files; any other name is a 404, so nothing outside them can be asked for."""
    name = request.match_info["asset"]
    if name == INITIALIZER:
        return web.Response(text=SCRIPT, content_type="text/javascript")
    if name not in VIEWER_FILES:
        raise NotFoundError(f"No documentation file {name!r}.", code="asset_not_found")
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.FileResponse(VIEWER / name, headers={"Content-Type": content_type, "Cache-Control": "public, max-age=86400"})
