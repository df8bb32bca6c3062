"""tidings-ntfy: ntfy push notifications for the Tidings gateway.

Registered as the ``ntfy`` provider plugin (entry point ``tidings.providers``), it adds the
``ntfy`` channel, addressed by a recipient's ``ntfy_topic``. Its conformance kit is
:data:`tidings_ntfy.testing.KIT`.
"""

from tidings_ntfy.provider import CHANNEL, ERRORS, NtfyProvider

__all__ = ["CHANNEL", "ERRORS", "NtfyProvider"]
__version__ = "0.1.0"
