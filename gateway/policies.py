"""Policy: the YAML files operators keep in git, loaded, validated and served as one view.

Every ``*.yaml`` / ``*.yml`` file under the policy directory (hidden entries skipped, so a
Kubernetes ConfigMap's ``..data`` folder is not read twice) holds top-level sections —
``tenants``, ``providers``, ``channels``, ``templates``, ``routes``, ``retry_schedules``,
``quotas``, ``webhooks`` — and a section may be split across files. The merged set is
validated as a whole; every problem is reported with its file, line and path, all at once.
A valid set becomes an immutable :class:`PolicySet`; :class:`PolicyHolder` swaps sets
atomically so a request keeps the set it started with.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaValidationError
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic import ValidationError as PydanticValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from gateway import schema
from gateway.breakers import BreakerPolicy
from gateway.channels import ChannelCatalog
from gateway.durations import DURATION_PATTERN, RATE_PATTERN, parse_duration
from gateway.errors import PolicyError, PolicyIssue
from gateway.plugin_api import ProviderLimits, Sender
from gateway.plugins import PluginCatalog
from gateway.secret_values import SecretResolver
from gateway.templates import CompiledContent, CompiledTemplate, template_syntax_error

SECTIONS: Final = ("tenants", "providers", "channels", "templates", "routes", "retry_schedules", "quotas", "webhooks")
SANDBOX: Final = "sandbox"
DEFAULT_RETRY_SCHEDULE: Final = "default"  # exists even when retry_schedules does not define it
Path_ = tuple[str | int, ...]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""Names of tenants, provider instances, templates, schedules and endpoints."""
Duration = Annotated[str, Field(pattern=DURATION_PATTERN, description="A duration such as 90s, 5m, 1h or 2d.")]
Rate = Annotated[str, Field(pattern=RATE_PATTERN, description="A rate such as 10/s or 600/m.")]
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
    "message.queued", "message.sent", "message.delivered", "message.read", "message.failed", "message.dead_lettered",
    "message.replied", "recipient.opted_out", "recipient.opted_in", "provider.circuit_opened", "provider.circuit_closed",
    "quota.threshold",
)
EventType = Literal[
    "*", "message.queued", "message.sent", "message.delivered", "message.read", "message.failed", "message.dead_lettered",
    "message.replied", "recipient.opted_out", "recipient.opted_in", "provider.circuit_opened", "provider.circuit_closed",
    "quota.threshold",
]


class ApiKeyPolicy(_Model):
    """An API key, stored as its hash; ``tidings key create`` prints the entry."""

    prefix: str = Field(pattern=r"^.{12}$", description="The key's first 12 characters, for lookup.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the whole key.")
    mode: Literal["live", "test"] = Field("live", description="test keys send only through the sandbox.")
    name: str | None = None


class ChannelRoutePolicy(_Model):
    """How one channel is carried: provider instances in failover order, retries, throughput."""

    providers: list[Name] = Field(min_length=1, description="Provider instances in failover order.")
    retry_schedule: Name | None = Field(None, description="A schedule from retry_schedules; the default one when unset.")
    throughput: Rate | None = Field(None, description="At most this many sends on the channel, e.g. 10/s.")


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


class TemplatePolicy(_Model):
    """A message template: content per channel plus the defaults it brings to a request."""

    description: str | None = None
    version: int | str | None = Field(None, description="Your own version marker, recorded with each notification.")
    language: str | None = Field(None, description="Language of the content, e.g. en or pt-BR.")
    variables: list[str] | None = Field(
        None, description="Variables a request must supply; when set, every placeholder must be listed here."
    )
    priority: Priority | None = None
    strategy: Strategy | None = None
    fallback_after: Duration | None = None
    ttl: Duration | None = Field(None, description="Give up on a delivery this long after it was accepted.")
    channels: dict[str, TemplateContentPolicy] = Field(min_length=1)


