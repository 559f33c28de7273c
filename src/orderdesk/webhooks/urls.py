"""Endpoint URLs: their form, and the rule that keeps webhooks off internal networks.

In production a webhook may go only to public addresses, so that a merchant cannot
make the server call its own network (loopback, private ranges, link-local cloud
metadata addresses). The rule is checked when an endpoint is saved and again before
each attempt, because DNS can change in between. At attempt time the request goes to
the very address that was checked, so a name cannot resolve to a second address for
the connection itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

MAX_URL_LENGTH = 2048

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(Exception):
    """The URL's host is, or resolves to, an address webhooks may not reach."""


def url_problem(url: str) -> str | None:
    """Return why `url` cannot be a webhook URL, or None when its form is valid."""
    if len(url) > MAX_URL_LENGTH:
        return f"is {len(url)} characters long, over the maximum of {MAX_URL_LENGTH}"
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return (
            "contains whitespace or a control character, which must be percent-encoded"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with https:// or http://"
    if not parts.hostname:
        return "has no host, as in https://example.com/webhooks"
    if port == 0:
        return "has port 0, but a port is 1 to 65535"
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"is not a valid URL ({exc})"
    return None


def private_urls_allowed(settings: Any) -> bool:
    """Return whether URLs may reach loopback, private and link-local addresses."""
    if getattr(settings, "webhook_allow_private_urls", False):
        return True
    return getattr(settings, "environment", "development") != "production"


def address_problem(address: IPAddress) -> str | None:
    """Return why webhooks may not reach `address`, or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or not address.is_global:
        return "not a public address"
    return None


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _addresses(infos: list[Any]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # An IPv6 sockaddr may carry a zone, as in "fe80::1%eth0".
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def _check(host: str, addresses: list[IPAddress]) -> IPAddress:
    if not addresses:
        raise BlockedAddress(f"host {host} resolves to no address")
    for address in addresses:
        problem = address_problem(address)
        if problem is None:
            continue
        where = (
            f"{host} is" if host == str(address) else f"{host} resolves to {address},"
        )
        raise BlockedAddress(
            f"host {where} {problem}, but webhooks go only to public addresses"
        )
    return addresses[0]


def _host_and_port(parts: SplitResult) -> tuple[str, int]:
    host = parts.hostname or ""
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def check_public(url: str) -> IPAddress:
    """Resolve the URL's host and return its first address when all are public.

    Raises BlockedAddress naming the first address that is not public, or saying
    that the name did not resolve.
    """
    host, port = _host_and_port(urlsplit(url))
    literal = _literal_address(host)
    if literal is not None:
        return _check(host, [literal])
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BlockedAddress(f"host {host} could not be resolved ({exc})") from exc
    return _check(host, _addresses(infos))


async def check_public_async(url: str) -> IPAddress:
    """Resolve like `check_public` without blocking the event loop."""
    host, port = _host_and_port(urlsplit(url))
    literal = _literal_address(host)
    if literal is not None:
        return _check(host, [literal])
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BlockedAddress(f"host {host} could not be resolved ({exc})") from exc
    return _check(host, _addresses(list(infos)))


@dataclass(frozen=True)
class PinnedRequest:
    """A URL rewritten to connect to one checked address, with what keeps it valid."""

    url: str
    headers: dict[str, str]
    extensions: dict[str, Any]


def pin(url: str, address: IPAddress) -> PinnedRequest:
    """Point `url` at `address` while keeping its Host header and TLS server name."""
    original = httpx.URL(url)
    host = f"[{address}]" if address.version == 6 else str(address)
    pinned = original.copy_with(host=host.strip("[]"))
    headers = {"host": original.netloc.decode("ascii")}
    extensions: dict[str, Any] = {}
    if original.scheme == "https":
        # The certificate is checked against this name, not against the address.
        extensions["sni_hostname"] = original.host
    return PinnedRequest(str(pinned), headers, extensions)
