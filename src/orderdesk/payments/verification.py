"""Check a submitted payment transaction against the chain.

The check reads the receipt's ERC-20 Transfer logs, never the transaction's `to` or
`value`: a payment may be relayed through a contract wallet, and a call to the token
contract shows nothing about what it moved.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from eth_typing import HexStr
from eth_utils import to_checksum_address
from web3.exceptions import TransactionNotFound

from orderdesk.payments.amounts import format_amount, from_base_units
from orderdesk.payments.chains import Chain, Token
from orderdesk.payments.erc20 import TransferLog, decode_transfer_logs
from orderdesk.payments.node import node_errors


class Outcome(StrEnum):
    CONFIRMED = "confirmed"
    PENDING = "pending"
    FAILED = "failed"
    DROPPED = "dropped"


class FailureCode(StrEnum):
    TX_ID_NOT_FOUND = "tx-id-not-found"
    TX_FAILED = "tx-failed"
    WRONG_TOKEN = "wrong-token"  # noqa: S105 - a failure code, not a password
    WRONG_RECIPIENT = "wrong-recipient"
    WRONG_PAYER = "wrong-payer"
    INSUFFICIENT_FUNDS = "insufficient-funds"
    TX_ALREADY_USED = "tx-already-used"


@dataclass(frozen=True)
class PaymentCheck:
    """The result of one check.

    For a mined transfer (confirmed, or pending with too few confirmations) `payer`
    is the checksummed sender of the counted transfers, `received_base_units` their
    sum to the treasury and `block_number` the block that contains them. A transaction
    the node has but has not mined is pending with `block_number` None.
    """

    outcome: Outcome
    code: FailureCode | None = None
    message: str | None = None
    payer: str | None = None
    received_base_units: int | None = None
    block_number: int | None = None
    confirmations: int = 0
    required_confirmations: int = 1

    def received_amount(self, token: Token) -> Decimal | None:
        if self.received_base_units is None:
            return None
        return from_base_units(self.received_base_units, token.decimals)


def check_payment(
    chain: Chain,
    token: Token,
    tx_id: str,
    treasury: str,
    required_base_units: int,
    payer: str | None = None,
    *,
    seen_before: bool = False,
) -> PaymentCheck:
    """Check that `tx_id` paid at least `required_base_units` of `token` to `treasury`.

    Outcomes:
    - confirmed: the transfers are valid and have the chain's confirmations;
    - pending: the node has the transaction but has not mined it, or it is mined
      with fewer confirmations than the chain requires (check again later);
    - failed: `code` and `message` say why (tx-id-not-found, tx-failed, wrong-token,
      wrong-recipient, wrong-payer, insufficient-funds);
    - dropped: `seen_before` is True (an earlier check found the transaction, mined
      or not) and the node no longer has it, as after a reorg or an evm_revert.
      The caller puts the payment back to awaiting payment. A transaction that was
      mined and went back to the node's pool reads as pending, not dropped.

    Raises ChainUnavailable when the node cannot be reached; the payment stays in
    progress and the caller checks again.
    """
    treasury = to_checksum_address(treasury)
    payer = to_checksum_address(payer) if payer is not None else None
    w3 = chain.web3
    with node_errors(chain):
        receipt = _receipt(w3, tx_id)
        if receipt is None:
            return _unmined(
                chain, token, tx_id, treasury, required_base_units, seen_before
            )
        latest = int(w3.eth.block_number)
    if receipt["status"] != 1:
        return _failed(
            FailureCode.TX_FAILED,
            f"Transaction {tx_id} failed on {chain.name} (receipt status 0) and moved "
            f"no tokens. Send a new transfer of "
            f"{_amount(required_base_units, token)} to {treasury} and submit its txId.",
        )
    transfers = decode_transfer_logs(receipt["logs"])
    try:
        sender, received = _count_transfers(
            chain, token, tx_id, transfers, treasury, required_base_units, payer
        )
    except _CheckFailed as failed:
        return failed.check
    block_number = int(receipt["blockNumber"])
    confirmations = max(0, latest - block_number + 1)
    outcome = Outcome.CONFIRMED
    if confirmations < chain.confirmations:
        outcome = Outcome.PENDING
    return PaymentCheck(
        outcome=outcome,
        payer=sender,
        received_base_units=received,
        block_number=block_number,
        confirmations=confirmations,
        required_confirmations=chain.confirmations,
    )


def _receipt(w3: Any, tx_id: str) -> Any | None:
    try:
        return w3.eth.get_transaction_receipt(tx_id)
    except TransactionNotFound:
        return None


def _unmined(
    chain: Chain,
    token: Token,
    tx_id: str,
    treasury: str,
    required_base_units: int,
    seen_before: bool,
) -> PaymentCheck:
    try:
        chain.web3.eth.get_transaction(HexStr(tx_id))
    except TransactionNotFound:
        pass
    else:
        return PaymentCheck(Outcome.PENDING, required_confirmations=chain.confirmations)
    if seen_before:
        return PaymentCheck(
            Outcome.DROPPED,
            message=(
                f"Transaction {tx_id} dropped out of the {chain.name} chain before it "
                f"had {chain.confirmations} confirmation(s). Send a new transfer of "
                f"{_amount(required_base_units, token)} to {treasury} and submit its "
                "txId, or submit this txId again if it is mined later."
            ),
            required_confirmations=chain.confirmations,
        )
    return _failed(
        FailureCode.TX_ID_NOT_FOUND,
        f"The {chain.name} node does not know transaction {tx_id}. Check that the "
        f"txId is the hash of a transaction sent on {chain.name}, and submit it again "
        "once the transaction is broadcast.",
    )


class _CheckFailed(Exception):
    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(message)
        self.check = _failed(code, message)


def _count_transfers(
    chain: Chain,
    token: Token,
    tx_id: str,
    transfers: list[TransferLog],
    treasury: str,
    required: int,
    payer: str | None,
) -> tuple[str, int]:
    """Return the sender and amount that count; raises _CheckFailed."""
    of_token = _token_transfers(chain, token, tx_id, transfers)
    to_treasury = [item for item in of_token if item.recipient == treasury]
    if not to_treasury:
        recipients = ", ".join(sorted({item.recipient for item in of_token}))
        raise _CheckFailed(
            FailureCode.WRONG_RECIPIENT,
            f"Transaction {tx_id} sent {token.currency.upper()} to {recipients}, not "
            f"to the treasury {treasury}. Send {_amount(required, token)} to "
            f"{treasury} in a new transaction and submit its txId.",
        )
    by_sender: dict[str, int] = defaultdict(int)
    for item in to_treasury:
        by_sender[item.sender] += item.amount

    sender = _counted_sender(token, tx_id, by_sender, payer)
    received = by_sender[sender]
    if received < required:
        paid, total = _amount(received, token), _amount(required, token)
        raise _CheckFailed(
            FailureCode.INSUFFICIENT_FUNDS,
            f"Transaction {tx_id} paid {paid} from {sender} to the treasury but the "
            f"order total is {total}. Transfers are not added up across "
            f"transactions: send a new transfer of at least {total} and submit its "
            f"txId, and ask the merchant to return the {paid} already sent.",
        )
    return sender, received


def _token_transfers(
    chain: Chain, token: Token, tx_id: str, transfers: list[TransferLog]
) -> list[TransferLog]:
    of_token = [item for item in transfers if item.token == token.address]
    if of_token:
        return of_token
    currency = token.currency.upper()
    others = sorted({item.token for item in transfers})
    moved = f"; it moved tokens of {', '.join(others)} instead" if others else ""
    raise _CheckFailed(
        FailureCode.WRONG_TOKEN,
        f"Transaction {tx_id} has no Transfer of {currency} (token contract "
        f"{token.address} on {chain.name}){moved}. Pay with {currency} from that "
        "contract in a new transaction and submit its txId.",
    )


def _counted_sender(
    token: Token, tx_id: str, by_sender: dict[str, int], payer: str | None
) -> str:
    """Pick the one sender whose transfers count: the order's payer, or else the one
    that sent the most, whose address is recorded as the payer and refunded later."""
    if payer is None:
        return max(by_sender, key=by_sender.__getitem__)
    if payer in by_sender:
        return payer
    raise _CheckFailed(
        FailureCode.WRONG_PAYER,
        f"The {token.currency.upper()} sent to the treasury in transaction {tx_id} "
        f"came from {', '.join(sorted(by_sender))}, not from the order's "
        f"payerAddress {payer}. Pay from {payer}, or change payerAddress on the "
        "order to the paying address before submitting.",
    )


def _failed(code: FailureCode, message: str) -> PaymentCheck:
    return PaymentCheck(Outcome.FAILED, code=code, message=message)


def _amount(base_units: int, token: Token) -> str:
    amount = format_amount(from_base_units(base_units, token.decimals))
    return f"{amount} {token.currency.upper()}"
