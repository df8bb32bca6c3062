"""The policy files' shape: one pydantic model per section and entry, and the small types they share.

The JSON Schema that ships with the package (``gateway/policy/policy.schema.json``) is made
from these models (``make schema``); the loader validates against it first, then builds them.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from gateway.policy.durations import DURATION_PATTERN, RATE_PATTERN

SECTIONS: Final = (
    "tenants", "providers", "channels", "templates", "routes", "events", "retry_schedules", "quotas", "webhooks", "operators",
)


SANDBOX: Final = "sandbox"


DEFAULT_RETRY_SCHEDULE: Final = "default"  # exists even when retry_schedules does not define it


class _Model(BaseModel):
    """Every policy model refuses fields it does not know: a field nothing reads is an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


NOTE: Final = "A note for people reading the policy; Tidings does not act on it."


Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""Names of tenants, provider instances, templates, schedules and endpoints."""


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, description="A duration such as 90s, 5m, 1h or 2d.")]


Rate = Annotated[str, Field(pattern=RATE_PATTERN, description="A rate such as 10/s or 600/m.")]


KEEP_FOREVER: Final = 0
DEFAULT_RETENTION: Final = "30d"

RetentionPeriod = Annotated[
    Duration | Literal[0],
    WithJsonSchema(
        {
            "description": "A duration such as 30d, 12h or 90m, or 0 to keep forever.",
            "anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"const": KEEP_FOREVER}],
        }
    ),
]
"""How long something is kept: a duration, or 0 (also ``0s``, ``0d``) for ever."""


SecretText = Annotated[
    str,
    WithJsonSchema(
        {
            "description": "A secret: write {$env: NAME}, {$file: PATH} or an enc:v1: value, never the secret itself.",
            "anyOf": [
                {"type": "string"},
                {"type": "object", "properties": {"$env": {"type": "string"}}, "required": ["$env"], "additionalProperties": False},
                {"type": "object", "properties": {"$file": {"type": "string"}}, "required": ["$file"], "additionalProperties": False},
            ],
        }
    ),
]


Priority = Literal["high", "normal", "bulk"]


Strategy = Literal["all", "fallback"]


EVENT_TYPES: Final = (
    "message.queued", "message.sent", "message.delivered", "message.opened", "message.clicked", "message.read", "message.failed",
    "message.dead_lettered",
    "message.replied", "message.acknowledged", "recipient.opted_out", "recipient.opted_in", "provider.circuit_opened", "provider.circuit_closed",
    "quota.threshold",
)


EventType = Literal[
    "*", "message.queued", "message.sent", "message.delivered", "message.opened", "message.clicked", "message.read", "message.failed",
    "message.dead_lettered",
    "message.replied", "message.acknowledged", "recipient.opted_out", "recipient.opted_in", "provider.circuit_opened", "provider.circuit_closed",
    "quota.threshold",
]


class ApiKeyPolicy(_Model):
    """An API key, stored as its hash; ``tidings key create`` prints the entry."""

    prefix: str = Field(pattern=r"^.{12}$", description="The key's first 12 characters, for lookup.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the whole key.")
    mode: Literal["live", "test"] = Field("live", description="test keys send only through the sandbox.")
    name: str | None = Field(None, description=f"Whose key this is. {NOTE}")


Role = Literal["viewer", "operator", "admin"]
ROLES: Final = ("viewer", "operator", "admin")
"""Operator roles, least first: each may do what the ones before it may."""


class OperatorKeyPolicy(_Model):
    """A dashboard key for a person who runs the gateway: sees every tenant; ``tidings key create --operator`` prints the entry."""

    prefix: str = Field(pattern=r"^.{12}$", description="The key's first 12 characters, for lookup.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the whole key.")
    role: Role = Field(
        description="viewer: reads every page; operator: also replays dead letters; admin: also reloads the policy from the dashboard."
    )


class TenantChannelPolicy(_Model):
    """How one channel is carried for one tenant: provider instances in failover order, and retries.

    No ``throughput``: a channel's throughput is one limit shared by every tenant's traffic
    (the top-level ``channels``), so a tenant's own would be ignored; ``tidings check`` refuses it.
    """

    providers: list[Name] = Field(min_length=1, description="Provider instances in failover order.")
    retry_schedule: Name | None = Field(None, description="A schedule from retry_schedules; the default one when unset.")


class ChannelRoutePolicy(TenantChannelPolicy):
    """How one channel is carried for every tenant: provider instances in failover order, retries, throughput."""

    throughput: Rate | None = Field(None, description="At most this many sends on the channel, all tenants together, e.g. 10/s.")


class SenderPolicy(_Model):
    """Who a tenant's messages on one channel come from."""

    from_: str = Field(alias="from", description="Email address, phone number, alphanumeric sender id or bot name.")
    name: str | None = Field(None, description="Display name, where the channel has one.")
    reply_to: str | None = None


