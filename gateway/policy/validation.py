"""Checking a merged policy set: its schema, the names that must point at something, its templates.

Every problem is reported to :class:`~gateway.policy.sources.Sources` with its path, so it comes
out with file and line; values are never echoed (they may be secrets).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaValidationError

from gateway import signing
from gateway.channels import ChannelCatalog
from gateway.plugins import PluginCatalog
from gateway.policy import schema
from gateway.policy.durations import parse_duration
from gateway.policy.models import (
    DEFAULT_RETRY_SCHEDULE,
    RESERVED_INSTANCE_NAMES,
    SANDBOX,
    PolicyDocument,
    ProviderInstancePolicy,
    QuotaPolicy,
    RetrySchedulePolicy,
    RoutePolicy,
    TemplateContentPolicy,
    TemplatePolicy,
    TemplateTranslationPolicy,
    TenantChannelPolicy,
    WebhookEndpointPolicy,
)
from gateway.policy.routing import FINGERPRINT_FIELD, glob_problem
from gateway.policy.sources import Path_, Sources
from gateway.policy.templates import CompiledContent, CompiledTemplate, template_syntax_error


def check_schema(sources: Sources) -> None:
    """Every way the merged document breaks the shipped JSON Schema, each at its file and line."""
    _report_schema_errors(schema.validator().iter_errors(sources.document), (), sources)


def _report_schema_errors(errors: Iterable[SchemaValidationError], base: Path_, sources: Sources) -> None:
    for error in sorted(errors, key=lambda e: [str(part) for part in e.absolute_path]):
        for path, message in _schema_issues(error):
            sources.issue((*base, *path), message)


def _schema_issues(error: SchemaValidationError) -> list[tuple[Path_, str]]:
    """Readable messages for one schema error; values are never echoed (they may be secrets)."""
    path: Path_ = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict) and isinstance(error.schema, Mapping):
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        hint = f" (known: {', '.join(known)})" if known else ""
        return [((*path, name), f"unknown field{hint}") for name in unknown]
    described = error.schema.get("description") if isinstance(error.schema, Mapping) else None
    if error.validator == "anyOf" and isinstance(described, str) and "such as" in described:
        return [(path, described)]  # a value of several shapes (a duration, or 0): say what it may be, not which shape it missed
    if error.validator == "anyOf" and error.context:
        # An optional section (a mapping, or null) that is a mapping: what is wrong inside it, not that it is not null.
        shaped = [e for e in error.context if not (e.validator == "type" and e.validator_value == "null")] or error.context
        best = min(shaped, key=lambda e: len(list(e.absolute_path)))
        return _schema_issues(best) if best.validator != "type" else [(path, "has the wrong type")]
    return [(path, _schema_message(error))]


def pydantic_message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return str(error["msg"])


def _check_schedule(name: str, schedule: RetrySchedulePolicy, sources: Sources) -> None:
    """A delay the schedule would never wait is a mistake, not a setting: refuse it."""
    retries = len(schedule.delays)
    if schedule.max_attempts is not None and schedule.max_attempts <= retries:
        sources.issue(
            ("retry_schedules", name, "max_attempts"),
            f"{retries} delays are {retries} retries, so at least {retries + 1} attempts (the first and its retries); "
            f"with {schedule.max_attempts} the last {retries + 1 - schedule.max_attempts} delay(s) would never be used. "
            "Raise it, or leave it out.",
        )


def _check_quota(quota: QuotaPolicy, base: Path_, sources: Sources) -> None:
    """A quota whose numbers contradict each other, or with a field that would change nothing, is refused."""
    burst, sustained = quota.burst_per_minute, quota.sustained_per_minute
    if burst is not None and sustained is not None and burst < sustained:
        sources.issue(
            (*base, "burst_per_minute"),
            f"must be at least sustained_per_minute ({sustained}): the burst is how many messages go at once, "
            "the sustained rate how fast that allowance comes back",
        )
    if "warn_at" in quota.model_fields_set and quota.daily is None:
        sources.issue((*base, "warn_at"), "is a share of the daily cap: set daily, or leave warn_at out")
    if burst is None and sustained is None and quota.daily is None and quota.events_per_minute is None:
        sources.issue(base, "sets no limit: give burst_per_minute, sustained_per_minute, daily or events_per_minute")


def check_references(document: PolicyDocument, plugins: PluginCatalog, channels: ChannelCatalog, sources: Sources) -> None:
    """Names that must point at something: instances, channels, tenants, schedules, templates."""
    for name, instance in document.providers.items():
        _check_instance(name, instance, plugins, sources)
        if instance.tenant is not None and instance.tenant not in document.tenants:
            sources.issue(("providers", name, "tenant"), f"unknown tenant {instance.tenant!r}")
    for name in RESERVED_INSTANCE_NAMES & document.providers.keys():
        sources.issue(("providers", name), f"{name!r} is reserved: /api/v1/webhooks/{name} is a gateway endpoint, not a callback URL")
    if SANDBOX in document.providers and document.providers[SANDBOX].plugin != SANDBOX:
        sources.issue(("providers", SANDBOX, "plugin"), "the instance named 'sandbox' serves test keys and must use the sandbox plugin")
    schedules = {DEFAULT_RETRY_SCHEDULE, *document.retry_schedules}
    for name, schedule in document.retry_schedules.items():
        _check_schedule(name, schedule, sources)
    routes: list[tuple[str | None, Path_, Mapping[str, TenantChannelPolicy]]] = [(None, ("channels",), document.channels)]
    routes += [(tenant, ("tenants", tenant, "channels"), policy.channels) for tenant, policy in document.tenants.items()]
    for owner, base, table in routes:
        for channel, route in table.items():
            if channel not in channels:
                sources.issue((*base, channel), f"unknown channel {channel!r}")
                continue
            for index, target in enumerate(route.providers):
                _check_route_target(target, channel, owner, document, plugins, (*base, channel, "providers", index), sources)
            _check_name(route.retry_schedule, schedules, "retry schedule", (*base, channel, "retry_schedule"), sources)
    for tenant, policy in document.tenants.items():
        _check_name(policy.defaults.retry_schedule, schedules, "retry schedule", ("tenants", tenant, "defaults", "retry_schedule"), sources)
        for channel in policy.senders:
            if channel not in channels:
                sources.issue(("tenants", tenant, "senders", channel), f"unknown channel {channel!r}")
    for section in ("quotas", "webhooks"):
        for tenant in getattr(document, section):
            _check_name(tenant, document.tenants, "tenant", (section, tenant), sources)
    for tenant, quota in document.quotas.items():
        _check_quota(quota, ("quotas", tenant), sources)
    for tenant, endpoints in document.webhooks.items():
        for name, endpoint in endpoints.items():
            if endpoint.signing == "hmac" and endpoint.secret is None:
                sources.issue(("webhooks", tenant, name, "secret"), "hmac signing needs a secret (whsec_…)")
            _check_webhook_secrets(endpoint, ("webhooks", tenant, name), sources)
    for name, event_route in document.routes.items():
        _check_event_route(name, event_route, document, channels, sources)
    for tenant, policy in document.tenants.items():
        _check_timezone(tenant, policy.timezone, sources)


def _check_webhook_secrets(endpoint: WebhookEndpointPolicy, base: Path_, sources: Sources) -> None:
    """Each secret decodes to the key it signs with: refused now, not found out when every send of the endpoint fails."""
    secrets = [((*base, "secret"), endpoint.secret)]
    secrets += [((*base, "previous_secrets", index), secret) for index, secret in enumerate(endpoint.previous_secrets)]
    for path, secret in secrets:
        if secret is not None and not _decodes(secret):
            sources.issue(path, "must be whsec_ followed by the key in base64, as Standard Webhooks libraries make them")


def _decodes(secret: str) -> bool:
    try:
        return bool(signing.secret_bytes(secret))
    except signing.SignatureError:
        return False


def _check_name(name: str | None, known: Collection[str], kind: str, path: Path_, sources: Sources) -> None:
    if name is not None and name not in known:
        sources.issue(path, f"unknown {kind} {name!r} (known: {', '.join(sorted(known)) or 'none'})")


OLD_ROUTE_FIELDS: Final = frozenset({"template", "channels", "strategy", "fallback_after", "priority"})
DIGEST_VARIABLES: Final = frozenset({"events", "count", "route"})
"""What a digest's template is rendered with: each event's variables (``events``), how many (``count``), the route's name."""