class TenantPolicy(_Model):
    name: str | None = None
    status: Literal["active", "suspended"] = "active"
    api_keys: list[ApiKeyPolicy] = Field(default_factory=list)
    channels: dict[str, ChannelRoutePolicy] = Field(default_factory=dict, description="Overrides of the shared channels, per channel.")
    templates: dict[Name, TemplatePolicy] = Field(default_factory=dict, description="Templates only this tenant can use.")
    senders: dict[str, SenderPolicy] = Field(default_factory=dict, description="Sender identity per channel.")
    defaults: TenantDefaults = Field(default_factory=TenantDefaults)


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


class RoutePolicy(_Model):
    """A business event (``order.shipped``) and the notification it becomes."""

    template: Name
    channels: list[str] = Field(min_length=1)
    strategy: Strategy = "all"
    fallback_after: Duration | None = None
    priority: Priority | None = None
    tenant: Name | None = Field(None, description="Only for this tenant (and its own templates); every tenant when unset.")
    description: str | None = None


class RetrySchedulePolicy(_Model):
    """The wait before each retry, in order. N delays are N retries: N + 1 attempts in all, unless
    max_attempts asks for more, when the last delay repeats."""

    delays: list[Duration] = Field(min_length=1, description="The wait before each retry: the first, the second, ...")
    max_attempts: int | None = Field(
        None, ge=2, le=100,
        description="Attempts in all, the first included; at least one more than there are delays (the default).",
    )


class QuotaPolicy(_Model):
    """Sends a tenant may make: a burst and a sustained rate per minute, and a daily cap."""

    burst_per_minute: int | None = Field(None, ge=1)
    sustained_per_minute: int | None = Field(None, ge=1)
    daily: int | None = Field(None, ge=1)
    warn_at: float = Field(0.8, gt=0, le=1, description="Emit quota.threshold at this fraction of the daily cap.")


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
    description: str | None = None


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
    routes: dict[str, RoutePolicy] = Field(default_factory=dict, description="Business events by name, e.g. order.shipped.")
    retry_schedules: dict[Name, RetrySchedulePolicy] = Field(default_factory=dict)
    quotas: dict[Name, QuotaPolicy] = Field(default_factory=dict, description="Per tenant.")
    webhooks: dict[Name, dict[Name, WebhookEndpointPolicy]] = Field(
        default_factory=dict, description="Per tenant: endpoints by name."
    )


RESERVED_INSTANCE_NAMES: Final = frozenset({"public-key"})
"""Instance names whose callback URL the gateway uses itself."""
_NO_DEFAULTS: Final = TenantDefaults()
_DEFAULT_BREAKER: Final = CircuitBreakerPolicy()


@functools.lru_cache(maxsize=256)
def _breaker_policy(failures: int, window: str, cooldown: str) -> BreakerPolicy:
    """Parsed once per distinct setting: every send asks for its instance's policy."""
    return BreakerPolicy(failures, parse_duration(window), parse_duration(cooldown))


@dataclass(frozen=True)
class RetrySchedule:
    """Delays between attempts in seconds; past the last one, the last one repeats."""

    delays: tuple[float, ...]
    max_attempts: int

    @classmethod
    def from_policy(cls, policy: RetrySchedulePolicy) -> RetrySchedule:
        """A schedule of N delays: N retries, or more when ``max_attempts`` asks, the last delay repeating."""
        delays = tuple(parse_duration(delay) for delay in policy.delays)
        return cls(delays, policy.max_attempts or len(delays) + 1)

    def delay(self, attempt: int) -> float:
        """How long to wait after failed attempt number ``attempt`` (1-based)."""
        return self.delays[min(attempt, len(self.delays)) - 1]


@dataclass(frozen=True)
class KeyEntry:
    tenant: str
    key: ApiKeyPolicy


