"""Payment checks read the receipt's Transfer logs and count confirmations."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest
from eth_account import Account
from tests.conftest import LiveServer, free_port
from tests.payments.helpers import (
    USDC,
    approve,
    deploy_relay,
    deploy_token,
    devnet_chain,
    devnet_of,
    funded_account,
    relay_payment,
    transfer,
)

from orderdesk.payments.chains import Chain, load_chains_file
from orderdesk.payments.exceptions import ChainUnavailable
from orderdesk.payments.verification import FailureCode, Outcome, check_payment
from orderdesk.runtime import Runtime

TOTAL = 5 * USDC


@pytest.fixture
def chain(runtime: Runtime) -> Chain:
    return devnet_chain(runtime)


@pytest.fixture
def treasury() -> str:
    return Account.create().address


def test_exact_payment_confirmed(chain: Chain, treasury: str) -> None:
    payer = funded_account(chain, "5")
    tx_id = transfer(chain, payer, treasury, TOTAL)
    result = check_payment(
        chain, chain.tokens["usdc"], tx_id, treasury, TOTAL, payer.address
    )
    assert result.outcome == Outcome.CONFIRMED
    assert result.payer == payer.address
    assert result.received_base_units == TOTAL
    assert result.received_amount(chain.tokens["usdc"]) == Decimal("5")
    assert result.block_number == chain.web3.eth.block_number
    assert result.code is None


def test_overpayment_records_full_amount(chain: Chain, treasury: str) -> None:
    payer = funded_account(chain, "9")
    tx_id = transfer(chain, payer, treasury, 7_250_000)
    result = check_payment(chain, chain.tokens["usdc"], tx_id, treasury.lower(), TOTAL)
    assert result.outcome == Outcome.CONFIRMED
    assert result.received_base_units == 7_250_000


def test_underpayment_is_insufficient(chain: Chain, treasury: str) -> None:
    payer = funded_account(chain, "5")
    tx_id = transfer(chain, payer, treasury, 4_990_000)
    result = check_payment(chain, chain.tokens["usdc"], tx_id, treasury, TOTAL)
    assert result.outcome == Outcome.FAILED
    assert result.code == FailureCode.INSUFFICIENT_FUNDS
    assert result.message is not None
    assert "paid 4.99 USDC" in result.message
    assert "order total is 5.00 USDC" in result.message


def test_wrong_recipient(chain: Chain, treasury: str) -> None:
    payer = funded_account(chain, "5")
    elsewhere = Account.create().address
    tx_id = transfer(chain, payer, elsewhere, TOTAL)
    result = check_payment(chain, chain.tokens["usdc"], tx_id, treasury, TOTAL)
    assert result.outcome == Outcome.FAILED
    assert result.code == FailureCode.WRONG_RECIPIENT
    assert elsewhere in (result.message or "")
    assert treasury in (result.message or "")


def test_wrong_token(chain: Chain, treasury: str) -> None:
    owner = funded_account(chain, "1")
    other_token = deploy_token(chain, owner, 100 * USDC)
    tx_id = transfer(chain, owner, treasury, TOTAL, token=other_token)
    result = check_payment(chain, chain.tokens["usdc"], tx_id, treasury, TOTAL)
    assert result.outcome == Outcome.FAILED
    assert result.code == FailureCode.WRONG_TOKEN
    assert other_token in (result.message or "")


def test_wrong_payer(chain: Chain, treasury: str) -> None:
    payer = funded_account(chain, "5")
    expected = Account.create().address
    tx_id = transfer(chain, payer, treasury, TOTAL)
    result = check_payment(
        chain, chain.tokens["usdc"], tx_id, treasury, TOTAL, expected.lower()
    )
    assert result.outcome == Outcome.FAILED
    assert result.code == FailureCode.WRONG_PAYER
    assert payer.address in (result.message or "")


def test_unknown_tx_id(chain: Chain, treasury: str) -> None:
    result = check_payment(
        chain, chain.tokens["usdc"], "0x" + "12" * 32, treasury, TOTAL
    )
    assert result.outcome == Outcome.FAILED
    assert result.code == FailureCode.TX_ID_NOT_FOUND


def test_reverted_tx_failed(chain: Chain, treasury: str) -> None:
    payer = funded_account(chain, "1")
    tx_id = transfer(chain, payer, treasury, TOTAL)
    result = check_payment(chain, chain.tokens["usdc"], tx_id, treasury, TOTAL)
    assert result.outcome == Outcome.FAILED
    assert result.code == FailureCode.TX_FAILED


def test_pending_until_confirmations(chain: Chain, treasury: str) -> None:
    strict = dataclasses.replace(chain, confirmations=3)
    payer = funded_account(chain, "5")
    tx_id = transfer(chain, payer, treasury, TOTAL)
    first = check_payment(strict, chain.tokens["usdc"], tx_id, treasury, TOTAL)
    assert first.outcome == Outcome.PENDING
    assert first.confirmations == 1
    assert first.required_confirmations == 3
    assert first.payer == payer.address
    devnet_of(chain).mine()
    assert (
        check_payment(strict, chain.tokens["usdc"], tx_id, treasury, TOTAL).outcome
        == Outcome.PENDING
    )
    devnet_of(chain).mine()
    final = check_payment(strict, chain.tokens["usdc"], tx_id, treasury, TOTAL)
    assert final.outcome == Outcome.CONFIRMED
    assert final.confirmations == 3


def test_not_yet_mined_is_pending(chain: Chain, treasury: str) -> None:
    payer = funded_account(chain, "5")
    devnet_of(chain).set_automine(False)
    tx_id = transfer(chain, payer, treasury, TOTAL)
    result = check_payment(chain, chain.tokens["usdc"], tx_id, treasury, TOTAL)
    assert result.outcome == Outcome.PENDING
    assert result.block_number is None
    devnet_of(chain).mine()
    assert (
        check_payment(chain, chain.tokens["usdc"], tx_id, treasury, TOTAL).outcome
        == Outcome.CONFIRMED
    )


def test_reverted_chain_drops_payment(chain: Chain, treasury: str) -> None:
    strict = dataclasses.replace(chain, confirmations=2)
    payer = funded_account(chain, "5")
    snapshot = devnet_of(chain).snapshot()
    tx_id = transfer(chain, payer, treasury, TOTAL)
    assert (
        check_payment(strict, chain.tokens["usdc"], tx_id, treasury, TOTAL).outcome
        == Outcome.PENDING
    )
    assert devnet_of(chain).revert(snapshot)
    dropped = check_payment(
        strict, chain.tokens["usdc"], tx_id, treasury, TOTAL, seen_before=True
    )
    assert dropped.outcome == Outcome.DROPPED
    assert "dropped out" in (dropped.message or "")
    first_look = check_payment(strict, chain.tokens["usdc"], tx_id, treasury, TOTAL)
    assert first_look.code == FailureCode.TX_ID_NOT_FOUND


def test_largest_sender_counts(chain: Chain, treasury: str) -> None:
    """A contract moves tokens of two holders in one transaction: only the larger
    holder's transfers count, and that holder is the payer."""
    small, large = funded_account(chain, "5"), funded_account(chain, "5")
    relay = deploy_relay(chain, small)
    approve(chain, small, relay, 2 * USDC)
    approve(chain, large, relay, 4 * USDC)
    holders = (small.address, large.address)
    tx_id = relay_payment(chain, relay, small, holders, treasury, (2 * USDC, 4 * USDC))
    token = chain.tokens["usdc"]

    result = check_payment(chain, token, tx_id, treasury, 4 * USDC)
    assert result.outcome == Outcome.CONFIRMED
    assert result.payer == large.address
    assert result.received_base_units == 4 * USDC
    named = check_payment(chain, token, tx_id, treasury, 4 * USDC, small.address)
    assert named.code == FailureCode.INSUFFICIENT_FUNDS
    assert "paid 2.00 USDC" in (named.message or "")
    too_much = check_payment(chain, token, tx_id, treasury, 6 * USDC)
    assert too_much.code == FailureCode.INSUFFICIENT_FUNDS