class TenantDefaults(_Model):
    """What a tenant's requests get when they do not say."""

    strategy: Strategy | None = None
    fallback_after: Duration | None = None
    priority: Priority | None = None
    retry_schedule: Name | None = None


class ProviderTemplatePolicy(_Model):
    """A template approved at the vendor (WhatsApp): its name, language and ordered parameters."""

    name: str
    language: str
    parameters: list[str] = Field(default_factory=list, description="Jinja2 expressions, in the vendor's order.")


class TemplateContentPolicy(_Model):
    subject: str | None = None
    body: str | None = None
    html: str | None = None
    provider_template: ProviderTemplatePolicy | None = None


Locale = Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$", description="A language tag such as pt or pt-BR.")]
"""A BCP 47 language tag, compared without regard to case."""


Category = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="A category such as marketing or security.")]
"""What a message is about, for contacts' category preferences."""


class TemplateTranslationPolicy(_Model):
    """A template's content in another language: per channel, the same rules as the template's own content."""

    channels: dict[str, TemplateContentPolicy] = Field(
        min_length=1, description="Channels of the template in this language; a channel not listed sends the template's own content."
    )


class TemplatePolicy(_Model):
    """A message template: content per channel plus the defaults it brings to a request."""

    description: str | None = Field(None, description=NOTE)
    version: int | str | None = Field(
        None, description="Your own version marker, recorded with each notification (its template_version)."
    )
    language: str | None = Field(
        None, description="Language of the content, e.g. en or pt-BR, recorded with each notification (its template_language)."
    )
    variables: list[str] | None = Field(
        None, description="Variables a request must supply; when set, every placeholder must be listed here."
    )
    priority: Priority | None = None
    strategy: Strategy | None = None
    fallback_after: Duration | None = None
    ttl: Duration | None = Field(None, description="Give up on a delivery this long after it was accepted.")
    category: Category | None = Field(None, description="The category of its messages when a send names none (contacts opt out of categories).")
    channels: dict[str, TemplateContentPolicy] = Field(min_length=1)
    translations: dict[Locale, TemplateTranslationPolicy] = Field(
        default_factory=dict, description="Content per locale: a contact's (or the send's) locale picks one, exactly or by its language."
    )


class TenantPolicy(_Model):
    name: str | None = Field(None, description=f"The tenant's display name. {NOTE}")
    status: Literal["active", "suspended"] = "active"
    api_keys: list[ApiKeyPolicy] = Field(default_factory=list)
    channels: dict[str, TenantChannelPolicy] = Field(
        default_factory=dict, description="Overrides of the shared channels, per channel (throughput stays shared)."
    )
    templates: dict[Name, TemplatePolicy] = Field(default_factory=dict, description="Templates only this tenant can use.")
    senders: dict[str, SenderPolicy] = Field(default_factory=dict, description="Sender identity per channel.")
    defaults: TenantDefaults = Field(default_factory=TenantDefaults)
    retention: RetentionPeriod = DEFAULT_RETENTION
    timezone: str = Field(
        "UTC", min_length=1, max_length=64, description="IANA time zone (Europe/Lisbon) of the tenant's daily digests; UTC when unset."
    )