@dataclass(frozen=True)
class PolicySet:
    """An immutable, validated policy set and the indexes requests need from it."""

    document: PolicyDocument
    version: str
    loaded_at: float
    files: tuple[str, ...]
    channels: ChannelCatalog
    keys_by_prefix: Mapping[str, tuple[KeyEntry, ...]]
    templates: Mapping[tuple[str | None, str], CompiledTemplate]
    provider_instances: Mapping[str, ProviderInstancePolicy] = field(default_factory=dict)
    instance_limits: Mapping[str, ProviderLimits] = field(default_factory=dict)
    """What each instance's plugin declares it can take (``ProviderLimits``), by instance name."""

    def tenant(self, name: str) -> TenantPolicy | None:
        return self.document.tenants.get(name)

    def template(self, tenant: str, template_id: str) -> CompiledTemplate | None:
        """The tenant's own template of that id, else the shared one."""
        return self.templates.get((tenant, template_id)) or self.templates.get((None, template_id))

    def instance_rate(self, name: str) -> str | None:
        instance = self.provider_instances.get(name)
        return instance.rate if instance else None

    def breaker_policy(self, name: str) -> BreakerPolicy:
        instance = self.provider_instances.get(name)
        found = instance.circuit_breaker if instance else _DEFAULT_BREAKER
        return _breaker_policy(found.failures, found.window, found.cooldown)

    def channel_throughput(self, channel: str) -> str | None:
        """The shared throughput limit of ``channel`` (one limit for all tenants' traffic on it)."""
        route = self.document.channels.get(channel)
        return route.throughput if route else None

    def tenant_defaults(self, tenant: str) -> TenantDefaults:
        tenant_policy = self.document.tenants.get(tenant)
        return tenant_policy.defaults if tenant_policy else _NO_DEFAULTS

    def sender(self, tenant: str, channel: str) -> Sender | None:
        """The tenant's sender identity on ``channel``, if its policy sets one."""
        tenant_policy = self.document.tenants.get(tenant)
        found = tenant_policy.senders.get(channel) if tenant_policy else None
        return Sender(found.from_, found.name, found.reply_to) if found else None

    def retry_schedule(self, tenant: str, channel: str) -> RetrySchedule | None:
        """The schedule for a tenant's deliveries on ``channel``; None means the built-in backoff.

        The tenant's own route for the channel wins, then the tenant's default, then the shared
        route for the channel, then a policy schedule named ``default``.
        """
        tenant_policy = self.document.tenants.get(tenant)
        tenant_route = tenant_policy.channels.get(channel) if tenant_policy else None
        shared_route = self.document.channels.get(channel)
        candidates = (
            tenant_route.retry_schedule if tenant_route else None,
            tenant_policy.defaults.retry_schedule if tenant_policy else None,
            shared_route.retry_schedule if shared_route else None,
            DEFAULT_RETRY_SCHEDULE,
        )
        for name in candidates:
            if name is not None and (found := self.document.retry_schedules.get(name)) is not None:
                return RetrySchedule.from_policy(found)
        return None

    def providers_for(self, tenant: str, channel: str) -> tuple[str, ...]:
        """Provider instances serving ``channel`` for ``tenant``, in failover order."""
        tenant_policy = self.document.tenants.get(tenant)
        route = tenant_policy.channels.get(channel) if tenant_policy else None
        route = route or self.document.channels.get(channel)
        return tuple(route.providers) if route else ()

    def max_body_chars(self, tenant: str, channel: str) -> int | None:
        """The longest body any instance serving ``channel`` for ``tenant`` takes; None: no limit (or no instance)."""
        limits = [self.instance_limits.get(name, ProviderLimits()).max_body_chars for name in self.providers_for(tenant, channel)]
        if not limits or None in limits:
            return None
        return max(limit for limit in limits if limit is not None)


