"""The aiohttp application: routes, middleware, and background work in ``cleanup_ctx``.

Startup order (shutdown runs it backwards): policies → store and quota usage → dashboard sessions → HTTP client session →
outcome sink and provider instances → inbound callbacks (opt-outs, processing) → retention
purges → dead-letter log → dispatcher → business events (processing, digests) → event webhooks → policy watcher. On SIGTERM the
watcher stops first, then the dispatcher stops claiming, in-flight sends finish or are released, queued writes
commit, and only then the store closes; the last line logged says so (:func:`announce_stop`).

Observability is wired here too: one :class:`~gateway.metrics.Metrics` per application, handed to
what counts; the request log and request metrics in the outermost middleware; the start line
(:func:`announce_start`, called by whoever runs the app once it listens).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import metadata

import aiohttp
from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.dashboard.sessions import SessionSigner
from gateway.engine.attempts import DispatchSettings
from gateway.engine.dead_letter_log import DeadLetterLog
from gateway.engine.digests import DigestSender
from gateway.engine.dispatcher import Dispatcher
from gateway.engine.erasure import Eraser
from gateway.engine.event_processor import EventProcessor
from gateway.engine.event_webhooks import EventWebhooks
from gateway.engine.inbound import Inbound, instance_tenants
from gateway.engine.intake import Intake
from gateway.engine.opt_outs import OptOuts
from gateway.engine.outcomes import Outcomes
from gateway.engine.provider_pool import PoolHolder, ProviderPool
from gateway.engine.quotas import Quotas
from gateway.engine.retention import Purger, Retention, TenantRetentions
from gateway.engine.switch import PolicySwitch
from gateway.engine.throttle import InstanceLimits, SourceLimits
from gateway.http.access import access_middleware
from gateway.http.api import error_middleware, header_middleware
from gateway.http.appkeys import (
    CLOCK,
    DASHBOARD_SESSIONS,
    DEAD_LETTER_LOG,
    DIGESTS,
    DISPATCHER,
    ERASER,
    EVENT_PROCESSOR,
    EVENT_WEBHOOKS,
    HTTP,
    INBOUND,
    INBOUND_LIMITS,
    INSTANCE_LIMITS,
    INTAKE,
    METRICS,
    OPT_OUTS,
    OUTCOMES,
    PLUGINS,
    POLICIES,
    POLICY_LOADER,
    POLICY_WATCHER,
    PROVIDERS,
    PURGER,
    QUOTAS,
    SETTINGS,
    STORE,
    WEBHOOK_SIGNER,
)
from gateway.http.auth import auth_middleware
from gateway.http.routes import setup_routes
from gateway.logconfig import fields
from gateway.metrics import Metrics
from gateway.plugin_api import ProviderReport, StatusUpdate
from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies
from gateway.policy.secret_values import SecretResolver
from gateway.policy.view import PolicyHolder, PolicySet
from gateway.policy.watcher import PolicyWatcher
from gateway.settings import Settings
from gateway.signing import SIGNING_KEY_FILE, Ed25519Signer
from gateway.store import SqliteStore

log = logging.getLogger(__name__)
USER_AGENT = "Tidings/0.1"
LINGER_SECONDS = 2.0
MAX_REQUEST_LINE = 64 * 1024  # bytes of a request line (method, path, query): far past any id or filter, still bounded

ENDED_WINDOWS_KEPT = 86400.0


def create_app(settings: Settings, *, plugins: PluginCatalog | None = None, clock: Clock | None = None) -> web.Application:
    """A ready-to-run application; background work starts when the app starts."""
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[access_middleware, error_middleware, header_middleware, auth_middleware],
        handler_args=connection_limits(settings),
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics(version())
    app[CLOCK] = clock or SystemClock()
    app[PLUGINS] = plugins if plugins is not None else PluginCatalog.discover()
    setup_routes(app)
    app.cleanup_ctx.extend(
        [
            _policies, _store, _dashboard_sessions, _http_session, _providers, _inbound, _retention, _dead_letter_log, _dispatcher,
            _business_events, _event_webhooks, _policy_watcher,
        ]
    )
    app.on_cleanup.append(announce_stop)  # after every cleanup context has ended: the store is closed
    return app


def version() -> str:
    """This Tidings' version, as installed."""
    try:
        return metadata.version("tidings")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def announce_start(app: web.Application, address: str) -> None:
    """The one line that says the gateway is up: its version, where it listens, the policy it serves, its store."""
    settings, policy = app[SETTINGS], app[POLICIES].current
    log.info(
        "Tidings %s serving on %s (policy version %s, store %s)", version(), address, policy.version, settings.database_path,
        extra=fields(event="start", version=version(), address=address, policy_version=policy.version, store=str(settings.database_path)),
    )


async def announce_stop(_app: web.Application) -> None:
    log.info("Tidings stopped", extra=fields(event="stop"))