def explain_old_routes(sources: Sources) -> None:
    """Routes written the old way (keyed by event name, the notification at the top) are explained, not just refused.

    Each such route is reported once, at its line, with how to write it now, and left out of the
    schema check (which would only list its fields as unknown).
    """
    routes = sources.document.get("routes")
    if not isinstance(routes, dict):
        return
    for name, route in list(routes.items()):
        if not isinstance(route, dict) or "match" in route or "notify" in route or not OLD_ROUTE_FIELDS & route.keys():
            continue
        sources.issue(
            ("routes", name),
            f"routes are now named and match events: write `match: {{event: {name}}}` and put the notification "
            f"({', '.join(sorted(OLD_ROUTE_FIELDS & route.keys()))}) under `notify:`",
        )
        del routes[name]


def _check_event_route(name: str, route: RoutePolicy, document: PolicyDocument, channels: ChannelCatalog, sources: Sources) -> None:
    """A route's names must point at something, its globs parse, its fingerprint fields exist and its digest is one kind."""
    base: Path_ = ("routes", name)
    if route.tenant is not None and route.tenant not in document.tenants:
        sources.issue((*base, "tenant"), f"unknown tenant {route.tenant!r}")
    for part in ("event", "source"):
        pattern = getattr(route.match, part)
        problem = glob_problem(pattern) if pattern is not None else None
        if problem:
            sources.issue((*base, "match", part), f"not a valid glob: {problem}")
    if isinstance(route.match.severity, list) and not route.match.severity:
        sources.issue((*base, "match", "severity"), "list at least one severity, or leave it out")
    template = _check_route_notify(route, document, channels, (*base, "notify"), sources)
    if route.dedupe is not None:
        for index, field in enumerate(route.dedupe.fingerprint):
            if not FINGERPRINT_FIELD.fullmatch(field):
                sources.issue(
                    (*base, "dedupe", "fingerprint", index),
                    "not a fingerprint field: use event_name, source, severity, actor.type, actor.id, data.<path>, recipient or recipient.<field>",
                )
    if route.repeat_after is not None and route.dedupe is None:
        sources.issue((*base, "repeat_after"), "needs dedupe: the fingerprint it suppresses is the one dedupe.fingerprint lists")
    if route.digest is not None:
        _check_digest(route, template, base, sources)


