"""ERC-20 call data and Transfer log decoding, shared by every chain."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

TRANSFER_TOPIC = keccak(b"Transfer(address,address,uint256)")
TRANSFER_SELECTOR = keccak(b"transfer(address,uint256)")[:4]
BALANCE_OF_SELECTOR = keccak(b"balanceOf(address)")[:4]
MINT_SELECTOR = keccak(b"mint(address,uint256)")[:4]


def transfer_calldata(recipient: str, amount: int) -> bytes:
    return TRANSFER_SELECTOR + abi_encode(["address", "uint256"], [recipient, amount])


def mint_calldata(recipient: str, amount: int) -> bytes:
    return MINT_SELECTOR + abi_encode(["address", "uint256"], [recipient, amount])


def balance_of_calldata(owner: str) -> bytes:
    return BALANCE_OF_SELECTOR + abi_encode(["address"], [owner])


def decode_uint256(data: bytes) -> int:
    (value,) = abi_decode(["uint256"], data)
    return int(value)


@dataclass(frozen=True)
class TransferLog:
    """One ERC-20 Transfer event; addresses are EIP-55 checksummed."""

    token: str
    sender: str
    recipient: str
    amount: int


def decode_transfer_logs(logs: Iterable[Mapping[str, Any]]) -> list[TransferLog]:
    """Pick the ERC-20 Transfer events out of a receipt's logs.

    ERC-721 also emits Transfer(address,address,uint256), but with the token id as a
    fourth topic and no data, so only logs with exactly three topics and 32 bytes of
    data count.
    """
    transfers = []
    for log in logs:
        topics = [bytes(topic) for topic in log["topics"]]
        data = bytes(log["data"])
        if len(topics) != 3 or topics[0] != TRANSFER_TOPIC or len(data) != 32:
            continue
        transfers.append(
            TransferLog(
                token=to_checksum_address(log["address"]),
                sender=to_checksum_address(topics[1][-20:]),
                recipient=to_checksum_address(topics[2][-20:]),
                amount=int.from_bytes(data, "big"),
            )
        )
    return transfers
