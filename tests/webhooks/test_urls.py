"""Endpoint URL forms and the public-address rule. Nothing here sends a request."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from orderdesk.config import Settings as WebhookSettings
from orderdesk.webhooks import urls


@pytest.mark.parametrize(
    "url",
    [
        "https://merchant.example.com/webhooks",
        "http://127.0.0.1:8080/hooks?x=1",
        "https://[2001:db8::1]/hooks",
        "HTTPS://Merchant.Example.com/",
        "https://user:pass@merchant.example.com/",
        "https://xn--bcher-kva.example/",
    ],
)
def test_valid_url_forms(url: str) -> None:
    assert urls.url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/", "must start with https:// or http://"),
        ("example.com/hooks", "must start with https:// or http://"),
        ("https:///hooks", "has no host"),
        ("https://exa mple.com/", "whitespace"),
        ("https://example.com/\x7f", "control character"),
        ("https://example.com:0/", "port 0"),
        ("https://example.com:70000/", "not a valid URL"),
        ("https://[::1/", "not a valid URL"),
        ("https://example.com/" + "a" * 2029, "maximum of 2048"),
    ],
)
def test_invalid_url_forms(url: str, problem: str) -> None:
    found = urls.url_problem(url)
    assert found is not None
    assert problem in found


def test_url_of_2048_characters_allowed() -> None:
    url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    assert len(url) == 2048
    assert urls.url_problem(url) is None


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd00::1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("100.64.0.1", "not a public address"),
        ("224.0.0.1", "not a public address"),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_address_classes(address: str, problem: str | None) -> None:
    assert urls.address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://10.0.0.8/x",
        "http://169.254.169.254/latest/meta-data",
    ],
)
def test_check_public_blocks(url: str) -> None:
    with pytest.raises(urls.BlockedAddress, match="only to public addresses"):
        urls.check_public(url)


def test_check_public_allows_public_literal() -> None:
    address = urls.check_public("https://93.184.216.34/hooks")
    assert address == ipaddress.ip_address("93.184.216.34")


def test_unspecified_address_blocked() -> None:
    unspecified = ipaddress.ip_address(0)
    assert str(unspecified) == "0.0.0.0"  # noqa: S104 - an address, not a bind
    assert urls.address_problem(unspecified) is not None
    assert urls.address_problem(ipaddress.ip_address("::")) is not None


def test_unresolvable_host_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    # A failing resolver, so that the test sends no DNS query off this machine.
    def fail(*_args: object, **_kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(urls.BlockedAddress, match="could not be resolved"):
        urls.check_public("https://no-such-host.example/hooks")


def test_private_urls_allowed_by_environment() -> None:
    assert urls.private_urls_allowed(WebhookSettings(environment="development"))
    assert urls.private_urls_allowed(WebhookSettings(environment="staging"))
    assert not urls.private_urls_allowed(WebhookSettings(environment="production"))
    allowed = WebhookSettings(environment="production", webhook_allow_private_urls=True)
    assert urls.private_urls_allowed(allowed)


def test_pin_keeps_host_and_tls_name() -> None:
    pinned = urls.pin(
        "https://merchant.example.com:8443/hooks?a=1",
        ipaddress.ip_address("93.184.216.34"),
    )

    assert pinned.url == "https://93.184.216.34:8443/hooks?a=1"
    assert pinned.headers == {"host": "merchant.example.com:8443"}
    assert pinned.extensions == {"sni_hostname": "merchant.example.com"}


def test_pin_ipv6_address() -> None:
    pinned = urls.pin(
        "http://merchant.example.com/h", ipaddress.ip_address("2001:db8::5")
    )

    assert pinned.url == "http://[2001:db8::5]/h"
    assert pinned.headers == {"host": "merchant.example.com"}
    assert pinned.extensions == {}
