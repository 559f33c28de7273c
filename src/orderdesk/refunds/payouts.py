"""Refund payouts: the refund amount in the paid token, from the project's treasury to
the address that paid, exactly once across crashes and retries.

The `refund.payout` job (one per refund, by dedupe key) runs `run_payout` until the
refund is completed. It works in short transactions with every node request between
them, so no transaction stays open while a node answers (on SQLite that would be the
database's write lock, which the devnet needs for its journal):

1. Fund check: on the devnet the treasury gets gas money (`Chain.ensure_gas`); then
   its token balance must cover the amount, and on other chains its native balance
   the gas. If not, the refund stays accepted, `payout.status` names the shortfall
   (failed-insufficient-funds or failed-insufficient-gas), the error is logged and the
   job retries after `payout_retry_seconds`, doubling up to `payout_retry_max_seconds`.
2. Sign: lock the refund, then the treasury's AddressNonce row (created from the
   node's pending nonce when missing), take the next nonce, sign the transfer, store
   the raw transaction and its hash in a Payout row, and COMMIT. Only then broadcast.
3. Broadcast the stored raw transaction and follow its receipt until it has the
   chain's confirmations, then complete the refund: status completed, `payout`
   filled, `Order.refunded_amount` grown, an OrderEvent, the receipt email and the
   orders.refund.completed webhook, in one transaction.

A retry that finds a stored transaction never signs another. It looks the hash up:
mined means wait for confirmations; known to the node means pending; unknown means
broadcast the same raw transaction again. A new transfer is signed only when the
stored one is proven dead, which is one of:

- it was mined and reverted (receipt status 0) and that block has the chain's
  confirmations, so it moved no tokens;
- the node rejects it, and the treasury's nonce in the newest block that has the
  chain's confirmations is past the transaction's nonce while the transaction has no
  receipt. Nonces are used in sequence, so another transaction took that nonce and
  this one can never be mined. The nonce is read before the receipt, so a
  transaction mined between the two reads is seen.

Both proofs hold unless the chain reorganises deeper than its configured
confirmations, the same assumption payment checks make.

NOTE: a transaction that stays pending because its max fee fell below the base fee
is only ever broadcast again unchanged. Nothing yet replaces it with a higher fee at
the same nonce, which would be safe because only one of the two can be mined.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

import requests
import structlog
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr
from eth_utils import to_checksum_address
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from web3.exceptions import (
    ContractLogicError,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)

from orderdesk.auth.models import Project
from orderdesk.config import Settings
from orderdesk.db.base import utcnow
from orderdesk.jobs.registry import RetryLater
from orderdesk.mail.messages import MailKind
from orderdesk.orders.models import Order
from orderdesk.orders.services import record_event
from orderdesk.payments.amounts import format_amount, to_base_units
from orderdesk.payments.chains import Chain, Token
from orderdesk.payments.devnet_state import DevnetError
from orderdesk.payments.erc20 import decode_transfer_logs, transfer_calldata
from orderdesk.payments.exceptions import ChainUnavailable
from orderdesk.payments.models import AddressNonce
from orderdesk.payments.node import node_errors
from orderdesk.payments.preparation import token_balance
from orderdesk.payments.treasury import load_master_secret, treasury_account
from orderdesk.refunds import review, services
from orderdesk.refunds.models import Payout, Refund
from orderdesk.refunds.services import SYSTEM_ACTOR
from orderdesk.refunds.statuses import (
    LIVE_TRANSACTION_STATES,
    PayoutStatus,
    RefundEvent,
    RefundStatus,
    TransactionState,
)
from orderdesk.shipping.rollup import lock_order
from orderdesk.webhooks import events as webhook_events

if TYPE_CHECKING:
    from orderdesk.runtime import Runtime

log = structlog.get_logger(__name__)

# Used when the node cannot estimate the transfer's gas. A transfer of the devnet
# token to a new holder uses about 51,000 gas.
TRANSFER_GAS_FALLBACK = 100_000
GAS_MARGIN_PERCENT = 20
# Crash tests set this variable to "signed" or "sent" to hold the worker for an hour
# right after that step, so it can be killed there. Nothing else may set it.
CRASH_TEST_PAUSE_ENV = "ORDERDESK_TEST_PAYOUT_PAUSE"


class _NotFunded(Exception):
    """The payout cannot be sent now; `status` is the PayoutStatus to show."""

    def __init__(self, status: PayoutStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _Target:
    """The inputs of one payout, copied out of the rows so no transaction stays open."""

    refund_id: str
    order_id: str
    chain: Chain
    token: Token
    amount: Decimal
    base_units: int
    recipient: str
    treasury_index: int
    live: _Live | None


@dataclass(frozen=True)
class _Live:
    """The refund's stored transaction that may still move tokens."""

    payout_id: str
    tx_hash: str
    raw: bytes
    nonce: int
    status: str
    from_address: str