class PolicyHolder:
    """The policy set currently served; replaced whole, never edited in place."""

    def __init__(self, initial: PolicySet) -> None:
        self._current = initial
        self.last_error: PolicyError | None = None
        self.last_error_at: float | None = None
        self.last_reload_at: float = initial.loaded_at

    @property
    def current(self) -> PolicySet:
        return self._current

    def swap(self, new: PolicySet) -> None:
        self._current = new
        self.clear_error()
        self.last_reload_at = new.loaded_at

    def reject(self, error: PolicyError) -> None:
        """Keep serving the current set, and record why the files on disk were not taken."""
        self.last_error = error
        self.last_error_at = time.time()

    def clear_error(self) -> None:
        """The files on disk are the set being served again: no rejection is pending."""
        self.last_error = None
        self.last_error_at = None


# --- loading -----------------------------------------------------------------------------


@dataclass
class _Sources:
    """The merged raw document plus where each path came from (file, line)."""

    document: dict[str, dict[str, Any]] = field(default_factory=dict)
    origins: dict[Path_, tuple[str, int | None]] = field(default_factory=dict)
    issues: list[PolicyIssue] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    files: list[str] = field(default_factory=list)

    def locate(self, path: Sequence[str | int]) -> tuple[str, int | None]:
        """The file and line of ``path``, or of its nearest located ancestor."""
        for depth in range(len(path), 0, -1):
            found = self.origins.get(tuple(path[:depth]))
            if found is not None:
                return found
        return (self.files[0] if self.files else "<policy>", None)

    def issue(self, path: Sequence[str | int], message: str) -> None:
        file, line = self.locate(path)
        self.issues.append(PolicyIssue(file, _dotted(path), message, line))


def _dotted(path: Sequence[str | int]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else (f".{part}" if i else part) for i, part in enumerate(path))


def policy_files(directory: Path) -> list[Path]:
    """YAML files under ``directory``, sorted, skipping hidden files and folders."""
    found = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix in (".yaml", ".yml") and path.is_file():
            found.append(path)
    return found


def _plain(node: Any, path: Path_, file: str, origins: dict[Path_, tuple[str, int | None]]) -> Any:
    """ruamel's round-trip nodes as plain Python, recording the line of every key and item."""
    if isinstance(node, CommentedMap):
        out = {}
        for key, value in node.items():
            child = (*path, str(key))
            origins[child] = (file, node.lc.key(key)[0] + 1)
            out[str(key)] = _plain(value, child, file, origins)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            child = (*path, index)
            origins[child] = (file, node.lc.item(index)[0] + 1)
            items.append(_plain(value, child, file, origins))
        return items
    return node


def _read_file(path: Path, label: str, sources: _Sources) -> None:
    try:
        raw = path.read_bytes()
    except OSError as err:
        sources.issues.append(PolicyIssue(label, "", f"cannot read file: {err.strerror or err}"))
        return
    sources.digest.update(label.encode() + b"\0" + raw + b"\0")
    try:
        loaded = YAML(typ="rt").load(raw)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        sources.issues.append(PolicyIssue(label, "", f"invalid YAML: {problem}", line))
        return
    if loaded is None:
        return
    if not isinstance(loaded, CommentedMap):
        sources.issues.append(PolicyIssue(label, "", "a policy file must be a mapping of sections", 1))
        return
    local: dict[Path_, tuple[str, int | None]] = {}
    plain = _plain(loaded, (), label, local)
    _merge(plain, local, label, sources)


def _merge(plain: dict[str, Any], local: dict[Path_, tuple[str, int | None]], label: str, sources: _Sources) -> None:
    for section, entries in plain.items():
        if section not in SECTIONS:
            line = local.get((section,), (label, None))[1]
            known = ", ".join(SECTIONS)
            sources.issues.append(PolicyIssue(label, section, f"unknown section (known: {known})", line))
            continue
        if entries is None:
            continue
        if not isinstance(entries, dict):
            sources.issues.append(PolicyIssue(label, section, "must be a mapping of names to entries", local[(section,)][1]))
            continue
        merged = sources.document.setdefault(section, {})
        for name, entry in entries.items():
            if name in merged:
                first_file, first_line = sources.origins[(section, name)]
                where = f"{first_file}:{first_line}"
                sources.issues.append(
                    PolicyIssue(label, f"{section}.{name}", f"defined again (first at {where})", local[(section, name)][1])
                )
                continue
            merged[name] = entry
    sources.origins.update({path: origin for path, origin in local.items() if path not in sources.origins})


