"""Typed keys for everything the application holds, declared in one place."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import web

from gateway.clock import Clock
from gateway.dispatcher import Dispatcher
from gateway.plugins import PluginCatalog
from gateway.outcomes import Outcomes
from gateway.policies import PolicyHolder, PolicySet
from gateway.provider_pool import ProviderPool
from gateway.settings import Settings
from gateway.store import Store

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
PLUGINS = web.AppKey("plugins", PluginCatalog)
POLICIES = web.AppKey("policies", PolicyHolder)
POLICY_LOADER: web.AppKey[Callable[[], PolicySet]] = web.AppKey("policy_loader")
STORE = web.AppKey("store", Store)
HTTP = web.AppKey("http_session", aiohttp.ClientSession)
PROVIDERS = web.AppKey("providers", ProviderPool)
OUTCOMES = web.AppKey("outcomes", Outcomes)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