def run_payout(session: Session, runtime: Runtime, refund_id: str) -> None:
    """Take the refund's payout as far as it can go now.

    Raises RetryLater to be run again: while the treasury lacks funds, the node is
    unreachable or the transfer waits for confirmations. Commits between its steps,
    so only the job handler may call it; the worker commits the last step.
    """
    settings = runtime.settings
    try:
        target = _read_target(session, runtime, refund_id)
    except _NotFunded as problem:
        session.rollback()
        _retry_unfunded(session, settings, refund_id, problem)
    # End the read before asking the node, so no transaction stays open meanwhile.
    session.rollback()
    if target is None:
        return
    try:
        live = target.live
        if live is None:
            live = _sign_new(session, settings, target)
            if live is None:
                return
            _pause_for_crash_test("signed")
        _follow(session, settings, target, live)
    except _NotFunded as problem:
        session.rollback()
        _retry_unfunded(session, settings, refund_id, problem)
    except ChainUnavailable as exc:
        session.rollback()
        message = (
            f"The {exc.chain} node could not be reached ({exc.reason}); the payout "
            "is retried."
        )
        _note(session, refund_id, message)
        session.commit()
        raise RetryLater(settings.payout_recheck_seconds, message) from exc


# Reading what to pay


def _read_target(session: Session, runtime: Runtime, refund_id: str) -> _Target | None:
    """Return the payout to make, or None when the refund needs none (any more).

    Raises _NotFunded with failed-not-payable when there is nothing to pay with or to.
    """
    refund = session.get(Refund, refund_id, populate_existing=True)
    if refund is None:
        raise LookupError(f"refund {refund_id} of a payout job is not found")
    if refund.status != RefundStatus.ACCEPTED or refund.return_received_at is None:
        log.info("payout_not_needed", refund_id=refund_id, refund_status=refund.status)
        return None
    order = session.get_one(Order, refund.order_id)
    project = session.get_one(Project, order.project_id)
    chain = runtime.chains.get(order.payment_method) if runtime.chains else None
    if chain is None or order.currency not in chain.tokens:
        raise _NotFunded(
            PayoutStatus.FAILED_NOT_PAYABLE,
            f"The {order.currency} token on chain {order.payment_method} is not "
            "configured, so the refund cannot be paid out. Configure that chain and "
            "token again; the payout is retried.",
        )
    if not order.paid_from:
        raise _NotFunded(
            PayoutStatus.FAILED_NOT_PAYABLE,
            f"Order {order.id} has no recorded payer address to refund. Record the "
            "address the payment came from; the payout is retried.",
        )
    token = chain.tokens[order.currency]
    try:
        base_units = to_base_units(refund.amount, token.decimals)
    except ValueError as exc:
        raise _NotFunded(
            PayoutStatus.FAILED_NOT_PAYABLE,
            f"The refund amount {refund.amount} has more decimals than the "
            f"{token.decimals} of {token.currency}, so it cannot be sent.",
        ) from exc
    return _Target(
        refund_id=refund.id,
        order_id=order.id,
        chain=chain,
        token=token,
        amount=refund.amount,
        base_units=base_units,
        recipient=to_checksum_address(order.paid_from),
        treasury_index=project.treasury_index,
        live=_live_of(session, refund.id),
    )


