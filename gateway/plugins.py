"""Finding provider plugins: stevedore discovery of the ``tidings.providers`` entry points.

Discovery happens once per process. A plugin that fails to import or is not a valid
:class:`~gateway.plugin_api.Provider` is logged and listed (``tidings plugins``), never fatal;
only a policy that names it is rejected. That includes a plugin whose ``new_channels`` would
make the channel vocabulary ambiguous: a channel named like a built-in one, or one another
installed plugin also adds with a different recipient or template rule (both are refused, so
the outcome does not depend on the order entry points are found in).
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from types import MappingProxyType
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from stevedore import ExtensionManager
from stevedore.extension import Extension

from gateway.channels import BUILTIN_CHANNELS, ChannelCatalog
from gateway.errors import PluginLoadError
from gateway.plugin_api import ChannelSpec, Provider

NAMESPACE: Final = "tidings.providers"
CHANNEL_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RECIPIENT_FIELD: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
RESERVED_RECIPIENT_FIELDS: Final = frozenset({"data"})
"""Keys a recipient cannot use: in a bulk request a row's ``data`` holds that row's variables."""
log = logging.getLogger(__name__)


def check_provider_class(name: str, candidate: object) -> type[Provider]:
    """``candidate`` if it is a usable Provider class, else :class:`PluginLoadError` saying why."""
    if not (inspect.isclass(candidate) and issubclass(candidate, Provider)):
        raise PluginLoadError(f"{name}: {candidate!r} is not a gateway.Provider subclass")
    if inspect.isabstract(candidate):
        raise PluginLoadError(f"{name}: {candidate.__name__} does not implement send()")
    if not candidate.channels:
        raise PluginLoadError(f"{name}: {candidate.__name__}.channels is empty")
    try:
        _check_schema(dict(candidate.config_schema))
    except SchemaError as err:
        raise PluginLoadError(f"{name}: config_schema is not valid JSON Schema: {err.message}") from err
    _check_new_channels(name, candidate)
    return candidate


_VALID_SCHEMAS: set[str] = set()
"""Config schemas already found valid, as canonical JSON: checking one against the metaschema takes milliseconds,
and every catalog built in a process (one per app) checks the same plugins again."""


def _check_schema(schema: dict[str, object]) -> None:
    """Raise :class:`SchemaError` unless ``schema`` is valid JSON Schema (2020-12); remembered once it is."""
    try:
        key = json.dumps(schema, sort_keys=True, default=repr)
    except (TypeError, ValueError):  # not plain JSON (a recursive structure): check it every time
        Draft202012Validator.check_schema(schema)
        return
    if key not in _VALID_SCHEMAS:
        Draft202012Validator.check_schema(schema)
        _VALID_SCHEMAS.add(key)


def _check_new_channels(name: str, candidate: type[Provider]) -> None:
    """The channels a plugin adds are well formed, new, and served by the plugin itself."""
    builtin = {spec.name for spec in BUILTIN_CHANNELS}
    seen: set[str] = set()
    for spec in candidate.new_channels:
        if not isinstance(spec, ChannelSpec):
            raise PluginLoadError(f"{name}: new_channels holds {spec!r}, not a gateway.ChannelSpec")
        if not isinstance(spec.name, str) or not CHANNEL_NAME.fullmatch(spec.name):
            raise PluginLoadError(f"{name}: channel name {spec.name!r} must be 1-32 lowercase letters, digits, - or _, starting with a letter")
        if spec.name in builtin:
            raise PluginLoadError(f"{name}: channel {spec.name!r} is built in; list it in channels, not in new_channels")
        if spec.name in seen:
            raise PluginLoadError(f"{name}: new_channels adds {spec.name!r} twice")
        seen.add(spec.name)
        if spec.name not in candidate.channels and "*" not in candidate.channels:
            raise PluginLoadError(f"{name}: adds channel {spec.name!r} but does not serve it; add it to channels too")
        if not spec.recipient_fields or isinstance(spec.recipient_fields, str):
            raise PluginLoadError(f"{name}: channel {spec.name!r} needs recipient_fields, a tuple of field names")
        for field_name in spec.recipient_fields:
            if not isinstance(field_name, str) or not RECIPIENT_FIELD.fullmatch(field_name):
                raise PluginLoadError(
                    f"{name}: channel {spec.name!r}: recipient field {field_name!r} must be 1-64 lowercase letters, digits or _, starting with a letter"
                )
            if field_name in RESERVED_RECIPIENT_FIELDS:
                raise PluginLoadError(f"{name}: channel {spec.name!r}: recipient field {field_name!r} is reserved (a bulk row's data)")


def _shape(spec: ChannelSpec) -> tuple[tuple[str, ...], bool, bool]:
    """What a channel means to the core; two plugins may add the same channel only if these agree."""
    return (tuple(spec.recipient_fields), spec.template_required, spec.subject)


def _channel_clashes(providers: Mapping[str, type[Provider]], origins: Mapping[str, str]) -> dict[str, str]:
    """Plugins adding a channel another plugin adds differently, each with why it is refused."""
    adders: dict[str, list[tuple[str, ChannelSpec]]] = {}
    for plugin_name, plugin in providers.items():
        for spec in plugin.new_channels:
            adders.setdefault(spec.name, []).append((plugin_name, spec))
    refused: dict[str, str] = {}
    for channel, found in adders.items():
        if len({_shape(spec) for _, spec in found}) < 2:
            continue
        for plugin_name, _spec in found:
            others = ", ".join(f"{other!r} ({origins.get(other, '?')})" for other, _ in found if other != plugin_name)
            refused.setdefault(
                plugin_name,
                f"{plugin_name}: channel {channel!r} is also added by plugin {others}, with other recipient fields or "
                "template/subject rules; uninstall one of them",
            )
    return refused


@dataclass(frozen=True)
class PluginCatalog:
    """Installed provider plugins by entry-point name, and those that failed to load."""

    providers: Mapping[str, type[Provider]]
    failures: Mapping[str, str] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def discover(cls) -> PluginCatalog:
        """Load every ``tidings.providers`` entry point installed in this environment."""
        failures: dict[str, str] = {}

        def on_failure(_manager: ExtensionManager[Any], entry_point: Any, err: BaseException) -> None:
            failures[entry_point.name] = f"{type(err).__name__}: {err}"
            log.warning("provider plugin %r failed to load: %s", entry_point.name, err)

        manager = ExtensionManager(NAMESPACE, invoke_on_load=False, on_load_failure_callback=on_failure)
        return cls._from_extensions(manager.extensions, failures)

    @classmethod
    def from_classes(cls, classes: Mapping[str, type[Provider]]) -> PluginCatalog:
        """A catalog of the given classes, through the same checks (for tests and embedding)."""
        extensions = [
            Extension(name, EntryPoint(name, f"{plugin.__module__}:{plugin.__qualname__}", NAMESPACE), plugin, None)
            for name, plugin in classes.items()
        ]
        manager = ExtensionManager.make_test_instance(extensions, namespace=NAMESPACE)
        return cls._from_extensions(manager.extensions, {})

    @classmethod
    def _from_extensions(cls, extensions: Iterable[Extension[Any]], failures: dict[str, str]) -> PluginCatalog:
        providers: dict[str, type[Provider]] = {}
        origins: dict[str, str] = {}
        for extension in extensions:
            try:
                providers[extension.name] = check_provider_class(extension.name, extension.plugin)
            except PluginLoadError as err:
                failures[extension.name] = str(err)
                log.warning("provider plugin %r is unusable: %s", extension.name, err)
                continue
            origins[extension.name] = extension.entry_point.value
        for refused, why in _channel_clashes(providers, origins).items():
            failures[refused] = why
            log.warning("provider plugin %r is unusable: %s", refused, why)
            del providers[refused], origins[refused]
        return cls(MappingProxyType(providers), MappingProxyType(failures), MappingProxyType(origins))

    def get(self, name: str) -> type[Provider] | None:
        return self.providers.get(name)

    def channel_catalog(self) -> ChannelCatalog:
        """Built-in channels plus every channel an installed plugin adds."""
        return ChannelCatalog.with_builtins(spec for plugin in self.providers.values() for spec in plugin.new_channels)