def load_policies(directory: Path, plugins: PluginCatalog, *, secrets: SecretResolver | None = None) -> PolicySet:
    """Read, merge and validate every policy file in ``directory``; raise :class:`PolicyError`.

    Secret references are resolved with ``secrets`` (no master key and ``os.environ`` if not
    given), relative ``$file`` paths against ``directory``.
    """
    sources = _Sources()
    if not directory.is_dir():
        raise PolicyError([PolicyIssue(str(directory), "", "policy directory does not exist")])
    files = policy_files(directory)
    if not files:
        raise PolicyError([PolicyIssue(str(directory), "", "no *.yaml or *.yml policy files found")])
    for path in files:
        label = str(path.relative_to(directory))
        sources.files.append(label)
        _read_file(path, label, sources)
    if sources.issues:
        raise PolicyError(sources.issues)
    return build_policy_set(sources, plugins, (secrets or SecretResolver()).relative_to(directory))


def build_policy_set(sources: _Sources, plugins: PluginCatalog, secrets: SecretResolver | None = None) -> PolicySet:
    # Secrets first: everything after validates the values, never the references.
    (secrets or SecretResolver()).resolve(sources.document, sources.issue)
    _check_schema(sources)
    if sources.issues:
        raise PolicyError(sources.issues)
    try:
        document = PolicyDocument.model_validate(sources.document)
    except PydanticValidationError as err:  # the schema should have caught it; report it all the same
        for error in err.errors():
            sources.issue(error["loc"], _pydantic_message(error))
        raise PolicyError(sources.issues) from None
    channels = plugins.channel_catalog()
    _check_references(document, plugins, channels, sources)
    templates = _compile_templates(document, channels, sources)
    keys = _index_keys(document, sources)
    if sources.issues:
        raise PolicyError(sources.issues)
    return PolicySet(
        document=document,
        version=sources.digest.hexdigest()[:16],
        loaded_at=time.time(),
        files=tuple(sources.files),
        channels=channels,
        keys_by_prefix=MappingProxyType(keys),
        templates=MappingProxyType(templates),
        provider_instances=MappingProxyType(dict(document.providers)),
        instance_limits=MappingProxyType(_instance_limits(document, plugins)),
    )


def _instance_limits(document: PolicyDocument, plugins: PluginCatalog) -> dict[str, ProviderLimits]:
    limits: dict[str, ProviderLimits] = {}
    for name, instance in document.providers.items():
        plugin = plugins.get(instance.plugin)
        limits[name] = plugin.limits if plugin is not None else ProviderLimits()
    return limits


def _check_schema(sources: _Sources) -> None:
    """Every way the merged document breaks the shipped JSON Schema, each at its file and line."""
    _report_schema_errors(schema.validator().iter_errors(sources.document), (), sources)


def _report_schema_errors(errors: Iterable[SchemaValidationError], base: Path_, sources: _Sources) -> None:
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
    if error.validator == "anyOf" and error.context:
        best = min(error.context, key=lambda e: len(list(e.absolute_path)))
        return _schema_issues(best) if best.validator != "type" else [(path, "has the wrong type")]
    return [(path, _schema_message(error))]


def _pydantic_message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return str(error["msg"])


