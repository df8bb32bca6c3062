from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from conftest import LIVE_KEY, key_entry, run_cli

from gateway import signing
from gateway.errors import PolicyError
from gateway.plugins import PluginCatalog
from gateway.policy.loading import load_policies
from gateway.policy.models import SECTIONS

ROOT = Path(__file__).resolve().parents[3]
ROUTE_TEMPLATE = "templates:\n  t: {channels: {sms: {body: hi}}}\n"


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text)


def test_the_shipped_policies_validate_and_show_every_section(plugin_catalog: PluginCatalog) -> None:
    policy = load_policies(ROOT / "policies", PluginCatalog.discover())
    assert policy.tenant("demo") is not None
    assert policy.providers_for("demo", "sms") == ("sandbox",)
    # `webhooks` is shown commented, for the example receiver on loopback: a live endpoint would
    # fail whenever that receiver is not running (tests/test_repository.py loads it uncommented).
    # `operators`: the demo grants no one every tenant's data; policies/operators.yaml shows the entry commented.
    assert [section for section in SECTIONS if not getattr(policy.document, section)] == ["webhooks", "operators"]
    assert "\n# webhooks:\n#   demo:\n" in (ROOT / "policies" / "tenants.yaml").read_text()


def test_sections_may_be_split_across_files(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    write(tmp_path, "a.yaml", "providers:\n  mem: {plugin: memory}\n")
    write(tmp_path, "b.yml", "channels:\n  sms: {providers: [mem]}\ntemplates:\n  t: {channels: {sms: {body: hi}}}\n")
    policy = load_policies(tmp_path, plugin_catalog)
    assert policy.providers_for("anyone", "sms") == ("mem",)
    assert policy.template("anyone", "t") is not None


def test_hidden_files_and_folders_are_skipped(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    write(tmp_path, "a.yaml", "providers:\n  mem: {plugin: memory}\n")
    (tmp_path / "..data").mkdir()
    write(tmp_path / "..data", "a.yaml", "providers:\n  mem: {plugin: memory}\n")
    load_policies(tmp_path, plugin_catalog)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"a.yaml": "tenants: [\n"}, "a.yaml:2: <root>: invalid YAML"),
        ({"a.yaml": "- just\n- a list\n"}, "a.yaml:1: <root>: a policy file must be a mapping of sections"),
        ({"a.yaml": "tenantz: {}\n"}, "a.yaml:1: tenantz: unknown section"),
        ({"a.yaml": "providers:\n  x: {plugin: nope}\n"}, "a.yaml:2: providers.x.plugin: plugin 'nope' no such plugin installed"),
        ({"a.yaml": "channels:\n  sms: {providers: [ghost]}\n"}, "a.yaml:2: channels.sms.providers[0]: unknown provider instance 'ghost'"),
        ({"a.yaml": "channels:\n  fax: {providers: []}\n"}, "a.yaml:2: channels.fax"),
        ({"a.yaml": "templates:\n  t:\n    channels:\n      whatsapp: {body: hi}\n"}, "a.yaml:4: templates.t.channels.whatsapp: this channel sends only provider-approved templates"),
        ({"a.yaml": "templates:\n  t:\n    channels:\n      sms: {body: '{{ oops'}\n"}, "a.yaml:4: templates.t.channels.sms.body: template syntax error"),
        ({"a.yaml": "tenants:\n  a:\n    status: sleepy\n"}, "a.yaml:3: tenants.a.status: must be one of: active, suspended"),
        (
            {"a.yaml": "providers:\n  m: {plugin: memory}\n", "b.yaml": "providers:\n  m: {plugin: memory}\n"},
            "b.yaml:2: providers.m: defined again (first at a.yaml:2)",
        ),
        ({"a.yaml": "tenants:\n  a:\n    name: A\n    colour: red\n"}, "a.yaml:4: tenants.a.colour: unknown field (known: api_keys, channels"),
        ({"a.yaml": "retry_schedules:\n  fast:\n    delays: [1m, soon]\n    max_attempts: 3\n"}, "a.yaml:3: retry_schedules.fast.delays[1]: A duration such as 90s"),
        ({"a.yaml": "retry_schedules:\n  fast:\n    delays: []\n"}, "a.yaml:3: retry_schedules.fast.delays: must not be empty"),
        (
            {"a.yaml": "retry_schedules:\n  fast:\n    delays: [1m, 5m, 1h]\n    max_attempts: 3\n"},
            "a.yaml:4: retry_schedules.fast.max_attempts: 3 delays are 3 retries, so at least 4 attempts",
        ),
        ({"a.yaml": "channels:\n  sms: {providers: [mem], throughput: fast}\n"}, "a.yaml:2: channels.sms.throughput: A rate such as 10/s"),
        (  # a channel's throughput is shared by every tenant: a tenant's own was ignored, so it is refused
            {"a.yaml": "providers:\n  mem: {plugin: memory}\ntenants:\n  a:\n    channels:\n      sms:\n        providers: [mem]\n        throughput: 5/s\n"},
            "a.yaml:8: tenants.a.channels.sms.throughput: unknown field (known: providers, retry_schedule)",
        ),
        ({"a.yaml": "templates:\n  t:\n    locale: en\n    channels:\n      sms: {body: hi}\n"}, "a.yaml:3: templates.t.locale: unknown field (known: category, channels, description"),
        ({"a.yaml": "webhooks:\n  a:\n    main: {url: 'https://x.example/h', events: [message.dead_letter], signing: ed25519}\n"}, "a.yaml:3: webhooks.a.main.events[0]"),
        (
            {"a.yaml": "providers:\n  mem: {plugin: memory}\nchannels:\n  sms: {providers: [mem], retry_schedule: patient}\n"},
            "a.yaml:4: channels.sms.retry_schedule: unknown retry schedule 'patient' (known: default)",
        ),
        ({"a.yaml": "tenants:\n  a:\n    defaults: {retry_schedule: nope}\n"}, "a.yaml:3: tenants.a.defaults.retry_schedule: unknown retry schedule 'nope'"),
        (
            {"a.yaml": "tenants:\n  a: {}\n  b:\n    channels:\n      sms: {providers: [a-only]}\nproviders:\n  a-only: {plugin: memory, tenant: a}\n"},
            "a.yaml:5: tenants.b.channels.sms.providers[0]: provider instance 'a-only' belongs to tenant 'a'",
        ),
        ({"a.yaml": "providers:\n  x: {plugin: memory, tenant: ghost}\n"}, "a.yaml:2: providers.x.tenant: unknown tenant 'ghost'"),
        ({"a.yaml": "providers:\n  public-key: {plugin: memory}\n"}, "a.yaml:2: providers.public-key: 'public-key' is reserved"),
        ({"a.yaml": "quotas:\n  ghost: {daily: 10}\n"}, "a.yaml:2: quotas.ghost: unknown tenant 'ghost'"),
        ({"a.yaml": "tenants:\n  a: {}\nquotas:\n  a: {daily: 0}\n"}, "a.yaml:4: quotas.a.daily: must be >= 1"),
        ({"a.yaml": "tenants:\n  a: {}\nquotas:\n  a:\n    daily: 10\n    warn_at: 1.5\n"}, "a.yaml:6: quotas.a.warn_at: must be <= 1"),
        ({"a.yaml": "tenants:\n  a: {}\nquotas:\n  a:\n    daily: 10\n    warn_at: 0\n"}, "a.yaml:6: quotas.a.warn_at: must be > 0"),
        (
            {"a.yaml": "tenants:\n  a: {}\nquotas:\n  a:\n    daily: 10\n    per_hour: 5\n"},
            "a.yaml:6: quotas.a.per_hour: unknown field (known: burst_per_minute, daily, events_per_minute",
        ),
        (
            {"a.yaml": "tenants:\n  a: {}\nquotas:\n  a:\n    burst_per_minute: 5\n    sustained_per_minute: 10\n"},
            "a.yaml:5: quotas.a.burst_per_minute: must be at least sustained_per_minute (10)",
        ),
        (
            {"a.yaml": "tenants:\n  a: {}\nquotas:\n  a:\n    burst_per_minute: 5\n    warn_at: 0.5\n"},
            "a.yaml:6: quotas.a.warn_at: is a share of the daily cap",
        ),
        ({"a.yaml": "tenants:\n  a: {}\nquotas:\n  a: {}\n"}, "a.yaml:4: quotas.a: sets no limit"),
        (
            {"a.yaml": "tenants:\n  a: {}\nwebhooks:\n  a:\n    main: {url: 'https://a.example/hook', events: [message.sent]}\n"},
            "a.yaml:5: webhooks.a.main.secret: hmac signing needs a secret",
        ),
        (
            {"a.yaml": "tenants:\n  a: {}\nwebhooks:\n  a:\n    main: {url: 'https://a.example/hook', secret: whsec_x, events: [message.sentt]}\n"},
            "a.yaml:5: webhooks.a.main.events[0]: must be one of: *, message.queued",
        ),
        (
            {"a.yaml": "routes:\n  order.shipped: {template: nope, channels: [sms]}\n"},
            "a.yaml:2: routes.order.shipped: routes are now named and match events: write `match: {event: order.shipped}` "
            "and put the notification (channels, template) under `notify:`",
        ),
        (
            {"a.yaml": "routes:\n  r:\n    match: {event: x}\n    notify: {template: nope, channels: [sms]}\n"},
            "a.yaml:4: routes.r.notify.template: unknown template 'nope'",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: x}\n    notify:\n      template: t\n      channels: [sms, email]\n"},
            "a.yaml:8: routes.e.notify.channels[1]: template 't' has no content for channel 'email'",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: x}\n    notify: {template: t, channels: [fax]}\n"},
            "a.yaml:6: routes.e.notify.channels[0]: unknown channel 'fax'",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: 'order.[ab'}\n    notify: {template: t, channels: [sms]}\n"},
            "a.yaml:5: routes.e.match.event: not a valid glob: the [ at position 7 is never closed",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: 'order shipped'}\n    notify: {template: t, channels: [sms]}\n"},
            "a.yaml:5: routes.e.match.event: The event's name, exact such as order.shipped, or a glob",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: x, severity: urgent}\n    notify: {template: t, channels: [sms]}\n"},
            "a.yaml:5: routes.e.match.severity",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: x}\n    notify: {template: t, channels: [sms]}\n"
             "    dedupe: {window: 6h, fingerprint: [event_name, payload.id]}\n"},
            "a.yaml:7: routes.e.dedupe.fingerprint[1]: not a fingerprint field",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: x}\n    notify: {template: t, channels: [sms]}\n    repeat_after: 1d\n"},
            "a.yaml:7: routes.e.repeat_after: needs dedupe",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: x}\n    notify: {template: t, channels: [sms]}\n"
             "    digest: {every: 1h, daily_at: '09:00'}\n"},
            "a.yaml:7: routes.e.digest: give one of every (a duration) or daily_at (HH:MM)",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: x}\n    notify: {template: t, channels: [sms]}\n    digest: {daily_at: '9am'}\n"},
            "a.yaml:7: routes.e.digest.daily_at",
        ),
        (
            {"a.yaml": "templates:\n  t:\n    variables: [order_id]\n    channels: {sms: {body: '{{ order_id }}'}}\n"
             "routes:\n  e:\n    match: {event: x}\n    notify: {template: t, channels: [sms]}\n    digest: {every: 1h}\n"},
            "a.yaml:8: routes.e.notify.template: a digest's template is rendered from events, count and route only",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    match: {event: x}\n    notify: {template: t, channels: [sms], fallback_after: 1m}\n"},
            "a.yaml:6: routes.e.notify.fallback_after: only applies with strategy: fallback",
        ),
        (
            {"a.yaml": ROUTE_TEMPLATE + "routes:\n  e:\n    tenant: ghost\n    match: {event: x}\n    notify: {template: t, channels: [sms]}\n"},
            "a.yaml:5: routes.e.tenant: unknown tenant 'ghost'",
        ),
        ({"a.yaml": "events:\n  order.shipped: {severity: severe}\n"}, "a.yaml:2: events.order.shipped.severity: must be one of: low, medium, high, critical"),
        ({"a.yaml": "events:\n  'order.*': {severity: high}\n"}, "a.yaml:2: events"),
        ({"a.yaml": "tenants:\n  a:\n    timezone: Mars/Olympus\n"}, "a.yaml:3: tenants.a.timezone: unknown time zone"),
        (
            {"a.yaml": "templates:\n  t:\n    variables: [code]\n    channels: {sms: {body: '{{ code }} {{ name }}'}}\n"},
            "a.yaml:3: templates.t.variables: placeholders not listed in variables: name",
        ),
        ({"a.yaml": "tenants:\n  a:\n    retention: -5d\n"}, "a.yaml:3: tenants.a.retention: A duration such as 30d, 12h or 90m, or 0 to keep forever"),
    ],
)
def test_every_problem_names_file_line_and_path(tmp_path: Path, plugin_catalog: PluginCatalog, files: dict[str, str], expected: str) -> None:
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path, plugin_catalog)
    assert any(str(issue).startswith(expected) for issue in caught.value.issues), [str(i) for i in caught.value.issues]


