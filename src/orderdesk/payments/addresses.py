"""EVM address parsing: all-lowercase accepted, any other case must be EIP-55."""

from __future__ import annotations

import re

from eth_utils import to_checksum_address

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class InvalidAddress(ValueError):
    """The text is not an address, or its mixed case is not a valid checksum."""


def parse_address(value: str) -> str:
    """Return the EIP-55 checksummed form of a 0x address.

    An all-lowercase address is accepted as it is. Any upper-case letter makes the
    text a checksum, which must then match EIP-55 exactly, so a mistyped character is
    caught instead of sending funds to the wrong account.
    """
    if not _ADDRESS.fullmatch(value):
        raise InvalidAddress(
            f"{value[:60]!r} is not an address; send 0x followed by 40 hex digits."
        )
    checksummed = to_checksum_address(value)
    if value != value.lower() and value != checksummed:
        raise InvalidAddress(
            f"{value} has mixed case but is not a valid EIP-55 checksum; check the "
            "address, or send it all in lowercase."
        )
    return checksummed


# The earlier name, kept for callers that still import it.
validate_address = parse_address