def _check_schedule(name: str, schedule: RetrySchedulePolicy, sources: _Sources) -> None:
    """A delay the schedule would never wait is a mistake, not a setting: refuse it."""
    retries = len(schedule.delays)
    if schedule.max_attempts is not None and schedule.max_attempts <= retries:
        sources.issue(
            ("retry_schedules", name, "max_attempts"),
            f"{retries} delays are {retries} retries, so at least {retries + 1} attempts (the first and its retries); "
            f"with {schedule.max_attempts} the last {retries + 1 - schedule.max_attempts} delay(s) would never be used. "
            "Raise it, or leave it out.",
        )


def _check_references(document: PolicyDocument, plugins: PluginCatalog, channels: ChannelCatalog, sources: _Sources) -> None:
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
    routes: list[tuple[str | None, Path_, Mapping[str, ChannelRoutePolicy]]] = [(None, ("channels",), document.channels)]
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
    for tenant, endpoints in document.webhooks.items():
        for name, endpoint in endpoints.items():
            if endpoint.signing == "hmac" and endpoint.secret is None:
                sources.issue(("webhooks", tenant, name, "secret"), "hmac signing needs a secret (whsec_…)")
    for event, event_route in document.routes.items():
        _check_event_route(event, event_route, document, channels, sources)


def _check_name(name: str | None, known: Collection[str], kind: str, path: Path_, sources: _Sources) -> None:
    if name is not None and name not in known:
        sources.issue(path, f"unknown {kind} {name!r} (known: {', '.join(sorted(known)) or 'none'})")


def _check_event_route(event: str, route: RoutePolicy, document: PolicyDocument, channels: ChannelCatalog, sources: _Sources) -> None:
    base: Path_ = ("routes", event)
    if route.tenant is not None and route.tenant not in document.tenants:
        sources.issue((*base, "tenant"), f"unknown tenant {route.tenant!r}")
    tenant = document.tenants.get(route.tenant) if route.tenant is not None else None
    template = (tenant.templates.get(route.template) if tenant else None) or document.templates.get(route.template)
    if template is None:
        sources.issue((*base, "template"), f"unknown template {route.template!r}")
    for index, channel in enumerate(route.channels):
        if channel not in channels:
            sources.issue((*base, "channels", index), f"unknown channel {channel!r}")
        elif template is not None and channel not in template.channels:
            sources.issue((*base, "channels", index), f"template {route.template!r} has no content for channel {channel!r}")
    if route.fallback_after is not None and route.strategy != "fallback":
        sources.issue((*base, "fallback_after"), "only applies with strategy: fallback")


def _check_instance(name: str, instance: ProviderInstancePolicy, plugins: PluginCatalog, sources: _Sources) -> None:
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
    instance: str, channel: str, owner: str | None, document: PolicyDocument, plugins: PluginCatalog, path: Path_, sources: _Sources
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


def _compile_templates(
    document: PolicyDocument, channels: ChannelCatalog, sources: _Sources
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
            compiled[(tenant, template_id)] = CompiledTemplate(
                template_id, MappingProxyType(contents), template.priority, declared, template.strategy,
                _seconds(template.fallback_after), _seconds(template.ttl),
            )
    return compiled


def _compile_template(
    template: TemplatePolicy, channels: ChannelCatalog, base: Path_, sources: _Sources
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


def _index_keys(document: PolicyDocument, sources: _Sources) -> dict[str, tuple[KeyEntry, ...]]:
    by_prefix: dict[str, list[KeyEntry]] = {}
    seen: dict[str, str] = {}
    for tenant, policy in document.tenants.items():
        for index, key in enumerate(policy.api_keys):
            if key.sha256 in seen:
                path = ("tenants", tenant, "api_keys", index, "sha256")
                sources.issue(path, f"duplicate API key hash (first used by tenant {seen[key.sha256]!r})")
                continue
            seen[key.sha256] = tenant
            by_prefix.setdefault(key.prefix, []).append(KeyEntry(tenant, key))
    return {prefix: tuple(entries) for prefix, entries in by_prefix.items()}