def _live_of(session: Session, refund_id: str) -> _Live | None:
    payout = session.scalar(
        select(Payout)
        .where(
            Payout.refund_id == refund_id,
            Payout.status.in_(LIVE_TRANSACTION_STATES),
        )
        .execution_options(populate_existing=True)
    )
    if payout is None:
        return None
    return _Live(
        payout_id=payout.id,
        tx_hash=payout.tx_hash,
        raw=payout.raw_transaction,
        nonce=payout.nonce,
        status=payout.status,
        from_address=payout.from_address,
    )


# Signing


def _sign_new(session: Session, settings: Settings, target: _Target) -> _Live | None:
    """Check the funds, then sign the transfer and commit it. Returns None when the
    refund no longer needs a payout. Raises _NotFunded and ChainUnavailable."""
    treasury = treasury_account(load_master_secret(settings), target.treasury_index)
    _check_token_funds(target, treasury.address)
    transaction, pending_nonce = _unsigned_transfer(target, treasury.address)

    live = _store_signed(session, target, treasury, transaction, pending_nonce)
    session.commit()
    return live


def _check_token_funds(target: _Target, treasury: str) -> None:
    """Top up the devnet treasury's gas, then raise _NotFunded unless the treasury
    has the refund amount of the token."""
    chain, token = target.chain, target.token
    _top_up_gas(chain, treasury)
    balance = token_balance(chain, token, treasury)
    if balance >= target.base_units:
        return
    raise _NotFunded(
        PayoutStatus.FAILED_INSUFFICIENT_FUNDS,
        f"The treasury {treasury} has {_units(balance, token)} but the refund is "
        f"{_units(target.base_units, token)}. Send {token.currency.upper()} to the "
        f"treasury on {chain.name}; the payout is retried.",
    )


def _unsigned_transfer(target: _Target, treasury: str) -> tuple[dict[str, Any], int]:
    """Build the EIP-1559 token transfer without its nonce, and return it with the
    node's pending nonce of the treasury. Raises _NotFunded when the treasury cannot
    pay the gas.

    The max fee is twice the latest base fee plus the priority fee, as in payment
    preparations: the base fee rises at most 12.5% per block, so it stays valid
    through about six full blocks.
    """
    chain, token = target.chain, target.token
    calldata = transfer_calldata(target.recipient, target.base_units)
    with node_errors(chain):
        w3 = chain.web3
        priority_fee = int(w3.eth.max_priority_fee)
        max_fee = 2 * int(w3.eth.get_block("latest")["baseFeePerGas"]) + priority_fee
        gas = _estimate_gas(chain, token, treasury, calldata)
        native = int(w3.eth.get_balance(to_checksum_address(treasury)))
        pending = int(
            w3.eth.get_transaction_count(to_checksum_address(treasury), "pending")
        )

    if native < gas * max_fee:
        raise _NotFunded(
            PayoutStatus.FAILED_INSUFFICIENT_GAS,
            f"The treasury {treasury} has {native} wei but the transfer may cost up "
            f"to {gas * max_fee} wei of gas. Send the native coin of {chain.name} to "
            "the treasury; the payout is retried.",
        )
    transaction = {
        "type": 2,
        "chainId": chain.chain_id,
        "maxPriorityFeePerGas": priority_fee,
        "maxFeePerGas": max_fee,
        "gas": gas,
        "to": token.address,
        "value": 0,
        "data": calldata,
    }
    return transaction, pending


