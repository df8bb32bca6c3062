"""Secrets kept out of sight: which config values are secret, and how they are masked wherever shown.

A plugin's config schema marks its secret fields with ``"x-secret": true``; every value a
policy reference resolved (``{$env}``, ``{$file}``, ``enc:v1``) is a :class:`ResolvedSecret`,
masked even where a schema forgot the mark. :func:`mask_config` makes a config safe to log or
print; :func:`redact` takes an instance's secret values out of any text a plugin produced.
The plugin contract uses this module, so it sits below every part and imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set
from typing import Any, Final

MASK = "********"
SECRET_MARK = "x-secret"


class ResolvedSecret(str):
    """A value read from a secret reference: a ``str`` to whoever uses it, a mask to whoever prints it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


MIN_REDACTED: Final = 4
"""Shorter values are not looked for in text: masking every "1" or "on" would garble it, and no secret is that short."""


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


_MARKED: dict[int, tuple[Mapping[str, Any], frozenset[str]]] = {}
"""id(schema) → (the schema, its secret paths): a plugin's schema is a class constant, walked once, not per callback."""
MARKED_KEPT: Final = 256  # schemas remembered at most; more (made on the fly, as tests do) start the memo afresh


def marked_paths(schema: Mapping[str, Any]) -> frozenset[str]:
    """:func:`secret_paths` of ``schema``, remembered: every callback's headers are redacted, so this is on the hot path."""
    found = _MARKED.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1]
    if len(_MARKED) >= MARKED_KEPT:
        _MARKED.clear()
    paths = frozenset(secret_paths(schema))
    _MARKED[id(schema)] = (schema, paths)  # the schema is kept with its id, so the id cannot be reused meanwhile
    return paths


def mask_config(schema: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` safe to log or print: marked fields and resolved references masked."""
    return _mask(config, marked_paths(schema), "")


def _mask(config: Mapping[str, Any], secrets: Set[str], prefix: str) -> dict[str, Any]:
    return {key: _masked(value, secrets, f"{prefix}{key}") for key, value in config.items()}


def _masked(value: Any, secrets: Set[str], path: str) -> Any:
    if path in secrets or isinstance(value, ResolvedSecret):
        return MASK
    if isinstance(value, Mapping):
        return _mask(value, secrets, path + ".")
    if isinstance(value, (list, tuple)):
        # Schemas mark no paths inside arrays; only resolved references are masked there.
        return [_masked(item, set(), "") for item in value]
    return value


def secret_texts(schema: Mapping[str, Any], config: Mapping[str, Any]) -> frozenset[str]:
    """The text values in ``config`` that are secret: at paths the schema marks, and every resolved reference."""
    found: set[str] = set()
    _collect(config, marked_paths(schema), "", found)
    return frozenset(value for value in found if len(value) >= MIN_REDACTED)


def _collect(value: Any, secrets: Set[str], path: str, found: set[str], marked: bool = False) -> None:
    marked = marked or path in secrets
    if isinstance(value, str):
        if marked or isinstance(value, ResolvedSecret):
            found.add(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _collect(item, secrets, f"{path}.{key}" if path else str(key), found, marked)
    elif isinstance(value, (list, tuple)):
        for item in value:  # the items of a marked list are secret too
            _collect(item, secrets, path, found, marked)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` replaced by the mask, longest first (one may contain another)."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """:func:`redact` with ``secrets`` fixed (and ordered) once, for many texts."""
    ordered = sorted(secrets, key=len, reverse=True)

    def redact_text(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, MASK)
        return text

    return redact_text
