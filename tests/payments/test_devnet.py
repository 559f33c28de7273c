"""The embedded devnet: real chain rules, the journal and its replay after a restart."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import func, select
from tests.payments.helpers import (
    USDC,
    devnet_chain,
    devnet_of,
    funded_account,
    receipt,
    sign,
    transfer,
)
from web3.exceptions import TransactionNotFound

from orderdesk.config import Settings
from orderdesk.payments.devnet import FAUCET_GAS_WEI
from orderdesk.payments.devnet_state import (
    DEVNET_CHAIN_ID,
    InvalidDevnetRequest,
    TransactionRejected,
)
from orderdesk.payments.models import DevnetJournalEntry
from orderdesk.payments.preparation import token_balance
from orderdesk.runtime import Runtime


def restart(settings: Settings) -> Runtime:
    """Start a second runtime on the same database, as a restarted service would."""
    runtime = Runtime.build(settings)
    runtime.start()
    return runtime


def test_token_address_is_fixed(
    runtime: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> None:
    chain = devnet_chain(runtime)
    other = Settings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('other') / 'other.db'}",
        data_dir=tmp_path_factory.mktemp("other-data"),
        treasury_secret="x" * 40,
    )
    second = restart(other)
    try:
        assert (
            devnet_chain(second).tokens["usdc"].address == chain.tokens["usdc"].address
        )
        assert chain.chain_id == DEVNET_CHAIN_ID
        assert chain.tokens["usdc"].decimals == 6
    finally:
        second.close()


def test_faucet_mints_and_sends_gas(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    account = Account.create()
    tx_ids = devnet_of(chain).fund(account.address, Decimal("12.345678"))
    assert len(tx_ids) == 2
    assert all(receipt(chain, tx_id)["status"] == 1 for tx_id in tx_ids)
    assert token_balance(chain, chain.tokens["usdc"], account.address) == 12_345_678
    assert chain.web3.eth.get_balance(account.address) == FAUCET_GAS_WEI


@pytest.mark.parametrize("amount", ["0", "-1", "1000000.000001", "0.0000001"])
def test_faucet_rejects_bad_amounts(runtime: Runtime, amount: str) -> None:
    devnet = devnet_of(devnet_chain(runtime))
    entries_before = _journal_size(runtime)
    with pytest.raises(InvalidDevnetRequest):
        devnet.fund(Account.create().address, Decimal(amount))
    assert _journal_size(runtime) == entries_before


def test_transfer_charges_gas_and_logs(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    payer = funded_account(chain, "10")
    recipient = Account.create().address
    tx_id = transfer(chain, payer, recipient, 3 * USDC)
    mined = receipt(chain, tx_id)
    assert mined["status"] == 1
    assert len(mined["logs"]) == 1
    assert mined["logs"][0]["address"] == chain.tokens["usdc"].address
    block = chain.web3.eth.get_block(mined["blockNumber"])
    assert block["baseFeePerGas"] > 0
    assert mined["effectiveGasPrice"] == block["baseFeePerGas"] + 10**9
    spent = mined["gasUsed"] * mined["effectiveGasPrice"]
    assert chain.web3.eth.get_balance(payer.address) == FAUCET_GAS_WEI - spent
    assert token_balance(chain, chain.tokens["usdc"], recipient) == 3 * USDC


def test_reverted_transfer_has_status_zero(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    payer = funded_account(chain, "1")
    tx_id = transfer(chain, payer, Account.create().address, 5 * USDC)
    mined = receipt(chain, tx_id)
    assert mined["status"] == 0
    assert mined["logs"] == []
    assert chain.web3.eth.get_balance(payer.address) < FAUCET_GAS_WEI


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"nonce": 7}, "nonce too high"),
        ({"chainId": 1}, "chain"),
        ({"maxFeePerGas": 1, "maxPriorityFeePerGas": 1}, "base fee"),
        ({"gas": 40_000_000}, "gas limit"),
        ({"gas": 20_000}, "intrinsic gas too low"),
        ({"value": 10**24}, "insufficient funds"),
    ],
)
def test_invalid_transactions_are_rejected(
    runtime: Runtime, change: dict[str, int], phrase: str
) -> None:
    chain = devnet_chain(runtime)
    payer = funded_account(chain, "1")
    entries_before = _journal_size(runtime)
    raw = sign(chain, payer, to=Account.create().address, **change)
    with pytest.raises(TransactionRejected) as raised:
        devnet_of(chain).send_raw_transaction(raw)
    assert phrase in str(raised.value)
    assert _journal_size(runtime) == entries_before


def test_replayed_nonce_is_rejected(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    payer = funded_account(chain, "1")
    raw = sign(chain, payer, to=Account.create().address)
    devnet_of(chain).send_raw_transaction(raw)
    with pytest.raises(TransactionRejected, match="already known"):
        devnet_of(chain).send_raw_transaction(raw)
    second = sign(chain, payer, to=Account.create().address, nonce=0)
    with pytest.raises(TransactionRejected, match="nonce too low"):
        devnet_of(chain).send_raw_transaction(second)


def test_automine_off_keeps_pending(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    devnet = devnet_of(chain)
    payer = funded_account(chain, "10")
    devnet.set_automine(False)
    head = chain.web3.eth.block_number
    first = transfer(chain, payer, Account.create().address, USDC)
    second = transfer(chain, payer, Account.create().address, USDC)
    assert chain.web3.eth.block_number == head
    assert chain.web3.eth.get_transaction(first)["blockNumber"] is None
    assert chain.web3.eth.get_transaction_count(payer.address, "pending") == 2
    assert chain.web3.eth.get_transaction_count(payer.address, "latest") == 0
    devnet.mine()
    assert receipt(chain, first)["blockNumber"] == head + 1
    assert receipt(chain, second)["blockNumber"] == head + 1


def test_snapshot_revert_drops_blocks(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    devnet = devnet_of(chain)
    payer = funded_account(chain, "10")
    snapshot = devnet.snapshot()
    head = chain.web3.eth.block_number
    tx_id = transfer(chain, payer, Account.create().address, USDC)
    assert receipt(chain, tx_id)["status"] == 1
    assert devnet.revert(snapshot) is True
    assert chain.web3.eth.block_number == head
    with pytest.raises(TransactionNotFound):
        chain.web3.eth.get_transaction_receipt(tx_id)
    with pytest.raises(TransactionNotFound):
        chain.web3.eth.get_transaction(tx_id)
    assert devnet.revert(snapshot) is False


def test_increase_time_moves_timestamps(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    devnet = devnet_of(chain)
    before = chain.web3.eth.get_block("latest")["timestamp"]
    assert devnet.increase_time(3600) == 3600
    devnet.mine()
    assert chain.web3.eth.get_block("latest")["timestamp"] >= before + 3600
    with pytest.raises(InvalidDevnetRequest):
        devnet.increase_time(-5)


def test_ensure_gas_tops_up_once(runtime: Runtime) -> None:
    chain = devnet_chain(runtime)
    address = Account.create().address
    tx_id = chain.ensure_gas(address)
    assert tx_id is not None
    assert receipt(chain, tx_id)["status"] == 1
    assert chain.web3.eth.get_balance(address) == FAUCET_GAS_WEI
    assert chain.ensure_gas(address) is None


def test_state_survives_restart(runtime: Runtime, settings: Settings) -> None:
    chain = devnet_chain(runtime)
    devnet = devnet_of(chain)
    payer = funded_account(chain, "50")
    treasury = Account.create().address
    paid = transfer(chain, payer, treasury, 20 * USDC)
    snapshot = devnet.snapshot()
    dropped = transfer(chain, payer, treasury, 1 * USDC)
    devnet.revert(snapshot)
    devnet.increase_time(120)
    devnet.set_automine(False)
    queued = transfer(chain, payer, treasury, 2 * USDC)
    before = {
        "head": chain.web3.eth.get_block("latest"),
        "receipt": receipt(chain, paid),
        "balance": chain.web3.eth.get_balance(payer.address),
        "nonce": chain.web3.eth.get_transaction_count(payer.address, "pending"),
    }

    runtime.close()
    second = restart(settings)
    try:
        again = devnet_chain(second)
        assert again.web3.eth.get_block("latest") == before["head"]
        assert receipt(again, paid) == before["receipt"]
        assert again.web3.eth.get_balance(payer.address) == before["balance"]
        assert (
            again.web3.eth.get_transaction_count(payer.address, "pending")
            == before["nonce"]
        )
        with pytest.raises(TransactionNotFound):
            again.web3.eth.get_transaction(dropped)
        # Auto-mining stayed off and the queued transfer is still waiting.
        assert again.web3.eth.get_transaction(queued)["blockNumber"] is None
        devnet_of(again).set_automine(True)
        assert receipt(again, queued)["status"] == 1
        # New transactions continue from the replayed nonces.
        later = transfer(again, payer, treasury, 3 * USDC)
        assert receipt(again, later)["status"] == 1
        assert token_balance(again, again.tokens["usdc"], treasury) == 25 * USDC
    finally:
        second.close()


def test_second_process_sees_new_steps(runtime: Runtime, settings: Settings) -> None:
    chain = devnet_chain(runtime)
    second = restart(settings)
    try:
        other = devnet_chain(second)
        payer = funded_account(chain, "5")
        # The second runtime catches up from the journal before each read.
        assert token_balance(other, other.tokens["usdc"], payer.address) == 5 * USDC
        tx_id = transfer(other, payer, Account.create().address, USDC)
        assert receipt(chain, tx_id)["status"] == 1
        assert chain.web3.eth.block_number == other.web3.eth.block_number
    finally:
        second.close()


def _journal_size(runtime: Runtime) -> int:
    with runtime.session_factory() as session:
        return int(
            session.scalar(select(func.count()).select_from(DevnetJournalEntry)) or 0
        )


def test_concurrent_sends_replay_alike(runtime: Runtime, settings: Settings) -> None:
    chain = devnet_chain(runtime)
    payers = [funded_account(chain, "10") for _ in range(4)]
    treasury = Account.create().address
    sent: list[str] = []
    errors: list[BaseException] = []

    def pay(payer: LocalAccount) -> None:
        try:
            for nonce in range(5):
                sent.append(transfer(chain, payer, treasury, USDC, nonce=nonce))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=pay, args=(payer,)) for payer in payers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(sent) == 20
    assert all(receipt(chain, tx_id)["status"] == 1 for tx_id in sent)
    assert token_balance(chain, chain.tokens["usdc"], treasury) == 20 * USDC
    head = chain.web3.eth.get_block("latest")
    runtime.close()
    second = restart(settings)
    try:
        assert devnet_chain(second).web3.eth.get_block("latest") == head
    finally:
        second.close()