def _top_up_gas(chain: Chain, address: str) -> None:
    try:
        chain.ensure_gas(address)
    except DevnetError as exc:
        raise ChainUnavailable(chain.name, exc.__class__.__name__) from exc


def _estimate_gas(chain: Chain, token: Token, sender: str, calldata: bytes) -> int:
    try:
        estimate = chain.web3.eth.estimate_gas(
            {"from": sender, "to": token.address, "data": calldata}
        )
    except ContractLogicError:
        return TRANSFER_GAS_FALLBACK
    return int(estimate) * (100 + GAS_MARGIN_PERCENT) // 100


def _store_signed(
    session: Session,
    target: _Target,
    treasury: LocalAccount,
    transaction: dict[str, Any],
    pending_nonce: int,
) -> _Live | None:
    """Lock the refund, allocate a nonce, sign and store the transfer (not committed).

    Returns the refund's live transaction, which is another process's when one was
    stored meanwhile, or None when the refund no longer needs a payout.
    """
    refund = _lock_order_and_refund(session, target.refund_id)
    if refund is None or refund.status != RefundStatus.ACCEPTED:
        return None
    existing = _live_of(session, refund.id)
    if existing is not None:
        return existing
    chain = target.chain
    nonce = allocate_nonce(session, chain.name, treasury.address, pending_nonce)
    signed = treasury.sign_transaction({**transaction, "nonce": nonce})
    tx_hash = "0x" + bytes(signed.hash).hex()
    earlier = session.scalar(
        select(func.count()).select_from(Payout).where(Payout.refund_id == refund.id)
    )
    now = utcnow()
    session.add(
        Payout(
            refund_id=refund.id,
            attempt=(earlier or 0) + 1,
            chain=chain.name,
            currency=target.token.currency,
            token_address=target.token.address,
            amount=target.amount,
            base_units=str(target.base_units),
            from_address=treasury.address,
            to_address=target.recipient,
            nonce=nonce,
            tx_hash=tx_hash,
            raw_transaction=bytes(signed.raw_transaction),
            status=TransactionState.SIGNED,
            created_at=now,
            updated_at=now,
        )
    )
    refund.payout_status = PayoutStatus.SUBMITTED
    refund.payout_chain = chain.name
    refund.payout_tx_id = tx_hash
    refund.payout_message = None
    refund.payout_retries = 0
    refund.updated_at = now
    services.record_refund_event(
        session,
        refund,
        RefundEvent.PAYOUT_SIGNED,
        SYSTEM_ACTOR,
        data={"txId": tx_hash, "chain": chain.name, "nonce": nonce},
    )
    session.flush()
    log.info(
        "payout_signed",
        refund_id=refund.id,
        chain=chain.name,
        tx_id=tx_hash,
        nonce=nonce,
    )
    return _live_of(session, refund.id)


def _lock_order_and_refund(session: Session, refund_id: str) -> Refund | None:
    """Lock the refund's order, then the refund, and return the refund.

    Every writer takes the order first. Recording a refund event inserts an
    OrderEvent, whose foreign key check locks the order row, so locking the refund
    alone and then recording would deadlock with a request that holds the order and
    waits for the refund.
    """
    order_id = session.scalar(select(Refund.order_id).where(Refund.id == refund_id))
    if order_id is None:
        return None
    lock_order(session, order_id)
    return services.lock_refund(session, refund_id)


def allocate_nonce(
    session: Session, chain: str, address: str, pending_nonce: int
) -> int:
    """Take the next nonce of `address` from its locked AddressNonce row.

    The row is created from the node's pending nonce when missing. The node's value
    wins when it is ahead, as after the key signed elsewhere. The caller commits, and
    the row stays locked until then.
    """
    row = _lock_nonce_row(session, chain, address)
    if row is None:
        try:
            with session.begin_nested():
                session.add(
                    AddressNonce(chain=chain, address=address, next_nonce=pending_nonce)
                )
        except IntegrityError:
            pass  # another process created it first; lock that row instead
        row = _lock_nonce_row(session, chain, address)
        assert row is not None  # noqa: S101 - inserted or found just above
    nonce = max(row.next_nonce, pending_nonce)
    row.next_nonce = nonce + 1
    return nonce


