"""Performance harness for Tidings: ``make bench`` (``python -m tests.perf.run``).

Not collected by pytest; every measurement runs against real subprocesses on 127.0.0.1.
"""
