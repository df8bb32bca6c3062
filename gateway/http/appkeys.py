"""Typed keys for everything the application holds, declared in one place."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import web

from gateway.clock import Clock
from gateway.dashboard.sessions import SessionSigner
from gateway.engine.dead_letter_log import DeadLetterLog
from gateway.engine.digests import DigestSender
from gateway.engine.dispatcher import Dispatcher
from gateway.engine.erasure import Eraser
from gateway.engine.event_processor import EventProcessor
from gateway.engine.event_webhooks import EventWebhooks
from gateway.engine.inbound import Inbound
from gateway.engine.intake import Intake
from gateway.engine.opt_outs import OptOuts
from gateway.engine.outcomes import Outcomes
from gateway.engine.provider_pool import PoolHolder
from gateway.engine.quotas import Quotas
from gateway.engine.retention import Purger
from gateway.engine.throttle import InstanceLimits, SourceLimits
from gateway.metrics import Metrics
from gateway.plugins import PluginCatalog
from gateway.policy.view import PolicyHolder, PolicySet
from gateway.policy.watcher import PolicyWatcher
from gateway.settings import Settings
from gateway.signing import Ed25519Signer
from gateway.store import Store

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
PLUGINS = web.AppKey("plugins", PluginCatalog)
POLICIES = web.AppKey("policies", PolicyHolder)
POLICY_LOADER: web.AppKey[Callable[[], PolicySet]] = web.AppKey("policy_loader")
STORE: web.AppKey[Store] = web.AppKey("store")
HTTP = web.AppKey("http_session", aiohttp.ClientSession)
PROVIDERS = web.AppKey("providers", PoolHolder)
OUTCOMES = web.AppKey("outcomes", Outcomes)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
INTAKE = web.AppKey("intake", Intake)
POLICY_WATCHER = web.AppKey("policy_watcher", PolicyWatcher)
INBOUND = web.AppKey("inbound", Inbound)
OPT_OUTS = web.AppKey("opt_outs", OptOuts)
INBOUND_LIMITS = web.AppKey("inbound_limits", SourceLimits)
INSTANCE_LIMITS = web.AppKey("instance_limits", InstanceLimits)
QUOTAS = web.AppKey("quotas", Quotas)
PURGER = web.AppKey("purger", Purger)
EVENT_WEBHOOKS = web.AppKey("event_webhooks", EventWebhooks)
WEBHOOK_SIGNER = web.AppKey("webhook_signer", Ed25519Signer)
ERASER = web.AppKey("eraser", Eraser)
EVENT_PROCESSOR = web.AppKey("event_processor", EventProcessor)
DIGESTS = web.AppKey("digests", DigestSender)
DASHBOARD_SESSIONS = web.AppKey("dashboard_sessions", SessionSigner)
METRICS = web.AppKey("metrics", Metrics)
DEAD_LETTER_LOG = web.AppKey("dead_letter_log", DeadLetterLog)
