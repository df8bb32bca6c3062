"""Finding provider plugins: stevedore discovery of the ``tidings.providers`` entry points.

Discovery happens once per process. A plugin that fails to import or is not a valid
:class:`~gateway.plugin_api.Provider` is logged and listed (``tidings plugins``), never fatal;
only a policy that names it is rejected.
"""

from __future__ import annotations

import inspect
import logging
from importlib.metadata import EntryPoint
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from stevedore import ExtensionManager
from stevedore.extension import Extension

from gateway.channels import ChannelCatalog
from gateway.errors import PluginLoadError
from gateway.plugin_api import Provider

NAMESPACE: Final = "tidings.providers"
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
        Draft202012Validator.check_schema(dict(candidate.config_schema))
    except SchemaError as err:
        raise PluginLoadError(f"{name}: config_schema is not valid JSON Schema: {err.message}") from err
    return candidate


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
        return cls(MappingProxyType(providers), MappingProxyType(failures), MappingProxyType(origins))

    def get(self, name: str) -> type[Provider] | None:
        return self.providers.get(name)

    def channel_catalog(self) -> ChannelCatalog:
        """Built-in channels plus every channel an installed plugin adds."""
        return ChannelCatalog.with_builtins(spec for plugin in self.providers.values() for spec in plugin.new_channels)
