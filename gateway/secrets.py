"""Secret values in provider configs: marked in the plugin's schema, masked wherever shown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MASK = "********"
SECRET_MARK = "x-secret"


def secret_paths(schema: Mapping[str, Any]) -> set[str]:
    """Dotted paths of the properties a JSON Schema marks with ``"x-secret": true``."""
    found: set[str] = set()
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, Mapping):
            continue
        if sub.get(SECRET_MARK):
            found.add(name)
        found.update(f"{name}.{inner}" for inner in secret_paths(sub))
    return found


def mask_config(schema: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` safe to log or print: secret values replaced by a mask."""
    return _mask(config, secret_paths(schema), "")


def _mask(config: Mapping[str, Any], secrets: set[str], prefix: str) -> dict[str, Any]:
    masked: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if path in secrets:
            masked[key] = MASK
        elif isinstance(value, Mapping):
            masked[key] = _mask(value, secrets, path + ".")
        else:
            masked[key] = value
    return masked
