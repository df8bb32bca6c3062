"""Prefixed ULIDs: sortable by creation time, and the kind is readable off the wire.

An id is ``<prefix>_`` plus a standard 26-character ULID: 48 bits of Unix milliseconds, then
80 random bits, in Crockford base32. Within one millisecond the random part counts up, so ids
made by this process sort in the order they were made (a monotonic ULID). The encoding is done
here rather than by a ULID library because a send makes several ids and the library's spend
more time than the rest of the id work together.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from typing import Final

NOTIFICATION: Final = "ntf"
DELIVERY: Final = "dlv"
EVENT: Final = "evt"
ATTEMPT: Final = "att"
WEBHOOK: Final = "whk"
KEY: Final = "key"
CONTACT: Final = "ctc"

PREFIXES: Final = frozenset({NOTIFICATION, DELIVERY, EVENT, ATTEMPT, WEBHOOK, KEY, CONTACT})

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS: Final = tuple(high + low for high in _CROCKFORD for low in _CROCKFORD)  # every 10-bit value
_SHIFTS: Final = tuple(range(120, -1, -10))  # 13 pairs: 130 bits, the top two always zero
_RANDOM_LIMIT: Final = 1 << 80


class _Monotonic:
    """Counts up within a millisecond; a new millisecond starts from fresh random bits.

    The bits come from a generator seeded once from the OS rather than from ``os.urandom`` each
    millisecond: that is a system call, which gives up the GIL, and under load the event loop
    then waits for the writer thread to hand it back (a tenth of the loop's time, profiled).
    The ids need to be unique and unpredictable enough not to be guessed in passing, not secret.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        """Start over from fresh OS bits: at start, and in a forked child, which must not repeat its parent's (nor inherit its lock)."""
        self._lock = threading.Lock()
        self._ms = 0
        self._random = 0
        self._bits = random.Random(os.urandom(32)).getrandbits

    def next(self) -> int:
        ms = time.time_ns() // 1_000_000
        with self._lock:
            if ms <= self._ms:  # the same millisecond, or the clock stepped back: count on
                if self._random + 1 < _RANDOM_LIMIT:
                    self._random += 1
                    return self._ms << 80 | self._random
                ms = self._ms + 1  # the random part ran out: borrow the next millisecond
            self._ms, self._random = ms, self._bits(80)
            return ms << 80 | self._random


_monotonic = _Monotonic()
_next = _monotonic.next
os.register_at_fork(after_in_child=_monotonic.reseed)


def _encode(value: int) -> str:
    return "".join([_PAIRS[value >> shift & 1023] for shift in _SHIFTS])


def new_ulid() -> str:
    """A new 26-character ULID, greater than every one this process made before."""
    return _encode(_next())


def derived_id(prefix: str, at: float, number: int, salt: bytes) -> str:
    """The id of the ``number``-th thing a store keeps (an event, an attempt), made at ``at`` (Unix seconds).

    It is a ULID like :func:`new_id`'s: the time, then 80 bits of a keyed hash of ``number``
    (``salt`` is the store's own, so ids do not reveal how many there were and differ between
    stores). The same (at, number, salt) always gives the same id, so the id need not be stored.
    """
    ms = max(0, min(int(at * 1000), (1 << 48) - 1))
    random = int.from_bytes(hashlib.blake2b(number.to_bytes(8, "big", signed=True), digest_size=10, key=salt).digest(), "big")
    return f"{prefix}_{_encode(ms << 80 | random)}"


def new_id(prefix: str) -> str:
    """A new id such as ``ntf_01J9Z3…``; later ids sort after earlier ones."""
    return f"{prefix}_{new_ulid()}"


def first_id_at(prefix: str, timestamp: float) -> str:
    """The lowest id of kind ``prefix`` that can be made at ``timestamp`` (epoch seconds).

    Every id made before that millisecond sorts below it, so it bounds a range of ids by
    creation time (an index on the id serves the range; no index on a time column is needed).
    """
    return f"{prefix}_{_encode(max(int(timestamp * 1000), 0) << 80)}"


def has_prefix(value: str, prefix: str) -> bool:
    """Whether ``value`` looks like an id of kind ``prefix`` (cheap shape check, no decoding)."""
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
