"""Every policy field is read by the running code, or is a note for people, or ``tidings check`` refuses it.

:data:`READERS` names, for each field of each policy model, the module that honours it and a
piece of its source that reads it; a test checks the source really contains it. A field added
to a model without an entry here fails :func:`test_every_policy_field_names_the_code_that_honours_it`:
say who reads it, mark it a note, or leave it out. Every model refuses unknown fields, so a misspelt or
misplaced field is an error with its file and line, never silently accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LIVE_KEY, FakeClock, key_entry, serve
from pydantic import BaseModel

from gateway.http.appkeys import POLICY_WATCHER
from gateway.policy import models
from plugins.sandbox import SandboxProvider

ROOT = Path(__file__).resolve().parents[3]
NOTE = "note"
"""A free-text label for people reading the policy (its schema description says Tidings does not act on it)."""

READERS: dict[tuple[str, str], tuple[str, str] | str] = {
    ("ApiKeyPolicy", "prefix"): ("gateway/policy/loading.py", "by_prefix.setdefault(key.prefix"),
    ("ApiKeyPolicy", "sha256"): ("gateway/policy/keys.py", "entry.key.sha256"),
    ("ApiKeyPolicy", "mode"): ("gateway/policy/keys.py", "entry.key.mode"),
    ("ApiKeyPolicy", "name"): NOTE,
    ("TenantChannelPolicy", "providers"): ("gateway/policy/view.py", "tuple(route.providers)"),
    ("TenantChannelPolicy", "retry_schedule"): ("gateway/policy/view.py", "tenant_route.retry_schedule"),
    ("ChannelRoutePolicy", "providers"): ("gateway/policy/view.py", "tuple(route.providers)"),
    ("ChannelRoutePolicy", "retry_schedule"): ("gateway/policy/view.py", "shared_route.retry_schedule"),
    ("ChannelRoutePolicy", "throughput"): ("gateway/policy/view.py", "route.throughput"),
    ("SenderPolicy", "from_"): ("gateway/policy/view.py", "Sender(found.from_, found.name, found.reply_to)"),
    ("SenderPolicy", "name"): ("gateway/policy/view.py", "Sender(found.from_, found.name, found.reply_to)"),
    ("SenderPolicy", "reply_to"): ("gateway/policy/view.py", "Sender(found.from_, found.name, found.reply_to)"),
    ("TenantDefaults", "strategy"): ("gateway/engine/submission.py", "defaults.strategy"),
    ("TenantDefaults", "fallback_after"): ("gateway/engine/submission.py", "defaults.fallback_after"),
    ("TenantDefaults", "priority"): ("gateway/engine/submission.py", "defaults.priority"),
    ("TenantDefaults", "retry_schedule"): ("gateway/policy/view.py", "tenant_policy.defaults.retry_schedule"),
    ("ProviderTemplatePolicy", "name"): ("gateway/policy/templates.py", 'provider_template["name"]'),
    ("ProviderTemplatePolicy", "language"): ("gateway/policy/templates.py", 'provider_template["language"]'),
    ("ProviderTemplatePolicy", "parameters"): ("gateway/policy/templates.py", 'provider_template.get("parameters"'),
    ("TemplateContentPolicy", "subject"): ("gateway/policy/validation.py", "subject=content.subject"),
    ("TemplateContentPolicy", "body"): ("gateway/policy/validation.py", "body=content.body"),
    ("TemplateContentPolicy", "html"): ("gateway/policy/validation.py", "html=content.html"),
    ("TemplateContentPolicy", "provider_template"): ("gateway/policy/validation.py", "pt = content.provider_template"),
    ("TemplatePolicy", "description"): NOTE,
    ("TemplatePolicy", "version"): ("gateway/policy/validation.py", "str(template.version)"),
    ("TemplatePolicy", "language"): ("gateway/policy/validation.py", "template.language"),
    ("TemplatePolicy", "variables"): ("gateway/policy/validation.py", "template.variables"),
    ("TemplatePolicy", "priority"): ("gateway/policy/validation.py", "template.priority"),
    ("TemplatePolicy", "strategy"): ("gateway/policy/validation.py", "template.strategy"),
    ("TemplatePolicy", "fallback_after"): ("gateway/policy/validation.py", "_seconds(template.fallback_after)"),
    ("TemplatePolicy", "ttl"): ("gateway/policy/validation.py", "_seconds(template.ttl)"),
    ("TemplatePolicy", "channels"): ("gateway/policy/validation.py", "template.channels"),
    ("TemplatePolicy", "category"): ("gateway/policy/validation.py", "template.category"),
    ("TemplatePolicy", "translations"): ("gateway/policy/validation.py", "template.translations.items()"),
    ("TemplateTranslationPolicy", "channels"): ("gateway/policy/validation.py", "_compile_template(translation, channels, path, sources)"),
    ("TenantPolicy", "name"): NOTE,
    ("TenantPolicy", "status"): ("gateway/policy/view.py", 'tenant.status == "suspended"'),
    ("TenantPolicy", "api_keys"): ("gateway/policy/loading.py", "enumerate(policy.api_keys)"),
    ("TenantPolicy", "channels"): ("gateway/policy/view.py", "tenant_policy.channels.get(channel)"),
    ("TenantPolicy", "templates"): ("gateway/policy/validation.py", "policy.templates"),
    ("TenantPolicy", "senders"): ("gateway/policy/view.py", "tenant_policy.senders.get(channel)"),
    ("TenantPolicy", "defaults"): ("gateway/policy/view.py", "tenant_policy.defaults"),
    ("TenantPolicy", "retention"): ("gateway/policy/view.py", "retention_seconds(tenant.retention)"),
    ("CircuitBreakerPolicy", "failures"): ("gateway/policy/view.py", "found.failures"),
    ("CircuitBreakerPolicy", "window"): ("gateway/policy/view.py", "found.window"),
    ("CircuitBreakerPolicy", "cooldown"): ("gateway/policy/view.py", "found.cooldown"),
    ("ProviderInstancePolicy", "plugin"): ("gateway/engine/provider_pool.py", "(i.plugin, i.config)"),
    ("ProviderInstancePolicy", "config"): ("gateway/engine/provider_pool.py", "(i.plugin, i.config)"),
    ("ProviderInstancePolicy", "tenant"): ("gateway/policy/validation.py", "target.tenant != owner"),
    ("ProviderInstancePolicy", "rate"): ("gateway/policy/view.py", "instance.rate"),
    ("ProviderInstancePolicy", "circuit_breaker"): ("gateway/policy/view.py", "instance.circuit_breaker"),
    ("RetrySchedulePolicy", "delays"): ("gateway/policy/view.py", "policy.delays"),
    ("RetrySchedulePolicy", "max_attempts"): ("gateway/policy/view.py", "policy.max_attempts"),
    ("WebhookEndpointPolicy", "url"): ("gateway/engine/webhook_attempts.py", "endpoint.url"),
    ("WebhookEndpointPolicy", "events"): ("gateway/engine/event_webhooks.py", "endpoint.events"),
    ("WebhookEndpointPolicy", "secret"): ("gateway/engine/webhook_attempts.py", "endpoint.secret"),
    ("WebhookEndpointPolicy", "previous_secrets"): ("gateway/engine/webhook_attempts.py", "endpoint.previous_secrets"),
    ("WebhookEndpointPolicy", "signing"): ("gateway/engine/webhook_attempts.py", 'endpoint.signing == "ed25519"'),
    ("WebhookEndpointPolicy", "disable_after"): ("gateway/engine/webhook_attempts.py", "endpoint.disable_after"),
    ("WebhookEndpointPolicy", "allow_private"): ("gateway/engine/webhook_attempts.py", "endpoint.allow_private"),
    ("WebhookEndpointPolicy", "description"): NOTE,
    ("PolicyDocument", "tenants"): ("gateway/policy/view.py", "self.document.tenants"),
    ("PolicyDocument", "providers"): ("gateway/policy/loading.py", "document.providers"),
    ("PolicyDocument", "channels"): ("gateway/policy/view.py", "self.document.channels"),
    ("PolicyDocument", "templates"): ("gateway/policy/validation.py", "document.templates"),
    ("PolicyDocument", "retry_schedules"): ("gateway/policy/view.py", "self.document.retry_schedules"),
    ("PolicyDocument", "webhooks"): ("gateway/engine/event_webhooks.py", "policy.document.webhooks"),
    ("TenantPolicy", "timezone"): ("gateway/policy/view.py", "tenant_policy.timezone"),
    ("PolicyDocument", "routes"): ("gateway/engine/event_processor.py", "policy.document.routes"),
    ("PolicyDocument", "events"): ("gateway/engine/business_events.py", "policy.document.events.get(request.event_name)"),
    ("EventTypePolicy", "severity"): ("gateway/engine/business_events.py", "defaults.severity"),
    ("EventTypePolicy", "description"): NOTE,
    ("RoutePolicy", "match"): ("gateway/policy/routing.py", "match = route.match"),
    ("RoutePolicy", "notify"): ("gateway/engine/business_events.py", "notify = route.notify"),
    ("RoutePolicy", "tenant"): ("gateway/policy/routing.py", "route.tenant != tenant"),
    ("RoutePolicy", "dedupe"): ("gateway/engine/event_processor.py", "route.dedupe.fingerprint"),
    ("RoutePolicy", "repeat_after"): ("gateway/http/acknowledgements.py", "route.repeat_after"),
    ("RoutePolicy", "digest"): ("gateway/engine/event_processor.py", "digest_due(route.digest"),
    ("RoutePolicy", "description"): NOTE,
    ("RouteMatchPolicy", "event"): ("gateway/policy/routing.py", "fnmatch.fnmatchcase(event.name, match.event)"),
    ("RouteMatchPolicy", "severity"): ("gateway/policy/routing.py", "_severity_matches(match.severity, event.severity)"),
    ("RouteMatchPolicy", "source"): ("gateway/policy/routing.py", "fnmatch.fnmatchcase(event.source, match.source)"),
    ("RouteMatchPolicy", "data"): ("gateway/policy/routing.py", "_data_matches(match.data, event.data)"),
    ("RouteNotifyPolicy", "template"): ("gateway/engine/business_events.py", '"template_id": notify.template'),
    ("RouteNotifyPolicy", "channels"): ("gateway/engine/business_events.py", "list(notify.channels)"),
    ("RouteNotifyPolicy", "strategy"): ("gateway/engine/business_events.py", '("strategy", "fallback_after", "priority")'),
    ("RouteNotifyPolicy", "fallback_after"): ("gateway/engine/business_events.py", '("strategy", "fallback_after", "priority")'),
    ("RouteNotifyPolicy", "priority"): ("gateway/engine/business_events.py", '("strategy", "fallback_after", "priority")'),
    ("DedupePolicy", "window"): ("gateway/engine/event_processor.py", "parse_duration(route.dedupe.window)"),
    ("DedupePolicy", "fingerprint"): ("gateway/engine/event_processor.py", "route.dedupe.fingerprint"),
    ("DigestPolicy", "every"): ("gateway/engine/digests.py", "parse_duration(policy.every)"),
    ("DigestPolicy", "daily_at"): ("gateway/engine/digests.py", 'policy.daily_at.split(":")'),
    ("PolicyDocument", "quotas"): ("gateway/engine/quotas.py", "policy.document.quotas.get(tenant)"),
    ("QuotaPolicy", "burst_per_minute"): ("gateway/engine/quotas.py", "quota.burst_per_minute"),
    ("QuotaPolicy", "sustained_per_minute"): ("gateway/engine/quotas.py", "quota.sustained_per_minute"),
    ("QuotaPolicy", "daily"): ("gateway/engine/quotas.py", "quota.daily"),
    ("QuotaPolicy", "warn_at"): ("gateway/engine/quotas.py", "quota.warn_at"),
    ("QuotaPolicy", "events_per_minute"): ("gateway/engine/quotas.py", "quota.events_per_minute"),
    ("PolicyDocument", "operators"): ("gateway/policy/loading.py", "document.operators.items()"),
    ("OperatorKeyPolicy", "prefix"): ("gateway/policy/loading.py", "by_prefix.setdefault(key.prefix, []).append(OperatorEntry(name, key))"),
    ("OperatorKeyPolicy", "sha256"): ("gateway/policy/keys.py", "entry.key.sha256[: len(digest)]"),
    ("OperatorKeyPolicy", "role"): ("gateway/policy/keys.py", "Operator(entry.name, entry.key.prefix, entry.key.role)"),
}
ELSEWHERE: set[str] = set()
"""Models not audited here (none today)."""
ELSEWHERE_FIELDS: set[tuple[str, str]] = set()


def policy_models() -> dict[str, type[BaseModel]]:
    return {
        name: value for name, value in vars(models).items()
        if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == models.__name__ and not name.startswith("_")
    }


def test_every_policy_model_refuses_fields_it_does_not_know() -> None:
    for name, model in policy_models().items():
        assert model.model_config.get("extra") == "forbid", name


def test_every_policy_field_names_the_code_that_honours_it() -> None:
    fields = {
        (name, field) for name, model in policy_models().items() if name not in ELSEWHERE for field in model.model_fields
    } - ELSEWHERE_FIELDS
    assert fields == set(READERS), "a policy field with no reader: make it work, or remove it so tidings check refuses it"


@pytest.mark.parametrize(("model", "field"), [key for key, reader in READERS.items() if reader != NOTE])
def test_the_named_code_reads_the_field(model: str, field: str) -> None:
    path, needle = READERS[(model, field)]
    assert needle in (ROOT / path).read_text(), f"{model}.{field}: {path} no longer reads it as {needle!r}"


@pytest.mark.parametrize(("model", "field"), [key for key, reader in READERS.items() if reader == NOTE])
def test_a_note_says_in_the_schema_that_nothing_acts_on_it(model: str, field: str) -> None:
    description = policy_models()[model].model_fields[field].description or ""
    assert models.NOTE in description


async def test_a_templates_version_and_language_are_recorded_with_each_notification_and_shown(
    aiohttp_client: object, tmp_path: Path, clock: FakeClock
) -> None:
    """``version: 3 # your own marker, recorded with each notification`` (the shipped policy): it is, and stays after a change."""
    directory = tmp_path / "policies"
    directory.mkdir()
    policy = directory / "policy.yaml"
    template = "templates:\n  otp:\n    version: {version}\n    language: pt-BR\n    channels:\n      sms: {{body: 'code {{{{ code }}}}'}}\n"
    tenants = f"tenants:\n  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]\nproviders:\n  sandbox: {{plugin: sandbox}}\nchannels:\n  sms: {{providers: [sandbox]}}\n"
    policy.write_text(tenants + template.format(version=3))
    api = await serve(aiohttp_client, directory, {"sandbox": SandboxProvider}, clock)
    status, accepted = await api.send({"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}}})
    assert status == 202, accepted
    found = await api.notification(accepted["notification_id"])
    assert (found["template_id"], found["template_version"], found["template_language"]) == ("otp", "3", "pt-BR")
    _, listing = await api.get("/api/v1/notifications")
    assert listing["items"][0]["template_version"] == "3"
    policy.write_text(tenants + template.format(version="v4-draft"))
    assert await api.app[POLICY_WATCHER].reload() is True
    _, later = await api.send({"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "template_id": "otp", "data": {"code": "2"}}})
    assert (await api.notification(later["notification_id"]))["template_version"] == "v4-draft"
    assert (await api.notification(accepted["notification_id"]))["template_version"] == "3", "what was sent keeps the version it was sent with"
    status, raw = await api.send({"recipient": {"phone": "+14155550100"}, "notification": {"channels": ["sms"], "body": "hi"}})
    assert status == 202
    assert ((await api.notification(raw["notification_id"]))["template_version"]) is None
