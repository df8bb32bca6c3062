"""``/dashboard``: the pages an operator opens when a customer says "I never got the SMS".

Every page is rendered on the server from the same store reads the API uses, for the tenant
and mode :mod:`gateway.dashboard.access` allows. None takes an API key in a header: each is
:func:`~gateway.http.auth.public` to the API's key check and runs :func:`page` instead, which
finds the visitor from the session cookie, refuses a POST without the session's CSRF token (or
from another origin), and shows any refusal as a page with its status and the API's code.
"""

from __future__ import annotations

import functools
import importlib.resources
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from gateway import ids, statuses
from gateway.dashboard.access import MODES, Visitor, visitor_of
from gateway.dashboard.rendering import ROOT, redirect, render, render_error
from gateway.dashboard.sessions import SESSION_COOKIE, SESSION_SECONDS, SIGN_IN_COOKIE, SIGN_IN_SECONDS, Kind, Session
from gateway.dashboard.timeline import timeline
from gateway.engine.instance_health import WINDOW_SECONDS, RecentSends
from gateway.errors import ApiError, ConflictError, ForbiddenError, NotFoundError, PayloadTooLargeError, UnauthorizedError
from gateway.http.appkeys import CLOCK, DASHBOARD_SESSIONS, DISPATCHER, POLICIES, POLICY_WATCHER, PROVIDERS, STORE
from gateway.http.auth import policy_of, public
from gateway.http.paging import bad_cursor, bad_parameter, one_of
from gateway.http.views import webhook_endpoint_view
from gateway.policy.keys import authenticate, authenticate_operator, hash_key
from gateway.policy.models import SANDBOX
from gateway.store import DeadLetterFilter, InvalidCursorError, NotificationFilter, Page

routes = web.RouteTableDef()
PAGE_SIZE: Final = 50
MAX_KEY_CHARS: Final = 256
MAX_RECIPIENT_CHARS: Final = 320
MAX_ATTEMPTS_FILTER: Final = 1000
RECENT_WEBHOOK_FAILURES: Final = 5
VisitorHandler = Callable[[web.Request, Visitor], Awaitable[web.StreamResponse]]
_SESSION: Final = web.RequestKey("dashboard_session", Session)