def test_all_problems_are_reported_at_once(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    write(tmp_path, "a.yaml", "channels:\n  sms: {providers: [ghost]}\n  email: {providers: [phantom]}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path, plugin_catalog)
    assert len(caught.value.issues) == 2


def test_a_provider_config_error_never_echoes_the_secret_value(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    write(tmp_path, "a.yaml", "providers:\n  hook: {plugin: webhook, config: {secret: hunter2-not-a-whsec}}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path, plugin_catalog)
    assert "providers.hook.config.secret" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_an_empty_or_missing_directory_is_an_error(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    with pytest.raises(PolicyError, match="no \\*.yaml"):
        load_policies(tmp_path, plugin_catalog)
    with pytest.raises(PolicyError, match="does not exist"):
        load_policies(tmp_path / "missing", plugin_catalog)


def test_every_problem_in_the_set_is_reported_at_once(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    write(tmp_path, "a.yaml", "tenants:\n  a:\n    status: sleepy\n    colour: red\nquotas:\n  a: {daily: 0}\n")
    write(tmp_path, "b.yaml", "retry_schedules:\n  r: {delays: [soon], max_attempts: 0}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies(tmp_path, plugin_catalog)
    located = sorted(f"{issue.file}:{issue.line}: {issue.path}" for issue in caught.value.issues)
    assert located == [
        "a.yaml:3: tenants.a.status",
        "a.yaml:4: tenants.a.colour",
        "a.yaml:6: quotas.a.daily",
        "b.yaml:2: retry_schedules.r.delays[0]",
        "b.yaml:2: retry_schedules.r.max_attempts",
    ]


def test_declared_template_variables_are_required_even_when_a_channel_does_not_use_them(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    write(tmp_path, "a.yaml", "templates:\n  t:\n    variables: [code, name]\n    channels: {sms: {body: 'code {{ code }}'}}\n")
    template = load_policies(tmp_path, plugin_catalog).template("anyone", "t")
    assert template is not None and template.declared == {"code", "name"}


# Where a delivery's retry schedule comes from, most specific first. Each schedule's one delay
# names it, so the table reads which level won.
SCHEDULES = "\n".join(
    f"  {name}: {{delays: [{seconds}s]}}"
    for name, seconds in (("tenant_route", 1), ("tenant_default", 2), ("shared_route", 3), ("default", 4))
)
LEVELS = ("tenant_route", "tenant_default", "shared_route", "default")


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (LEVELS, 1.0),
        (("tenant_default", "shared_route", "default"), 2.0),
        (("shared_route", "default"), 3.0),
        (("tenant_route", "shared_route", "default"), 1.0),
        (("tenant_default", "default"), 2.0),
        (("default",), 4.0),
        ((), None),  # the built-in backoff
    ],
)
def test_a_retry_schedule_is_taken_from_the_most_specific_level_that_names_one(
    tmp_path: Path, plugin_catalog: PluginCatalog, present: tuple[str, ...], expected: float | None
) -> None:
    named = {level: f", retry_schedule: {level}" if level in present else "" for level in LEVELS[:3]}
    defaults = "\n    defaults: {retry_schedule: tenant_default}" if "tenant_default" in present else ""
    schedules = "\n".join(line for line in SCHEDULES.splitlines() if line.split(":")[0].strip() in present)
    write(tmp_path, "p.yaml", (
        "providers:\n  mem: {plugin: memory}\n"
        f"channels:\n  sms: {{providers: [mem]{named['shared_route']}}}\n  email: {{providers: [mem]}}\n"
        f"tenants:\n  acme:\n    channels:\n      sms: {{providers: [mem]{named['tenant_route']}}}{defaults}\n"
        "  other: {}\n"
        + (f"retry_schedules:\n{schedules}\n" if schedules else "")
    ))
    policy = load_policies(tmp_path, plugin_catalog)
    schedule = policy.retry_schedule("acme", "sms")
    assert (schedule.delays[0] if schedule else None) == expected
    assert schedule is None or schedule.max_attempts == 2, "one delay: one retry, two attempts"
    shared = 3.0 if "shared_route" in present else 4.0 if "default" in present else None
    other = policy.retry_schedule("other", "sms")  # another tenant never gets acme's route or defaults
    assert (other.delays[0] if other else None) == shared


BAD_SECRETS = ["whsec_AAAAA", "whsec_c2VjcmV0!!!!", "whsec_"]
"""Secrets that look like whsec_ ones but do not decode to a key: base64 of a wrong length, not base64, nothing."""


@pytest.mark.parametrize("secret", BAD_SECRETS)
def test_check_refuses_an_event_webhook_secret_that_does_not_decode_naming_where_it_is(tmp_path: Path, secret: str) -> None:
    good = signing.new_secret()
    write(tmp_path, "tenants.yaml", f"tenants:\n  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]\n")
    write(
        tmp_path, "webhooks.yaml",
        "webhooks:\n  acme:\n    main:\n      url: https://hooks.example.com/tidings\n      events: ['*']\n"
        f"      secret: '{secret}'\n      previous_secrets: ['{good}', '{secret}']\n",
    )
    code, out = run_cli("check", str(tmp_path))
    assert code == 1
    assert "webhooks.yaml:6: webhooks.acme.main.secret: must be whsec_ followed by the key in base64" in out
    assert "webhooks.yaml:7: webhooks.acme.main.previous_secrets[1]: must be whsec_" in out
    assert "previous_secrets[0]" not in out, "a good secret is not reported"
    assert secret == "whsec_" or secret not in out, "values are never echoed"


@pytest.mark.parametrize("secret", ["whsec_AAAAAAAAAAAAAAAAA", "whsec_AAAAAAAAAAAAAAAA=AAA", *BAD_SECRETS])
def test_check_refuses_a_webhook_plugin_secret_that_does_not_decode(tmp_path: Path, secret: str) -> None:
    write(tmp_path, "a.yaml", f"providers:\n  hook: {{plugin: webhook, config: {{secret: '{secret}'}}}}\n")
    code, out = run_cli("check", str(tmp_path))
    assert code == 1 and "a.yaml:2: providers.hook.config.secret: must be whsec_ then the key in base64" in out, out


def test_a_webhook_plugin_secret_that_decodes_passes(tmp_path: Path, plugin_catalog: PluginCatalog) -> None:
    for size in range(12, 33):  # keys of every length from 12 bytes: each padding base64 has
        secret = "whsec_" + base64.b64encode(os.urandom(size)).decode()
        write(tmp_path, "a.yaml", f"providers:\n  hook: {{plugin: webhook, config: {{secret: '{secret}'}}}}\n")
        assert load_policies(tmp_path, plugin_catalog).provider_instances["hook"].config["secret"] == secret


@pytest.mark.parametrize("value", ["-5d", "-1", "'thirty days'", "7", "1w", "null", "true"])
def test_check_refuses_a_retention_that_is_not_a_duration_or_zero(tmp_path: Path, value: str) -> None:
    write(tmp_path, "tenants.yaml", f"tenants:\n  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]\n    retention: {value}\n")
    code, out = run_cli("check", str(tmp_path))
    assert code == 1
    assert "tenants.yaml:4: tenants.acme.retention: A duration such as 30d, 12h or 90m, or 0 to keep forever." in out, out


@pytest.mark.parametrize(
    ("value", "seconds"), [("", 30 * 86400.0), ("90d", 90 * 86400.0), ("12h", 43200.0), ("20s", 20.0), ("0", None), ("0s", None), ("0d", None)]
)
def test_a_retention_is_seconds_or_none_for_ever_and_thirty_days_unless_set(
    tmp_path: Path, plugin_catalog: PluginCatalog, value: str, seconds: float | None
) -> None:
    setting = f"\n    retention: {value}" if value else ""
    write(tmp_path, "tenants.yaml", f"tenants:\n  acme:\n    api_keys: [{key_entry(LIVE_KEY)}]{setting}\n")
    assert load_policies(tmp_path, plugin_catalog).retentions == {"acme": seconds}