def connection_limits(settings: Settings) -> dict[str, float]:
    """How long a connection may sit idle or half-sent: passed to aiohttp's server, whoever runs the app.

    ``keepalive_timeout`` closes a connection that has not completed a request's headers that
    long after it opened or after its last answer (a body is timed by the handlers, see
    :func:`gateway.http.api.read_body`). ``lingering_time`` is how long the rest of a refused
    body is read and thrown away, so the client sees the answer before the connection closes.
    ``max_line_size`` lets a request line up to :data:`MAX_REQUEST_LINE` reach the routes, so a
    long id or query (a 10 KB id) is refused by them in the error envelope (a 404, a 400 naming
    the parameter) rather than by the HTTP parser's bare 400.
    """
    timeout = settings.request_timeout_seconds
    return {"keepalive_timeout": timeout, "lingering_time": min(LINGER_SECONDS, timeout), "max_line_size": MAX_REQUEST_LINE}


def policy_loader(settings: Settings, plugins: PluginCatalog) -> Callable[[], PolicySet]:
    """How this app reads its policy directory: at start-up and on every reload."""
    return functools.partial(load_policies, settings.policy_dir, plugins, secrets=SecretResolver.from_settings(settings))


async def _policies(app: web.Application) -> AsyncIterator[None]:
    app[POLICY_LOADER] = policy_loader(app[SETTINGS], app[PLUGINS])
    policy = app[POLICY_LOADER]()
    log.info("policies loaded: version %s from %d files", policy.version, len(policy.files))
    for warning in policy.simulated_live_routes():
        log.warning("%s", warning)
    app[POLICIES] = PolicyHolder(policy)
    app[METRICS].show_policy(policy.version)
    yield


async def _store(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = SqliteStore(settings.database_path, app[CLOCK], synchronous=settings.sqlite_synchronous)
    await store.open()
    app[STORE] = store
    log.info("store open at %s", settings.database_path)
    app[QUOTAS] = quotas = Quotas(app[CLOCK], app[METRICS])
    await quotas.load(store)  # today's counts and the rate levels, before the first request
    yield
    await store.close()


async def _dashboard_sessions(app: web.Application) -> AsyncIterator[None]:
    """The dashboard's session signer: from the master key, or a secret made once in the data directory."""
    app[DASHBOARD_SESSIONS] = SessionSigner.from_settings(app[SETTINGS])
    yield


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    timeout = aiohttp.ClientTimeout(total=settings.send_timeout_seconds)
    # One pool for every provider instance: as many connections to one vendor as a channel has
    # sends in flight (aiohttp's default of 100 in all would cap a dispatch concurrency of 200).
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=settings.dispatch_concurrency)
    async with aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT}, connector=connector) as session:
        app[HTTP] = session
        yield


async def _providers(app: web.Application) -> AsyncIterator[None]:
    """Provider instances, and where their outcomes go; opt-outs are known before the first send."""
    opt_outs = OptOuts(app[STORE])
    await opt_outs.load()
    app[OPT_OUTS] = opt_outs
    outcomes = Outcomes(app[STORE], opt_outs)
    app[OUTCOMES] = outcomes
    app[PROVIDERS] = PoolHolder(_build_pool(app, app[POLICIES].current))
    yield
    await outcomes.drain()
    await app[PROVIDERS].aclose()


async def _inbound(app: web.Application) -> AsyncIterator[None]:
    """Provider callbacks: the limits per source and per instance, the processing path."""
    store, settings = app[STORE], app[SETTINGS]
    app[INBOUND_LIMITS] = SourceLimits(settings.inbound_refused_rate_per_source, settings.inbound_refused_burst_per_source, clock=app[CLOCK])
    app[INSTANCE_LIMITS] = InstanceLimits(settings.inbound_rate_per_instance, settings.inbound_burst_per_instance, clock=app[CLOCK])
    app[INBOUND] = inbound = Inbound(store, app[OPT_OUTS], refused_kept=settings.inbound_refused_max_rows)
    policy = app[POLICIES].current
    await inbound.resume(app[PROVIDERS].current.instances, functools.partial(_instance_tenants, policy))
    yield
    await inbound.drain()


async def _retention(app: web.Application) -> AsyncIterator[None]:
    """Purges by age: raw callbacks and idempotency records (settings), each tenant's notifications (its policy); and
    erasures of deleted contacts' addresses, a batch a write as a purge (those a stop cut short resume here)."""
    store, settings = app[STORE], app[SETTINGS]
    app[PURGER] = purger = Purger(
        app[CLOCK],
        [
            Retention("raw provider callbacks", settings.inbound_retention_days * 86400, store.purge_inbound),
            Retention("idempotency records", settings.idempotency_retention_hours * 3600, store.purge_idempotency_keys),
            # Ended windows no longer count (reads compare their end with the event's time); they go a day later.
            Retention("ended dedupe windows and repeat holds", ENDED_WINDOWS_KEPT, store.purge_event_windows),
        ],
        tenants=TenantRetentions(store, app[POLICIES], batch=settings.retention_batch),
        reclaim=store.reclaim_space,
    )
    app[ERASER] = eraser = Eraser(store, batch=settings.retention_batch)
    await eraser.resume()
    async with purger.running():
        yield
    await eraser.stop()


