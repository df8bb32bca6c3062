"""Fake third-party services on loopback, for tests that need a real socket to misbehave on.

Tests import them with tests/ on the path, like ``conftest``: ``from fakes.vendor import FakeVendor``.
Scenarios that need the fake in its own process run ``python -m tests.fakes.vendor``.
"""