def _check_route_notify(
    route: RoutePolicy, document: PolicyDocument, channels: ChannelCatalog, base: Path_, sources: Sources
) -> TemplatePolicy | None:
    notify = route.notify
    tenant = document.tenants.get(route.tenant) if route.tenant is not None else None
    template = (tenant.templates.get(notify.template) if tenant else None) or document.templates.get(notify.template)
    if template is None:
        sources.issue((*base, "template"), f"unknown template {notify.template!r}")
    for index, channel in enumerate(notify.channels):
        if channel not in channels:
            sources.issue((*base, "channels", index), f"unknown channel {channel!r}")
        elif template is not None and channel not in template.channels:
            sources.issue((*base, "channels", index), f"template {notify.template!r} has no content for channel {channel!r}")
    if notify.fallback_after is not None and notify.strategy != "fallback":
        sources.issue((*base, "fallback_after"), "only applies with strategy: fallback")
    return template


def _check_digest(route: RoutePolicy, template: TemplatePolicy | None, base: Path_, sources: Sources) -> None:
    digest = route.digest
    assert digest is not None
    if (digest.every is None) == (digest.daily_at is None):
        sources.issue((*base, "digest"), "give one of every (a duration) or daily_at (HH:MM)")
    if digest.every is not None and parse_duration(digest.every) <= 0:
        sources.issue((*base, "digest", "every"), "must be longer than 0s")
    if template is not None and template.variables is not None and not set(template.variables) <= DIGEST_VARIABLES:
        unknown = ", ".join(sorted(set(template.variables) - DIGEST_VARIABLES))
        sources.issue(
            (*base, "notify", "template"),
            f"a digest's template is rendered from events, count and route only; template {route.notify.template!r} "
            f"also needs: {unknown}",
        )


