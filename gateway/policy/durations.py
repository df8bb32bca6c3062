"""Durations and rates as operators write them in policy: ``90s``, ``5m``, ``1h``, ``10/s``."""

from __future__ import annotations

import re
from typing import Final

# JSON Schema patterns (ECMA-262, where ``$`` is the end of the text); Python reads them with
# ``fullmatch``, since its ``$`` also matches before a trailing newline. ``[0-9]``, not ``\d``,
# which takes any Unicode digit.
DURATION_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h|d)$"
RATE_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?/(s|m|h|d)$"
_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION: Final = re.compile(DURATION_PATTERN)
_RATE: Final = re.compile(RATE_PATTERN)


def parse_duration(text: str) -> float:
    """Seconds in ``text`` such as ``500ms``, ``90s``, ``5m``, ``1h`` or ``2d``."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (write e.g. 90s, 5m, 1h)")
    return float(text[: match.start(2)]) * _SECONDS[match.group(2)]


def parse_rate(text: str) -> float:
    """Events per second in ``text`` such as ``10/s``, ``600/m`` or ``5000/d``."""
    amount, _, unit = text.partition("/")
    if not _RATE.fullmatch(text):
        raise ValueError(f"not a rate: {text!r} (write e.g. 10/s, 600/m)")
    return float(amount) / _SECONDS[unit]