def test_http_chain_from_file(
    runtime: Runtime, live_server: LiveServer, tmp_path: Path, treasury: str
) -> None:
    chain = devnet_chain(runtime)
    token = chain.tokens["usdc"]
    chains_file = tmp_path / "chains.toml"
    chains_file.write_text(
        "[[chains]]\n"
        'name = "local"\n'
        f"chain_id = {chain.chain_id}\n"
        f'rpc_url = "{live_server.url}/devnet/rpc"\n'
        "confirmations = 1\n"
        "[chains.tokens.usdc]\n"
        f'address = "{token.address.lower()}"\n'
        "decimals = 6\n"
    )
    (remote,) = load_chains_file(chains_file)
    payer = funded_account(chain, "5")
    tx_id = transfer(remote, payer, treasury, TOTAL)
    result = check_payment(
        remote, remote.tokens["usdc"], tx_id, treasury, TOTAL, payer.address
    )
    assert result.outcome == Outcome.CONFIRMED
    assert remote.ensure_gas(treasury) is None


def test_unreachable_node_raises(tmp_path: Path, treasury: str) -> None:
    chains_file = tmp_path / "chains.toml"
    chains_file.write_text(
        '[[chains]]\nname = "down"\nchain_id = 5\n'
        f'rpc_url = "http://127.0.0.1:{free_port()}"\n'
        '[chains.tokens.usdc]\naddress = "0x' + "11" * 20 + '"\ndecimals = 6\n'
    )
    (down,) = load_chains_file(chains_file)
    with pytest.raises(ChainUnavailable) as raised:
        check_payment(down, down.tokens["usdc"], "0x" + "12" * 32, treasury, TOTAL)
    assert raised.value.status_code == 503
    assert raised.value.code == "chain_unavailable"
