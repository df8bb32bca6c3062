"""The commands that talk to a running gateway through its HTTP API: ``send``, ``status``, ``dead-letters``.

They are API clients like any other: they know the gateway only by its URL and a tenant's key,
and see what that key sees. ``api`` holds the connection and the error handling, ``bulk`` the
CSV upload, ``timeline`` how a notification reads on a terminal, ``progress`` the bar on
stderr, and ``commands`` the argparse wiring that ``gateway.cli`` mounts.
"""
