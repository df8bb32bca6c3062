"""Loading policies: the YAML files operators keep in git, read, merged, validated and built into one view.

Every ``*.yaml`` / ``*.yml`` file under the policy directory (hidden entries skipped, so a
Kubernetes ConfigMap's ``..data`` folder is not read twice) holds top-level sections —
``tenants``, ``providers``, ``channels``, ``templates``, ``routes``, ``events``,
``retry_schedules``, ``quotas``, ``webhooks``, ``operators`` — and a section may be split across files. The merged set is
validated as a whole; every problem is reported with its file, line and path, all at once.
A valid set becomes an immutable :class:`PolicySet`; :class:`PolicyHolder` swaps sets
atomically so a request keeps the set it started with.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from gateway.errors import PolicyError, PolicyIssue
from gateway.plugin_api import ProviderLimits
from gateway.plugins import PluginCatalog
from gateway.policy.models import SANDBOX, SECTIONS, PolicyDocument
from gateway.policy.secret_values import SecretResolver
from gateway.policy.sources import Path_, Sources
from gateway.policy.validation import check_references, check_schema, compile_templates, explain_old_routes, pydantic_message
from gateway.policy.view import KeyEntry, OperatorEntry, PolicySet


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


def _read_file(path: Path, label: str, sources: Sources) -> None:
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


def _merge(plain: dict[str, Any], local: dict[Path_, tuple[str, int | None]], label: str, sources: Sources) -> None:
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
    sources = Sources()
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


def build_policy_set(sources: Sources, plugins: PluginCatalog, secrets: SecretResolver | None = None) -> PolicySet:
    # Secrets first: everything after validates the values, never the references.
    (secrets or SecretResolver()).resolve(sources.document, sources.issue)
    explain_old_routes(sources)
    check_schema(sources)
    if sources.issues:
        raise PolicyError(sources.issues)
    try:
        document = PolicyDocument.model_validate(sources.document)
    except PydanticValidationError as err:  # the schema should have caught it; report it all the same
        for error in err.errors():
            sources.issue(error["loc"], pydantic_message(error))
        raise PolicyError(sources.issues) from None
    channels = plugins.channel_catalog()
    check_references(document, plugins, channels, sources)
    templates = compile_templates(document, channels, sources)
    keys = _index_keys(document, sources)
    operators = _index_operators(document, sources)
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
        simulated_instances=_simulated_instances(document, plugins),
        operators_by_prefix=MappingProxyType(operators),
    )


def _instance_limits(document: PolicyDocument, plugins: PluginCatalog) -> dict[str, ProviderLimits]:
    limits: dict[str, ProviderLimits] = {}
    for name, instance in document.providers.items():
        plugin = plugins.get(instance.plugin)
        limits[name] = plugin.limits if plugin is not None else ProviderLimits()
    return limits



def _simulated_instances(document: PolicyDocument, plugins: PluginCatalog) -> frozenset[str]:
    """The instances whose plugin reaches no one, and the default ``sandbox`` the pool adds when policy names none."""
    found = {name for name, instance in document.providers.items() if (plugin := plugins.get(instance.plugin)) is not None and plugin.simulated}
    return frozenset(found | ({SANDBOX} if SANDBOX not in document.providers else set()))


def _index_keys(document: PolicyDocument, sources: Sources) -> dict[str, tuple[KeyEntry, ...]]:
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


def _index_operators(document: PolicyDocument, sources: Sources) -> dict[str, tuple[OperatorEntry, ...]]:
    """Operators' keys by prefix; a key already used (by a tenant or another operator) is refused: one key, one holder."""
    taken = {key.sha256: f"tenant {tenant!r}" for tenant, policy in document.tenants.items() for key in policy.api_keys}
    by_prefix: dict[str, list[OperatorEntry]] = {}
    for name, key in document.operators.items():
        if key.sha256 in taken:
            sources.issue(("operators", name, "sha256"), f"duplicate key hash (first used by {taken[key.sha256]})")
            continue
        taken[key.sha256] = f"operator {name!r}"
        by_prefix.setdefault(key.prefix, []).append(OperatorEntry(name, key))
    return {prefix: tuple(entries) for prefix, entries in by_prefix.items()}