def page(handler: VisitorHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Run ``handler`` for the visitor signed in, or send them to sign in; a POST must carry the session's CSRF token."""

    @functools.wraps(handler)
    async def serve(request: web.Request) -> web.StreamResponse:
        signer = request.app[DASHBOARD_SESSIONS]
        session = signer.unseal(request.cookies.get(SESSION_COOKIE), request.app[CLOCK].now())
        visitor = visitor_of(session, policy_of(request)) if session is not None else None
        if session is None or visitor is None:
            if request.method != "GET":
                return render_error(UnauthorizedError("Your session has ended; sign in again.", code="session_expired"))
            response = redirect(f"{ROOT}/sign-in")
            response.del_cookie(SESSION_COOKIE, path=ROOT)
            return response
        request[_SESSION] = session
        try:
            if request.method == "POST":
                await _check_form(request, session)
            return await handler(request, visitor)
        except ApiError as err:
            return render_error(err, **chrome(request, visitor))
        except web.HTTPRequestEntityTooLarge:
            return render_error(PayloadTooLargeError("The form is larger than allowed.", code="payload_too_large"), **chrome(request, visitor))

    return serve


async def _check_form(request: web.Request, session: Session) -> None:
    """A POST comes from this origin's own form: the session's token in the form, and no other site's Origin."""
    if not _same_origin(request):
        raise ForbiddenError("This form was posted from another site.", code="csrf_failed")
    form = await request.post()
    token = form.get("csrf")
    if not request.app[DASHBOARD_SESSIONS].check_token("csrf", session.nonce, token if isinstance(token, str) else None):
        raise ForbiddenError("This form is out of date or was not made by the dashboard; reload the page and try again.", code="csrf_failed")


def _same_origin(request: web.Request) -> bool:
    """No ``Origin`` (an older browser), or one naming this host (the scheme may differ behind a TLS proxy)."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def chrome(request: web.Request, visitor: Visitor, **page_context: Any) -> dict[str, Any]:
    """What every page around its content needs: who is signed in, the CSRF token, the tenant and mode picked."""
    session = request[_SESSION]
    policy = policy_of(request)
    context: dict[str, Any] = {
        "visitor": visitor,
        "csrf": request.app[DASHBOARD_SESSIONS].token("csrf", session.nonce),
        "tenants": visitor.tenants(policy),
        "tenant": None,
        "mode": visitor.fixed_mode,
        "modes": MODES,
        "section": "",
    }
    return context | page_context


def show(request: web.Request, visitor: Visitor, template: str, **context: Any) -> web.Response:
    return render(template, **chrome(request, visitor, **context))


def _link(path: str, **query: str | None) -> str:
    """A dashboard URL with the query parameters that are set."""
    kept = {name: value for name, value in query.items() if value}
    return f"{ROOT}{path}" + (f"?{urlencode(kept)}" if kept else "")


# Signing in and out


@routes.get(ROOT)
@public
async def home(_request: web.Request) -> web.StreamResponse:
    return redirect(f"{ROOT}/activity")


@routes.get(f"{ROOT}/static/dashboard.css")
@public
async def stylesheet(_request: web.Request) -> web.StreamResponse:
    """The one stylesheet, served from this origin: pages load nothing from anywhere else."""
    css = importlib.resources.files("gateway.dashboard").joinpath("static/dashboard.css").read_text()
    response = web.Response(text=css, content_type="text/css", charset="utf-8")
    response.headers["Cache-Control"] = "max-age=3600"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@routes.get(f"{ROOT}/sign-in")
@public
async def sign_in_form(request: web.Request) -> web.StreamResponse:
    """The sign-in form, bound to a fresh cookie of its own; someone signed in already goes to the activity page."""
    signer = request.app[DASHBOARD_SESSIONS]
    session = signer.unseal(request.cookies.get(SESSION_COOKIE), request.app[CLOCK].now())
    if session is not None and visitor_of(session, policy_of(request)) is not None:
        return redirect(f"{ROOT}/activity")
    return _sign_in_page(request)


def _sign_in_page(request: web.Request, error: ApiError | None = None) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    response = render("sign_in.html", error.status if error else 200, error=error, csrf=request.app[DASHBOARD_SESSIONS].token("sign-in", nonce))
    response.set_cookie(SIGN_IN_COOKIE, nonce, path=ROOT, max_age=SIGN_IN_SECONDS, httponly=True, samesite="Strict", secure=request.secure)
    return response


@routes.post(f"{ROOT}/sign-in")
@public
async def sign_in(request: web.Request) -> web.StreamResponse:
    """Take the key once, and answer with a session cookie that names it without holding it."""
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return _sign_in_page(request, PayloadTooLargeError("The form is larger than allowed.", code="payload_too_large"))
    signer = request.app[DASHBOARD_SESSIONS]
    nonce, token = request.cookies.get(SIGN_IN_COOKIE), form.get("csrf")
    if not _same_origin(request) or nonce is None or not signer.check_token("sign-in", nonce, token if isinstance(token, str) else None):
        return _sign_in_page(request, ForbiddenError("The sign-in form was out of date or not the dashboard's; try again.", code="csrf_failed"))
    key = form.get("key")
    key = key.strip() if isinstance(key, str) else ""
    try:
        kind, prefix = _identify(request, key)
    except ApiError as err:
        return _sign_in_page(request, err)
    session = signer.open_session(kind, prefix, hash_key(key), request.app[CLOCK].now())
    response = redirect(f"{ROOT}/activity")
    response.set_cookie(
        SESSION_COOKIE, signer.seal(session), path=ROOT, max_age=SESSION_SECONDS, httponly=True, samesite="Strict", secure=request.secure
    )
    response.del_cookie(SIGN_IN_COOKIE, path=ROOT)
    return response


def _identify(request: web.Request, key: str) -> tuple[Kind, str]:
    """Whose key this is: an operator's, else a tenant's (401 unknown, 403 suspended, as the API says)."""
    if not key:
        raise UnauthorizedError("Paste an API key or an operator key.", code="key_required")
    if len(key) > MAX_KEY_CHARS:
        raise UnauthorizedError("Unknown key.", code="invalid_api_key")
    policy = policy_of(request)
    operator = authenticate_operator(policy, key)
    if operator is not None:
        return "operator", operator.key_prefix
    try:
        principal = authenticate(policy, key)
    except UnauthorizedError:
        raise UnauthorizedError("Unknown key: not a tenant's API key nor an operator key in the policy in force.", code="invalid_api_key") from None
    return "tenant", principal.key_prefix


@routes.post(f"{ROOT}/sign-out")
@public
@page
async def sign_out(_request: web.Request, _visitor: Visitor) -> web.StreamResponse:
    response = redirect(f"{ROOT}/sign-in")
    response.del_cookie(SESSION_COOKIE, path=ROOT)
    return response


# Activity and a message's timeline


@dataclass(frozen=True, slots=True)
class ActivityFilter:
    """The activity page's filters, checked: what the store is asked, and what the form shows back."""

    where: NotificationFilter
    shown: Mapping[str, str]


def activity_filter(request: web.Request, mode: str | None) -> ActivityFilter:
    """Channel, recipient, status and attempts from the query; each refused (400, naming it) if it cannot match as meant."""
    query, policy = request.query, policy_of(request)
    channel = query.get("channel") or None
    if channel is not None and channel not in policy.channels:
        raise bad_parameter("channel", f"unknown channel {channel!r}")
    status = one_of("status", query.get("status"), statuses.ALL)
    recipient = (query.get("recipient") or "").strip() or None
    if recipient is not None and len(recipient) > MAX_RECIPIENT_CHARS:
        raise bad_parameter("recipient", f"is longer than {MAX_RECIPIENT_CHARS} characters")
    attempts_text = (query.get("attempts") or "").strip()
    if attempts_text and not (attempts_text.isascii() and attempts_text.isdigit() and 1 <= int(attempts_text) <= MAX_ATTEMPTS_FILTER):
        raise bad_parameter("attempts", f"must be a whole number from 1 to {MAX_ATTEMPTS_FILTER}")
    where = NotificationFilter(status=status, channel=channel, recipient=recipient, min_attempts=int(attempts_text) if attempts_text else None, mode=mode)
    shown = {"channel": channel or "", "status": status or "", "recipient": recipient or "", "attempts": attempts_text}
    return ActivityFilter(where, shown)


@routes.get(f"{ROOT}/activity")
@public
@page
async def activity(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Recent notifications, newest first, filtered; each opens its timeline."""
    policy, query = policy_of(request), request.query
    tenant, mode = visitor.tenant(policy, query.get("tenant")), visitor.mode(query.get("mode"))
    chosen = activity_filter(request, mode)
    found: Page[Any] = Page([], None)
    if tenant is not None:
        found = await _paged(lambda cursor: request.app[STORE].list_notifications(tenant, chosen.where, limit=PAGE_SIZE, cursor=cursor), request)
    older = _link("/activity", tenant=tenant, mode=mode, cursor=found.next_cursor, **chosen.shown) if found.next_cursor else None
    return show(
        request, visitor, "activity.html", section="activity", tenant=tenant, mode=mode, notifications=found.items, filters=chosen.shown,
        channels=sorted(spec.name for spec in policy.channels), statuses=sorted(statuses.ALL), older=older,
    )


async def _paged(fetch: Callable[[str | None], Awaitable[Page[Any]]], request: web.Request) -> Page[Any]:
    try:
        return await fetch(request.query.get("cursor") or None)
    except InvalidCursorError:
        raise bad_cursor() from None


@routes.get(f"{ROOT}/notifications/{{notification_id}}")
@public
@page
async def notification(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """What happened to this message: its deliveries, and every change and attempt in order."""
    policy = policy_of(request)
    tenant, mode = visitor.tenant(policy, request.query.get("tenant")), visitor.fixed_mode
    notification_id = request.match_info["notification_id"]
    found = None
    if tenant is not None and ids.has_prefix(notification_id, ids.NOTIFICATION):
        found = await request.app[STORE].get_notification(tenant, notification_id, mode=mode)
    if found is None:
        raise NotFoundError(f"No notification {notification_id!r}.", code="notification_not_found")
    return show(request, visitor, "notification.html", section="activity", tenant=tenant, notification=found, steps=timeline(found))


# Dead letters


@routes.get(f"{ROOT}/dead-letters")
@public
@page
async def dead_letters(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """The deliveries given up on, newest first, filtered by channel and reason; each with a replay button for those allowed."""
    policy, query = policy_of(request), request.query
    tenant, mode = visitor.tenant(policy, query.get("tenant")), visitor.mode(query.get("mode"))
    channel = query.get("channel") or None
    reason = one_of("reason", query.get("reason"), statuses.DEAD_REASONS)
    where = DeadLetterFilter(channel=channel, reason=reason, mode=mode)
    found: Page[Any] = Page([], None)
    if tenant is not None:
        found = await _paged(lambda cursor: request.app[STORE].list_dead_letters(tenant, where, limit=PAGE_SIZE, cursor=cursor), request)
    older = _link("/dead-letters", tenant=tenant, mode=mode, channel=channel, reason=reason, cursor=found.next_cursor) if found.next_cursor else None
    replayed = query.get("replayed", "")
    return show(
        request, visitor, "dead_letters.html", section="dead-letters", tenant=tenant, mode=mode, letters=found.items, older=older,
        filters={"channel": channel or "", "reason": reason or ""}, reasons=statuses.DEAD_REASONS,
        channels=sorted(spec.name for spec in policy.channels), replayed=replayed if ids.has_prefix(replayed, ids.DELIVERY) else None,
    )


@routes.post(f"{ROOT}/dead-letters/{{delivery_id}}/replay")
@public
@page
async def replay(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Queue one dead letter again (operator role and up, or the tenant's own key); 404 if not the tenant's, 409 if not dead."""
    visitor.require_replay()
    form = await request.post()
    asked = form.get("tenant")
    tenant = visitor.tenant(policy_of(request), asked if isinstance(asked, str) else None)
    delivery_id = request.match_info["delivery_id"]
    if tenant is None or not ids.has_prefix(delivery_id, ids.DELIVERY):
        raise NotFoundError(f"No delivery {delivery_id!r}.", code="delivery_not_found")
    replayed = await request.app[STORE].replay(tenant, delivery_ids=[delivery_id], actor=visitor.actor, mode=visitor.fixed_mode)
    if replayed.not_dead_lettered:
        raise ConflictError(f"Delivery {delivery_id!r} is not dead-lettered; only dead letters can be replayed.", code="not_dead_lettered")
    if not replayed.delivery_ids:
        raise NotFoundError(f"No delivery {delivery_id!r}.", code="delivery_not_found")
    request.app[DISPATCHER].wake(replayed.channels)
    return redirect(_link("/dead-letters", tenant=tenant if visitor.fixed_tenant is None else None, replayed=delivery_id))


# Provider instances


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One provider instance as the providers page shows it."""

    name: str
    plugin: str
    channels: str
    tenants: str
    breaker: str
    next_probe_at: float | None
    recent: RecentSends


@routes.get(f"{ROOT}/providers")
@public
@page
async def providers(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Each provider instance's breaker, recent error rate and throughput: every instance for operators, a tenant's own for its key."""
    return show(request, visitor, "providers.html", section="providers", rows=instance_rows(request, visitor), window_minutes=WINDOW_SECONDS // 60)


def instance_rows(request: web.Request, visitor: Visitor) -> list[InstanceRow]:
    policy, app = policy_of(request), request.app
    attempts = app[DISPATCHER].attempts
    rows = []
    for name, provider in sorted(app[PROVIDERS].current.instances.items()):
        served = policy.tenants_served_by(name)
        if visitor.fixed_tenant is not None and not (SANDBOX == name if visitor.fixed_mode == "test" else visitor.fixed_tenant in served):
            continue  # a test key sends through the sandbox alone; a live key through the instances its routes name
        instance = policy.provider_instances.get(name)
        breaker = attempts.breakers.find(name)
        rows.append(InstanceRow(
            name=name, plugin=instance.plugin if instance else name, channels=", ".join(sorted(provider.channels)),
            tenants=(", ".join(served) or ("every test key" if name == SANDBOX else "")) if visitor.fixed_tenant is None else visitor.fixed_tenant,
            breaker=breaker.state if breaker else "closed", next_probe_at=breaker.next_probe_at if breaker else None,
            recent=attempts.health.recent(name),
        ))
    return rows


# Policy


@routes.get(f"{ROOT}/policy")
@public
@page
async def policy_state(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """The policy version in force and the last reload's refusal, as ``/readyz`` shows them; admins may reload."""
    holder = request.app[POLICIES]
    reloaded = request.query.get("reloaded")
    return show(
        request, visitor, "policy.html", section="policy", policy=holder.current, holder=holder,
        reloaded=reloaded if reloaded in ("switched", "unchanged", "refused") else None,
    )


@routes.post(f"{ROOT}/policy/reload")
@public
@page
async def reload_policy(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """Read the policy directory now, as SIGHUP does (admin role); the page then says what came of it."""
    visitor.require_reload()
    switched = await request.app[POLICY_WATCHER].reload()
    outcome = "switched" if switched else "refused" if request.app[POLICIES].last_error is not None else "unchanged"
    return redirect(_link("/policy", reloaded=outcome))


# Event webhook endpoints


@routes.get(f"{ROOT}/webhooks")
@public
@page
async def webhooks(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    """The tenant's event webhook endpoints: each one's state, its last error and its latest deliveries given up on."""
    policy, query, store = policy_of(request), request.query, request.app[STORE]
    tenant, mode = visitor.tenant(policy, query.get("tenant")), visitor.mode(query.get("mode"))
    endpoints = []
    if tenant is not None:
        states = await store.webhook_endpoint_states(tenant)
        for name, endpoint in sorted(policy.document.webhooks.get(tenant, {}).items()):
            dead = await store.list_webhook_deliveries(tenant, status="dead", endpoint=name, limit=RECENT_WEBHOOK_FAILURES, mode=mode)
            endpoints.append({"view": webhook_endpoint_view(name, endpoint, states.get(name)), "dead": dead.items})
    return show(request, visitor, "webhooks.html", section="webhooks", tenant=tenant, mode=mode, endpoints=endpoints)