def _check_timezone(tenant: str, zone: str, sources: Sources) -> None:
    if not valid_timezone(zone):
        sources.issue(("tenants", tenant, "timezone"), "unknown time zone: write an IANA name such as Europe/Lisbon or UTC")


def valid_timezone(zone: str) -> bool:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_instance(name: str, instance: ProviderInstancePolicy, plugins: PluginCatalog, sources: Sources) -> None:
    plugin = plugins.get(instance.plugin)
    if plugin is None:
        why = plugins.failures.get(instance.plugin)
        reason = f"failed to load: {why}" if why else f"no such plugin installed (installed: {', '.join(sorted(plugins.providers))})"
        sources.issue(("providers", name, "plugin"), f"plugin {instance.plugin!r} {reason}")
        return
    validator = Draft202012Validator(dict(plugin.config_schema))
    _report_schema_errors(validator.iter_errors(instance.config), ("providers", name, "config"), sources)


def _schema_message(error: SchemaValidationError) -> str:
    """What the value must be, for one JSON Schema error, without repeating the value."""
    rule, expected = str(error.validator), error.validator_value
    listed: list[Any] = list(expected) if isinstance(expected, list) else []
    if rule == "required":
        missing = [name for name in listed if isinstance(error.instance, dict) and name not in error.instance]
        return f"{', '.join(repr(name) for name in missing) or 'a field'} is required"
    if rule == "additionalProperties":
        return "unexpected field"
    if rule == "type":
        return f"must be {_TYPE_NAMES.get(str(expected), str(expected))}"
    if rule == "enum":
        return f"must be one of: {', '.join(str(v) for v in listed)}"
    if rule == "const":
        return f"must be {expected!r}"
    if rule == "pattern":
        description = error.schema.get("description") if isinstance(error.schema, Mapping) else None
        return description if description and "such as" in description else f"must match the pattern {expected}"
    if rule in ("minItems", "minProperties", "minLength") and expected == 1:
        return "must not be empty"
    if rule in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        return f"must be {words[str(rule)]} {expected}"
    return f"must satisfy {rule}={expected!r}"


_TYPE_NAMES: Final = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "a whole number",
    "number": "a number", "boolean": "true or false", "null": "empty",
}


def _check_route_target(
    instance: str, channel: str, owner: str | None, document: PolicyDocument, plugins: PluginCatalog, path: Path_, sources: Sources
) -> None:
    target = document.providers.get(instance)
    if target is None:
        sources.issue(path, f"unknown provider instance {instance!r}")
        return
    if target.tenant is not None and target.tenant != owner:
        sources.issue(path, f"provider instance {instance!r} belongs to tenant {target.tenant!r}; only its own channels may use it")
    plugin = plugins.get(target.plugin)
    if plugin is not None and not ("*" in plugin.channels or channel in plugin.channels):
        sources.issue(path, f"provider instance {instance!r} (plugin {target.plugin}) does not serve channel {channel!r}")


def compile_templates(
    document: PolicyDocument, channels: ChannelCatalog, sources: Sources
) -> dict[tuple[str | None, str], CompiledTemplate]:
    scopes: list[tuple[str | None, Path_, Mapping[str, TemplatePolicy]]] = [(None, ("templates",), document.templates)]
    scopes += [(tenant, ("tenants", tenant, "templates"), policy.templates) for tenant, policy in document.tenants.items()]
    compiled: dict[tuple[str | None, str], CompiledTemplate] = {}
    for tenant, base, table in scopes:
        for template_id, template in table.items():
            contents = _compile_template(template, channels, (*base, template_id), sources)
            if contents is None:
                continue
            declared = frozenset(template.variables or ())
            used = frozenset().union(*(content.variables for content in contents.values()))
            if template.variables is not None and not used <= declared:
                undeclared = ", ".join(sorted(used - declared))
                sources.issue((*base, template_id, "variables"), f"placeholders not listed in variables: {undeclared}")
                continue
            translations = _compile_translations(template, channels, (*base, template_id), declared, sources)
            if translations is None:
                continue
            compiled[(tenant, template_id)] = CompiledTemplate(
                template_id, MappingProxyType(contents), template.priority, declared, template.strategy,
                _seconds(template.fallback_after), _seconds(template.ttl), template.category, MappingProxyType(translations),
                str(template.version) if template.version is not None else None, template.language,
                MappingProxyType({tag.lower(): tag for tag in template.translations}),
            )
    return compiled


