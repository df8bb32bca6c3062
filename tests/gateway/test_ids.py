"""Ids are standard ULIDs (checked with the python-ulid package) that sort in creation order."""

from __future__ import annotations

import time

from ulid import ULID

from gateway import ids


def test_an_id_is_its_prefix_and_a_ulid_carrying_the_current_time() -> None:
    before = time.time()
    value = ids.new_id(ids.NOTIFICATION)
    prefix, ulid = value.split("_")
    assert prefix == "ntf" and ids.has_prefix(value, ids.NOTIFICATION)
    parsed = ULID.from_str(ulid)
    assert str(parsed) == ulid
    assert before - 0.001 <= parsed.timestamp <= time.time() + 0.001


def test_ids_made_in_a_burst_are_distinct_and_sort_in_the_order_they_were_made() -> None:
    made = [ids.new_ulid() for _ in range(20_000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)



def test_the_first_id_at_a_time_bounds_the_ids_made_before_and_after_it() -> None:
    made = ids.new_id(ids.NOTIFICATION)
    millis = ULID.from_str(made.split("_")[1]).milliseconds
    at_its_time = ids.first_id_at(ids.NOTIFICATION, millis / 1000)
    a_moment_later = ids.first_id_at(ids.NOTIFICATION, (millis + 1.5) / 1000)  # within the next millisecond
    assert at_its_time <= made < a_moment_later
    assert ids.has_prefix(a_moment_later, ids.NOTIFICATION)
    assert ULID.from_str(a_moment_later.split("_")[1]).milliseconds == millis + 1