def _instance_tenants(policy: PolicySet, name: str) -> tuple[str, ...]:
    instance = policy.provider_instances.get(name)
    return instance_tenants(instance.tenant if instance else None, policy.document.tenants)


def _build_pool(app: web.Application, policy: PolicySet, reuse: ProviderPool | None = None) -> ProviderPool:
    report = functools.partial(_report, app)
    return ProviderPool.build(policy, app[PLUGINS], session=app[HTTP], clock=app[CLOCK], report=report, reuse=reuse)


def _report(app: web.Application, provider: str, updates: Sequence[ProviderReport]) -> None:
    """What a plugin reports by itself (``ProviderContext.report``): statuses to reconcile, replies and opt-outs to store."""
    app[OUTCOMES].report(provider, [update for update in updates if isinstance(update, StatusUpdate)])
    others = [update for update in updates if not isinstance(update, StatusUpdate)]
    if others:
        app[INBOUND].reported(provider, others, _instance_tenants(app[POLICIES].current, provider))


async def _dispatcher(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    dispatch = DispatchSettings(
        concurrency=settings.dispatch_concurrency,
        batch=settings.dispatch_batch,
        lease_seconds=settings.lease_seconds,
        send_timeout=settings.send_timeout_seconds,
        max_attempts=settings.max_attempts,
        retry_base=settings.retry_base_seconds,
        shutdown_grace=settings.shutdown_grace_seconds,
    )
    dispatcher = Dispatcher(app[STORE], app[OUTCOMES], app[POLICIES], lambda: app[PROVIDERS].current, app[CLOCK], dispatch, app[METRICS])
    dispatcher.start()
    app[DISPATCHER] = dispatcher
    app[INTAKE] = Intake(app[STORE], app[OPT_OUTS], app[QUOTAS], app[CLOCK], dispatcher.wake, app[METRICS])
    log.info("dispatcher %s running", dispatcher.owner)
    yield
    await dispatcher.stop()
    await app[OUTCOMES].drain()


async def _dead_letter_log(app: web.Application) -> AsyncIterator[None]:
    """Each dead letter logged with its ids and counted, once committed, whichever write made it."""
    app[DEAD_LETTER_LOG] = dead_letters = DeadLetterLog(app[STORE], app[METRICS], app[CLOCK])
    dead_letters.start()
    yield
    await dead_letters.stop()
    await dead_letters.catch_up()  # those the last sends made (the dispatcher has stopped), before the store closes


async def _business_events(app: web.Application) -> AsyncIterator[None]:
    """Business events processed from the store (those left pending by a stop first), and digests sent when due."""
    store, policies, clock, wake = app[STORE], app[POLICIES], app[CLOCK], app[DISPATCHER].wake
    digests = DigestSender(store, policies, app[QUOTAS], clock, wake, lease_seconds=app[SETTINGS].lease_seconds)
    processor = EventProcessor(
        store, policies, app[OPT_OUTS], app[QUOTAS], clock, wake, digests, lease_seconds=app[SETTINGS].lease_seconds, metrics=app[METRICS]
    )
    app[DIGESTS], app[EVENT_PROCESSOR] = digests, processor
    digests.start()
    processor.start()
    yield
    await processor.stop()
    await digests.stop()


async def _event_webhooks(app: web.Application) -> AsyncIterator[None]:
    """Signed event webhooks to tenants' endpoints: apart from sending, sharing only the store and the HTTP pool."""
    signer = Ed25519Signer.load_or_create(app[SETTINGS].data_dir / SIGNING_KEY_FILE)
    app[WEBHOOK_SIGNER] = signer
    worker = EventWebhooks(app[STORE], app[POLICIES], app[HTTP], app[CLOCK], signer, metrics=app[METRICS])
    worker.start()
    app[EVENT_WEBHOOKS] = worker
    yield
    await worker.stop()


async def _policy_watcher(app: web.Application) -> AsyncIterator[None]:
    """Reloads policy on request (SIGHUP), and on every change in the directory unless turned off."""
    settings, policies = app[SETTINGS], app[POLICIES]
    switch = PolicySwitch(policies, app[PROVIDERS], functools.partial(_build_pool, app), app[DISPATCHER])
    metrics = app[METRICS]
    watcher = PolicyWatcher(settings.policy_dir, app[POLICY_LOADER], policies, switch, observe=functools.partial(_reloaded, metrics, policies))
    app[POLICY_WATCHER] = watcher
    if settings.policy_reload:
        await watcher.start()
        log.info("watching %s for policy changes", settings.policy_dir)
    yield
    await watcher.stop()


def _reloaded(metrics: Metrics, policies: PolicyHolder, changed: bool) -> None:
    """A reload took a new set (``changed``) or was refused: counted, and the version in force shown."""
    metrics.count_reload(changed)
    metrics.show_policy(policies.current.version)
