"""Egress: where the gateway may connect on a tenant's behalf (the SSRF guard).

A url a tenant chooses (a ``webhook`` channel recipient, an event webhook endpoint) must not
reach the gateway's own host or network: loopback, link-local (cloud metadata at
``169.254.169.254``), private, shared (``100.64.0.0/10``, with ``100.100.100.200``),
unspecified, multicast or reserved addresses, nor an IPv6 form of one (``::ffff:127.0.0.1``,
NAT64 ``64:ff9b::/96``) or 6to4 (``2002::/16``).

The check is made on the socket, on the very address it is about to connect to: the
connector's ``socket_factory`` refuses any other. A name is resolved once, by the connector,
and each address it gave is checked as it is connected to, so a name that answers a public
address to one lookup and a private one to the next (DNS rebinding) gains nothing, and an IP
literal in the url, which aiohttp never resolves, is checked all the same. A refused
connection fails with :class:`PrivateAddressError` (as the ``os_error`` of aiohttp's
``ClientConnectorError``); nothing is sent.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Final

import aiohttp
from aiohappyeyeballs import AddrInfoType

_SIX_TO_FOUR: Final = ipaddress.ip_network("2002::/16")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


class PrivateAddressError(ConnectionRefusedError):
    """A connection to an address that is not publicly routable, refused before it was made."""

    def __init__(self) -> None:
        # One wording for every address: a name with several private addresses fails with one error.
        super().__init__("the address is not publicly routable")


def is_public(address: str) -> bool:
    """Whether ``address`` (an IPv4 or IPv6 literal, an IPv6 zone allowed) is globally routable.

    An IPv4 address inside IPv6 (mapped, NAT64) is judged as that IPv4 address; 6to4 never passes.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        elif ip in _SIX_TO_FOUR:
            return False
    return ip.is_global and not ip.is_multicast


def public_socket(addr_info: AddrInfoType) -> socket.socket:
    """A socket for ``addr_info``'s address, or :class:`PrivateAddressError` if it is not public."""
    family, type_, proto, _name, address = addr_info
    if not is_public(str(address[0])):
        raise PrivateAddressError()
    return socket.socket(family=family, type=type_, proto=proto)


def public_connector(**kwargs: Any) -> aiohttp.TCPConnector:
    """A connector that connects only to publicly routable addresses; ``kwargs`` go to ``TCPConnector``."""
    return aiohttp.TCPConnector(socket_factory=public_socket, **kwargs)


def refused_as_private(err: BaseException) -> bool:
    """Whether a request failed because the guard refused its address (and not because it could not connect)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, PrivateAddressError):
            return True
        if isinstance(seen, aiohttp.ClientConnectorError) and isinstance(seen.os_error, PrivateAddressError):
            return True
        seen = seen.__cause__
    return False
