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

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaValidationError
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from gateway.channels import ChannelCatalog
from gateway.errors import PolicyError, PolicyIssue
from gateway.plugins import PluginCatalog
from gateway.secrets import SecretResolver
from gateway.templates import CompiledContent, CompiledTemplate, template_syntax_error

SECTIONS: Final = ("tenants", "providers", "channels", "templates", "routes", "retry_schedules", "quotas", "webhooks")
SANDBOX: Final = "sandbox"
Path_ = tuple[str | int, ...]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKeyPolicy(_Model):
    prefix: str = Field(pattern=r"^.{12}$", description="The key's first 12 characters, for lookup.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the whole key.")
    mode: Literal["live", "test"] = "live"
    name: str | None = None


class ChannelRoutePolicy(_Model):
    providers: list[str] = Field(min_length=1, description="Provider instances in failover order.")


class ProviderTemplatePolicy(_Model):
    name: str
    language: str
    parameters: list[str] = []


class TemplateContentPolicy(_Model):
    subject: str | None = None
    body: str | None = None
    html: str | None = None
    provider_template: ProviderTemplatePolicy | None = None


class TemplatePolicy(_Model):
    description: str | None = None
    priority: Literal["high", "normal", "bulk"] | None = None
    channels: dict[str, TemplateContentPolicy] = Field(min_length=1)


class TenantPolicy(_Model):
    name: str | None = None
    status: Literal["active", "suspended"] = "active"
    api_keys: list[ApiKeyPolicy] = []
    channels: dict[str, ChannelRoutePolicy] = {}
    templates: dict[str, TemplatePolicy] = {}


class ProviderInstancePolicy(_Model):
    plugin: str
    config: dict[str, Any] = {}


class PolicyDocument(_Model):
    tenants: dict[str, TenantPolicy] = {}
    providers: dict[str, ProviderInstancePolicy] = {}
    channels: dict[str, ChannelRoutePolicy] = {}
    templates: dict[str, TemplatePolicy] = {}
    routes: dict[str, Any] = {}
    retry_schedules: dict[str, Any] = {}
    quotas: dict[str, Any] = {}
    webhooks: dict[str, Any] = {}


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

    def tenant(self, name: str) -> TenantPolicy | None:
        return self.document.tenants.get(name)

    def template(self, tenant: str, template_id: str) -> CompiledTemplate | None:
        """The tenant's own template of that id, else the shared one."""
        return self.templates.get((tenant, template_id)) or self.templates.get((None, template_id))

    def providers_for(self, tenant: str, channel: str) -> tuple[str, ...]:
        """Provider instances serving ``channel`` for ``tenant``, in failover order."""
        tenant_policy = self.document.tenants.get(tenant)
        route = tenant_policy.channels.get(channel) if tenant_policy else None
        route = route or self.document.channels.get(channel)
        return tuple(route.providers) if route else ()


class PolicyHolder:
    """The policy set currently served; replaced whole, never edited in place."""

    def __init__(self, initial: PolicySet) -> None:
        self._current = initial
        self.last_error: PolicyError | None = None
        self.last_reload_at: float = initial.loaded_at

    @property
    def current(self) -> PolicySet:
        return self._current

    def swap(self, new: PolicySet) -> None:
        self._current = new
        self.last_error = None
        self.last_reload_at = new.loaded_at


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
    try:
        document = PolicyDocument.model_validate(sources.document)
    except PydanticValidationError as err:
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
    )


def _pydantic_message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return str(error["msg"])


def _check_references(document: PolicyDocument, plugins: PluginCatalog, channels: ChannelCatalog, sources: _Sources) -> None:
    for name, instance in document.providers.items():
        _check_instance(name, instance, plugins, sources)
    if SANDBOX in document.providers and document.providers[SANDBOX].plugin != SANDBOX:
        sources.issue(("providers", SANDBOX, "plugin"), "the instance named 'sandbox' serves test keys and must use the sandbox plugin")
    routes: list[tuple[Path_, Mapping[str, ChannelRoutePolicy]]] = [(("channels",), document.channels)]
    routes += [(("tenants", tenant, "channels"), policy.channels) for tenant, policy in document.tenants.items()]
    for base, table in routes:
        for channel, route in table.items():
            if channel not in channels:
                sources.issue((*base, channel), f"unknown channel {channel!r}")
                continue
            for index, target in enumerate(route.providers):
                _check_route_target(target, channel, document, plugins, (*base, channel, "providers", index), sources)


def _check_instance(name: str, instance: ProviderInstancePolicy, plugins: PluginCatalog, sources: _Sources) -> None:
    plugin = plugins.get(instance.plugin)
    if plugin is None:
        why = plugins.failures.get(instance.plugin)
        reason = f"failed to load: {why}" if why else f"no such plugin installed (installed: {', '.join(sorted(plugins.providers))})"
        sources.issue(("providers", name, "plugin"), f"plugin {instance.plugin!r} {reason}")
        return
    validator = Draft202012Validator(dict(plugin.config_schema))
    for error in sorted(validator.iter_errors(instance.config), key=lambda e: list(e.absolute_path)):
        path = ("providers", name, "config", *error.absolute_path)
        # Never echo the offending value: it may be a secret.
        sources.issue(path, f"{error.validator} check failed: {_schema_message(error)}")


def _schema_message(error: SchemaValidationError) -> str:
    if error.validator == "required":
        return error.message.split(" is a required property")[0] + " is required"
    if error.validator == "additionalProperties":
        return "unexpected field"
    if error.validator == "type":
        return f"must be of type {error.validator_value}"
    return f"must satisfy {error.validator}={error.validator_value!r}"


def _check_route_target(
    instance: str, channel: str, document: PolicyDocument, plugins: PluginCatalog, path: Path_, sources: _Sources
) -> None:
    target = document.providers.get(instance)
    if target is None:
        sources.issue(path, f"unknown provider instance {instance!r}")
        return
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
            if contents is not None:
                compiled[(tenant, template_id)] = CompiledTemplate(template_id, MappingProxyType(contents), template.priority)
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
