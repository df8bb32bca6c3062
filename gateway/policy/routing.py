"""Which routes a business event takes, and the fingerprint that dedupe and acknowledgement go by: pure rules, no I/O.

A route matches an event when every condition its ``match`` gives holds:

- ``event``: the event's name, exactly or as a glob (``fnmatch`` rules, case-sensitive:
  ``*`` any run of characters, dots included; ``?`` one character; ``[abc]`` / ``[!abc]`` one
  of / none of those);
- ``severity``: a minimum (``high`` takes high and critical), or a list of those taken;
- ``source``: the event's source, exactly or as a glob (an event without a source matches no
  route that names one);
- ``data``: each dotted path (``address.country``) into the event's data holds that value, or
  one of the values listed (``true`` is not ``1``: types must agree, numbers aside);
- ``tenant``, on the route itself: only that tenant's events.

Every matching route fires, in route-name order, each making its own notifications
(:func:`matching_routes`). An event that none matches is recorded as ``no_route_matched``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from gateway.policy.models import SEVERITIES, RoutePolicy

MISSING: Final = object()
"""What :func:`lookup` finds at a path the data does not have."""

FINGERPRINT_FIELD: Final = re.compile(
    r"^(event_name|source|severity|actor\.type|actor\.id|recipient|recipient\.[A-Za-z0-9_]+|data(\.[^.\s]+)+)$"
)
"""The fields a dedupe fingerprint may list; the recipient always counts, listed or not."""


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What routing reads of a business event."""

    name: str
    severity: str
    source: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    actor: Mapping[str, str] | None = None


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` is no usable glob (a ``[`` never closed), or None."""
    index = 0
    while index < len(pattern):
        if pattern[index] == "[":
            close = pattern.find("]", index + 2 if pattern[index + 1 : index + 2] in ("!", "]") else index + 1)
            if close == -1:
                return f"the [ at position {index + 1} is never closed (write [abc] for one of a, b, c)"
            index = close
        index += 1
    return None


def lookup(data: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``data``, or :data:`MISSING`."""
    found: Any = data
    for part in path.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return MISSING
        found = found[part]
    return found


def _same(expected: Any, actual: Any) -> bool:
    """Equal, and of the same kind: ``true`` is not ``1``, while ``1`` is ``1.0``."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    return bool(expected == actual)


def _severity_matches(wanted: str | Sequence[str] | None, severity: str) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return SEVERITIES.index(severity) >= SEVERITIES.index(wanted)
    return severity in wanted


def _data_matches(wanted: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    for path, expected in wanted.items():
        actual = lookup(data, path)
        options = expected if isinstance(expected, list) else [expected]
        if actual is MISSING or not any(_same(option, actual) for option in options):
            return False
    return True


def route_matches(route: RoutePolicy, tenant: str, event: EventFacts) -> bool:
    """Whether ``route`` takes ``event`` of ``tenant``: every condition it gives holds."""
    match = route.match
    if route.tenant is not None and route.tenant != tenant:
        return False
    if not fnmatch.fnmatchcase(event.name, match.event):
        return False
    if not _severity_matches(match.severity, event.severity):
        return False
    if match.source is not None and (event.source is None or not fnmatch.fnmatchcase(event.source, match.source)):
        return False
    return _data_matches(match.data, event.data)


def matching_routes(routes: Mapping[str, RoutePolicy], tenant: str, event: EventFacts) -> list[str]:
    """The names of every route that takes the event, in name order: each fires, and makes its own notifications."""
    return [name for name in sorted(routes) if route_matches(routes[name], tenant, event)]


def fingerprint_value(name: str, event: EventFacts, recipient: Mapping[str, Any]) -> Any:
    """The value of fingerprint field ``name`` (see :data:`FINGERPRINT_FIELD`) for this event and recipient; None if absent."""
    if name == "event_name":
        return event.name
    if name in ("source", "severity"):
        return getattr(event, name)
    if name.startswith("actor."):
        return (event.actor or {}).get(name.removeprefix("actor."))
    if name == "recipient":
        return dict(recipient)
    if name.startswith("recipient."):
        return recipient.get(name.removeprefix("recipient."))
    value = lookup(event.data, name.removeprefix("data."))
    return None if value is MISSING else value


def fingerprint(route: str, fields: Sequence[str], event: EventFacts, recipient: Mapping[str, Any]) -> str:
    """The hash of the listed fields' values for one recipient of the event on ``route``.

    The recipient always counts: two people told of the same certificate are two fingerprints.
    A field the event does not have counts as null.
    """
    values = [[name, fingerprint_value(name, event, recipient)] for name in fields]
    canonical = orjson.dumps([route, values, dict(recipient)], option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()