def _compile_translations(
    template: TemplatePolicy, channels: ChannelCatalog, base: Path_, declared: frozenset[str], sources: Sources
) -> dict[str, Mapping[str, CompiledContent]] | None:
    """Each translation checked like the template's own content, keyed by its tag in lower case; None if any is wrong.

    A translated channel must be one of the template's (a locale cannot add a channel the
    template does not send), and with ``variables`` declared its placeholders must be listed.
    """
    compiled: dict[str, Mapping[str, CompiledContent]] = {}
    ok = True
    for locale, translation in template.translations.items():
        path = (*base, "translations", locale)
        if locale.lower() in compiled:
            sources.issue(path, f"translation {locale!r} is listed twice (tags compare without regard to case)")
            ok = False
            continue
        for channel in translation.channels:
            if channel not in template.channels:
                sources.issue((*path, "channels", channel), f"the template has no content for channel {channel!r} to translate")
                ok = False
        contents = _compile_template(translation, channels, path, sources)
        if contents is None:
            ok = False
            continue
        used = frozenset().union(*(content.variables for content in contents.values()))
        if template.variables is not None and not used <= declared:
            sources.issue((*path, "channels"), f"placeholders not listed in variables: {', '.join(sorted(used - declared))}")
            ok = False
            continue
        compiled[locale.lower()] = MappingProxyType(contents)
    return compiled if ok else None


def _compile_template(
    template: TemplatePolicy | TemplateTranslationPolicy, channels: ChannelCatalog, base: Path_, sources: Sources
) -> dict[str, CompiledContent] | None:
    contents: dict[str, CompiledContent] = {}
    ok = True
    for channel, content in template.channels.items():
        path = (*base, "channels", channel)
        spec = channels.get(channel)
        if spec is None:
            sources.issue(path, f"unknown channel {channel!r}")
            ok = False
            continue
        problems = _content_problems(content, spec.template_required, spec.subject)
        for sources_path, source in _template_sources(content, path):
            error = template_syntax_error(source)
            if error:
                problems.append((sources_path, f"template syntax error: {error}"))
        for problem_path, message in problems:
            sources.issue(problem_path if isinstance(problem_path, tuple) else path, message)
        if problems:
            ok = False
            continue
        pt = content.provider_template
        contents[channel] = CompiledContent(
            body=content.body,
            subject=content.subject,
            html=content.html,
            provider_template=pt.model_dump() if pt else None,
        )
    return contents if ok else None


def _content_problems(content: TemplateContentPolicy, template_required: bool, subject: bool) -> list[tuple[Any, str]]:
    problems: list[tuple[Any, str]] = []
    if template_required and content.provider_template is None:
        problems.append((None, "this channel sends only provider-approved templates: set provider_template"))
    if not template_required and content.body is None and content.html is None:
        problems.append((None, "needs a body (or html)"))
    if content.subject is not None and not subject:
        problems.append((None, "this channel has no subject"))
    return problems


def _template_sources(content: TemplateContentPolicy, path: Path_) -> list[tuple[Path_, str]]:
    found = [((*path, part), value) for part in ("subject", "body", "html") if (value := getattr(content, part)) is not None]
    if content.provider_template is not None:
        found += [((*path, "provider_template", "parameters", i), p) for i, p in enumerate(content.provider_template.parameters)]
    return found

def _seconds(duration: str | None) -> float | None:
    return parse_duration(duration) if duration is not None else None