class CircuitBreakerPolicy(_Model):
    """When to stop sending through an instance that keeps failing, and when to try it again."""

    failures: int = Field(5, ge=1, description="Transient failures within the window that open the circuit.")
    window: Duration = "60s"
    cooldown: Duration = Field("30s", description="How long it stays open before one probe send is let through.")


class ProviderInstancePolicy(_Model):
    """A configured provider: a plugin plus its settings (credentials, URLs, sender)."""

    plugin: str
    tenant: Name | None = Field(None, description="Only this tenant may use the instance (its own vendor account).")
    config: dict[str, Any] = Field(default_factory=dict, description="Checked against the plugin's config_schema.")
    rate: Rate | None = Field(None, description="At most this many sends through the instance, e.g. 10/s.")
    circuit_breaker: CircuitBreakerPolicy = Field(default_factory=CircuitBreakerPolicy)


Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: Final = ("low", "medium", "high", "critical")
"""Business event severities, lowest first: a route's ``severity: high`` matches high and critical."""
DEFAULT_SEVERITY: Final = "medium"
"""An event's severity when neither its request nor its type's policy (``events:``) says."""


EventName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$", description="An event name such as order.shipped.")]


EventGlob = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9_.:*?!\[\]-]{1,128}$",
        description="An event name such as order.shipped, or a glob such as order.* (* any characters, ? one, [abc] one of those).",
    ),
]


DataValue = str | int | float | bool


class RouteMatchPolicy(_Model):
    """Which events a route takes: all of the fields given must hold."""

    event: EventGlob = Field(description="The event's name, exact such as order.shipped, or a glob such as order.* (fnmatch rules).")
    severity: Severity | list[Severity] | None = Field(
        None, description="A minimum (high: high and critical), or a list of the severities taken."
    )
    source: EventGlob | None = Field(None, description="The event's source, exact such as billing, or a glob such as billing-*.")
    data: dict[str, DataValue | list[DataValue]] = Field(
        default_factory=dict, description="Dotted paths into the event's data, each with the value (or one of the values) it must have."
    )


class RouteNotifyPolicy(_Model):
    """The notification a matching event becomes, per recipient: what a send's ``notification`` would say."""

    template: Name
    channels: list[str] = Field(min_length=1)
    strategy: Strategy | None = Field(None, description="all (the default) or fallback; the template's or tenant's when unset.")
    fallback_after: Duration | None = None
    priority: Priority | None = None


class DedupePolicy(_Model):
    """Send a fingerprint once per window: later matching events with the same one are suppressed."""

    window: Duration
    fingerprint: list[str] = Field(
        min_length=1, max_length=16,
        description="Fields whose values form the fingerprint (with the recipient's): event_name, source, severity, "
        "actor.type, actor.id, data.<path>, recipient, recipient.<field>.",
    )


class DigestPolicy(_Model):
    """Collect matching events per recipient and send one notification for them all: every N, or daily at a time."""

    every: Duration | None = Field(None, description="Send what was collected this long after the first event of the window.")
    daily_at: str | None = Field(
        None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Send once a day at HH:MM in the tenant's time zone (tenants.<t>.timezone).",
    )


class RoutePolicy(_Model):
    """A route: which business events it matches, and the notification each becomes."""

    match: RouteMatchPolicy
    notify: RouteNotifyPolicy
    tenant: Name | None = Field(None, description="Only for this tenant (and its own templates); every tenant when unset.")
    dedupe: DedupePolicy | None = None
    repeat_after: Duration | None = Field(
        None, description="Once a notification of the route is acknowledged, suppress its fingerprint this long."
    )
    digest: DigestPolicy | None = None
    description: str | None = Field(None, description=NOTE)