def _lock_nonce_row(session: Session, chain: str, address: str) -> AddressNonce | None:
    return session.scalar(
        select(AddressNonce)
        .where(AddressNonce.chain == chain, AddressNonce.address == address)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


# Broadcasting and confirming


def _follow(session: Session, settings: Settings, target: _Target, live: _Live) -> None:
    """Broadcast the stored transaction if the node lacks it, then wait for its
    confirmations and complete the refund. Raises RetryLater and ChainUnavailable."""
    chain = target.chain
    recheck = settings.payout_recheck_seconds
    receipt = _receipt(chain, live.tx_hash)
    if receipt is None:
        if not _is_known(chain, live.tx_hash):
            _broadcast(session, settings, target, live)
        elif live.status == TransactionState.SIGNED:
            _mark_sent(session, live, None)
            session.commit()
        receipt = _receipt(chain, live.tx_hash)
    if receipt is None:
        raise RetryLater(recheck, f"payout {live.tx_hash} is not mined yet")

    confirmations = _confirmations(chain, receipt)
    if confirmations < chain.confirmations:
        raise RetryLater(
            recheck,
            f"payout {live.tx_hash} has {confirmations} of {chain.confirmations} "
            "confirmations",
        )

    if receipt["status"] != 1:
        _bury(
            session,
            target,
            live,
            f"Transaction {live.tx_hash} reverted in block {receipt['blockNumber']} "
            "and moved no tokens.",
        )
        raise RetryLater(0, f"payout {live.tx_hash} reverted; signing a new one")

    if not _pays_recipient(target, live, receipt):
        _record_mismatch(session, target, live)
        return
    complete_payout(
        session, target.refund_id, live.payout_id, int(receipt["blockNumber"])
    )


def _broadcast(
    session: Session, settings: Settings, target: _Target, live: _Live
) -> None:
    """Send the stored raw transaction. A rejection is recorded on the Payout. When
    the transaction is proven dead, it is buried and RetryLater signs a new one."""
    chain = target.chain
    rejection = _send_raw(chain, live.raw)
    if rejection is None:
        _mark_sent(session, live, None)
        session.commit()
        log.info("payout_sent", refund_id=target.refund_id, tx_id=live.tx_hash)
        _pause_for_crash_test("sent")
        return

    if _nonce_taken(chain, live) and _receipt(chain, live.tx_hash) is None:
        _bury(
            session,
            target,
            live,
            f"Nonce {live.nonce} of {live.from_address} was used by another "
            f"transaction in a confirmed block, so {live.tx_hash} can never be mined "
            f"(the node said: {rejection}).",
        )
        raise RetryLater(0, f"payout {live.tx_hash} is dead; signing a new one")
    if _is_known(chain, live.tx_hash):
        return  # sent meanwhile, as by a retry of this job that overlapped

    _mark_sent(session, live, rejection, sent=False)
    message = (
        f"The {chain.name} node rejected payout transaction {live.tx_hash}: "
        f"{rejection}. It is sent again later."
    )
    _note(session, target.refund_id, message)
    session.commit()
    log.warning(
        "payout_rejected",
        refund_id=target.refund_id,
        tx_id=live.tx_hash,
        error=rejection,
    )
    raise RetryLater(settings.payout_recheck_seconds, message)


def _send_raw(chain: Chain, raw: bytes) -> str | None:
    """Broadcast the raw transaction. Return None when the node accepted it, else
    the node's rejection message."""
    try:
        chain.web3.eth.send_raw_transaction(raw)
    except Web3RPCError as exc:
        return str(exc)[:500]
    except (Web3Exception, requests.RequestException, OSError) as exc:
        log.warning("chain_node_failed", chain=chain.name, error=repr(exc))
        raise ChainUnavailable(chain.name, exc.__class__.__name__) from exc
    return None


def _receipt(chain: Chain, tx_hash: str) -> Any | None:
    with node_errors(chain):
        try:
            return chain.web3.eth.get_transaction_receipt(HexStr(tx_hash))
        except TransactionNotFound:
            return None


def _is_known(chain: Chain, tx_hash: str) -> bool:
    with node_errors(chain):
        try:
            chain.web3.eth.get_transaction(HexStr(tx_hash))
        except TransactionNotFound:
            return False
    return True


def _confirmations(chain: Chain, receipt: Any) -> int:
    with node_errors(chain):
        latest = int(chain.web3.eth.block_number)
    return max(0, latest - int(receipt["blockNumber"]) + 1)


def _nonce_taken(chain: Chain, live: _Live) -> bool:
    """Return whether the sender's nonce in the newest block that has the chain's
    confirmations is past the transaction's nonce."""
    with node_errors(chain):
        latest = int(chain.web3.eth.block_number)
        settled = max(0, latest - chain.confirmations + 1)
        sender = to_checksum_address(live.from_address)
        used = int(chain.web3.eth.get_transaction_count(sender, settled))
    return used > live.nonce


def _pays_recipient(target: _Target, live: _Live, receipt: Any) -> bool:
    return any(
        item.token == target.token.address
        and item.sender == live.from_address
        and item.recipient == target.recipient
        and item.amount == target.base_units
        for item in decode_transfer_logs(receipt["logs"])
    )


# Recording outcomes


def _mark_sent(
    session: Session, live: _Live, rejection: str | None, *, sent: bool = True
) -> None:
    payout = session.get_one(Payout, live.payout_id, populate_existing=True)
    now = utcnow()
    if sent and payout.status == TransactionState.SIGNED:
        payout.status = TransactionState.SENT
        payout.sent_at = now
    payout.message = rejection
    payout.updated_at = now


def _bury(session: Session, target: _Target, live: _Live, reason: str) -> None:
    """Mark the stored transaction dead (committed), so the next run signs anew."""
    refund = _lock_order_and_refund(session, target.refund_id)
    payout = session.get_one(Payout, live.payout_id, populate_existing=True)
    now = utcnow()
    payout.status = TransactionState.DEAD
    payout.message = reason
    payout.updated_at = now
    if refund is not None:
        refund.payout_status = PayoutStatus.SCHEDULED
        refund.payout_tx_id = None
        refund.payout_message = reason
        refund.updated_at = now
        services.record_refund_event(
            session,
            refund,
            RefundEvent.PAYOUT_REPLACED,
            SYSTEM_ACTOR,
            data={"txId": live.tx_hash, "nonce": live.nonce, "reason": reason},
        )
    session.commit()
    log.warning(
        "payout_transaction_dead",
        refund_id=target.refund_id,
        tx_id=live.tx_hash,
        reason=reason,
    )


def _record_mismatch(session: Session, target: _Target, live: _Live) -> None:
    message = (
        f"Transaction {live.tx_hash} was mined but has no Transfer of "
        f"{_units(target.base_units, target.token)} from {live.from_address} to "
        f"{target.recipient}. Nothing more is sent; check the transaction and the "
        "token contract."
    )
    refund = _lock_order_and_refund(session, target.refund_id)
    if refund is not None:
        refund.payout_status = PayoutStatus.FAILED_TRANSFER_MISMATCH
        refund.payout_message = message
        refund.updated_at = utcnow()
        services.record_refund_event(
            session,
            refund,
            RefundEvent.PAYOUT_FAILED,
            SYSTEM_ACTOR,
            data={"status": str(refund.payout_status), "message": message},
        )
    log.error(
        "payout_transfer_mismatch", refund_id=target.refund_id, tx_id=live.tx_hash
    )


def complete_payout(
    session: Session, refund_id: str, payout_id: str, block_number: int
) -> Refund | None:
    """Record the confirmed transfer and complete the refund (not committed).

    Locks the order, then the refund. Returns None when the refund was completed
    before, so a repeated run changes nothing.
    """
    refund = session.get(Refund, refund_id)
    if refund is None:
        return None
    order = session.scalars(
        select(Order)
        .where(Order.id == refund.order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    refund = services.lock_refund(session, refund_id)
    if refund is None or refund.status != RefundStatus.ACCEPTED:
        return None
    payout = session.get_one(Payout, payout_id, populate_existing=True)
    now = utcnow()
    payout.status = TransactionState.CONFIRMED
    payout.block_number = block_number
    payout.confirmed_at = now
    payout.updated_at = now
    refund.payout_status = PayoutStatus.CONFIRMED
    refund.payout_tx_id = payout.tx_hash
    refund.payout_chain = payout.chain
    refund.payout_message = None
    services.move_status(
        session,
        refund,
        RefundStatus.COMPLETED,
        SYSTEM_ACTOR,
        action="completed",
        data={
            "txId": payout.tx_hash,
            "chain": payout.chain,
            "amount": format_amount(refund.amount),
            "blockNumber": block_number,
        },
        now=now,
    )
    order.refunded_amount = (order.refunded_amount or Decimal("0")) + refund.amount
    order.updated_at = now
    record_event(
        session,
        order,
        "payment.refunded",
        SYSTEM_ACTOR,
        subject_id=refund.id,
        data={
            "amount": format_amount(refund.amount),
            "refunded": format_amount(order.refunded_amount),
            "currency": order.currency,
            "txId": payout.tx_hash,
        },
    )
    review.enqueue_mail(session, refund, MailKind.REFUND_COMPLETED)
    services.emit_refund_webhook(
        session, order, webhook_events.ORDERS_REFUND_COMPLETED, refund
    )
    log.info(
        "payout_confirmed",
        refund_id=refund.id,
        order_id=order.id,
        tx_id=payout.tx_hash,
        block=block_number,
    )
    return refund


def _retry_unfunded(
    session: Session, settings: Settings, refund_id: str, problem: _NotFunded
) -> NoReturn:
    """Show the problem on the refund, log it and raise RetryLater with backoff."""
    refund = _lock_order_and_refund(session, refund_id)
    retries = 1
    if refund is not None and refund.status == RefundStatus.ACCEPTED:
        if refund.payout_status != problem.status:
            services.record_refund_event(
                session,
                refund,
                RefundEvent.PAYOUT_FAILED,
                SYSTEM_ACTOR,
                data={"status": str(problem.status), "message": problem.message},
            )
        refund.payout_status = problem.status
        refund.payout_message = problem.message
        refund.payout_retries = (refund.payout_retries or 0) + 1
        refund.updated_at = utcnow()
        retries = refund.payout_retries
    session.commit()
    delay = min(
        settings.payout_retry_max_seconds,
        settings.payout_retry_seconds * 2 ** min(retries - 1, 30),
    )
    log.error(
        "payout_not_funded",
        refund_id=refund_id,
        status=str(problem.status),
        error=problem.message,
        retries=retries,
        retry_in_seconds=delay,
    )
    raise RetryLater(delay, problem.message)


def _note(session: Session, refund_id: str, message: str) -> None:
    refund = services.lock_refund(session, refund_id)
    if refund is not None and refund.status == RefundStatus.ACCEPTED:
        refund.payout_message = message


def _units(base_units: int, token: Token) -> str:
    amount = Decimal(base_units).scaleb(-token.decimals)
    return f"{format_amount(amount)} {token.currency.upper()}"


def _pause_for_crash_test(stage: str) -> None:
    if os.environ.get(CRASH_TEST_PAUSE_ENV) == stage:
        log.warning("payout_paused_for_crash_test", stage=stage)
        time.sleep(3600)
