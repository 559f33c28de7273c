"""EVM address validation: lower-case accepted, mixed case must be EIP-55."""

from __future__ import annotations

import re

from eth_utils import to_checksum_address

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def validate_address(value: str) -> str:
    """Return the checksummed form of a 0x address, or raise ValueError."""
    if not _HEX_ADDRESS.fullmatch(value):
        raise ValueError(f"{value[:50]!r} is not a 0x address of 40 hex digits")
    digits = value[2:]
    checksummed = to_checksum_address(value)
    if digits.lower() != digits and digits.upper() != digits and checksummed != value:
        raise ValueError(
            f"{value} has mixed case but a wrong EIP-55 checksum; send it all lower-case "
            "or with the right checksum"
        )
    return checksummed