class EventTypePolicy(_Model):
    """What an event type gets when its request does not say."""

    severity: Severity | None = Field(None, description="The severity of an event posted without one (else medium).")
    description: str | None = Field(None, description=NOTE)


class RetrySchedulePolicy(_Model):
    """The wait before each retry, in order. N delays are N retries: N + 1 attempts in all, unless
    max_attempts asks for more, when the last delay repeats."""

    delays: list[Duration] = Field(min_length=1, description="The wait before each retry: the first, the second, ...")
    max_attempts: int | None = Field(
        None, ge=2, le=100,
        description="Attempts in all, the first included; at least one more than there are delays (the default).",
    )


class QuotaPolicy(_Model):
    """Messages a tenant may send (a rate and a daily cap) and business events it may hand in, per key mode."""

    burst_per_minute: int | None = Field(
        None, ge=1, description="Messages at once: the size of the rate limit's bucket (sustained_per_minute when unset)."
    )
    sustained_per_minute: int | None = Field(
        None, ge=1, description="Messages per minute once a burst is spent: the bucket's refill (burst_per_minute when unset)."
    )
    daily: int | None = Field(None, ge=1, description="Messages per UTC day.")
    warn_at: float = Field(0.8, gt=0, le=1, description="Emit quota.threshold at this fraction of the daily cap (and at all of it).")
    events_per_minute: int | None = Field(
        None, ge=1, description="Business events taken in per minute, at most that many at once."
    )


class WebhookEndpointPolicy(_Model):
    """Where a tenant receives event webhooks, and how they are signed."""

    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    events: list[EventType] = Field(min_length=1, description="Event types to send, or * for all.")
    secret: SecretText | None = Field(None, description="whsec_ secret for v1 HMAC signatures.")
    previous_secrets: list[SecretText] = Field(
        default_factory=list, description="Still signed with during a rotation, so receivers can switch over."
    )
    signing: Literal["hmac", "ed25519"] = Field(
        "hmac", description="hmac: v1 signatures with the secret; ed25519: v1a signatures with the gateway's key (and v1 too if a secret is set)."
    )
    disable_after: Duration | None = Field(
        "5d", description="Disable the endpoint after it has failed continuously this long (null: never)."
    )
    allow_private: bool = Field(
        False, description="Allow a url that resolves to a loopback, link-local or private address (refused otherwise: SSRF)."
    )
    description: str | None = Field(None, description=NOTE)


class PolicyDocument(_Model):
    """Every section of a policy set; each may be split across files."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="Tidings policy",
        json_schema_extra={"description": "Sections of a Tidings policy directory; any file may hold any of them."},
    )

    tenants: dict[Name, TenantPolicy] = Field(default_factory=dict)
    providers: dict[Name, ProviderInstancePolicy] = Field(default_factory=dict)
    channels: dict[str, ChannelRoutePolicy] = Field(default_factory=dict)
    templates: dict[Name, TemplatePolicy] = Field(default_factory=dict)
    routes: dict[Name, RoutePolicy] = Field(default_factory=dict, description="Named routes from business events to notifications.")
    events: dict[EventName, EventTypePolicy] = Field(default_factory=dict, description="Defaults per event type, by exact name.")
    retry_schedules: dict[Name, RetrySchedulePolicy] = Field(default_factory=dict)
    quotas: dict[Name, QuotaPolicy] = Field(default_factory=dict, description="Per tenant.")
    webhooks: dict[Name, dict[Name, WebhookEndpointPolicy]] = Field(
        default_factory=dict, description="Per tenant: endpoints by name."
    )
    operators: dict[Name, OperatorKeyPolicy] = Field(
        default_factory=dict, description="Dashboard keys of the people who run the gateway, by their name; they see every tenant."
    )


RESERVED_INSTANCE_NAMES: Final = frozenset({"public-key"})
"""Instance names whose callback URL the gateway uses itself."""
