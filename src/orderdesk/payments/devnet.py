"""The embedded devnet: an in-process EVM whose history is journaled in the database.

The chain is eth-tester's py-evm backend (see devnet_state). Every state-changing
step (a signed transaction, a mined block, a clock jump, a snapshot or revert, the
auto-mine switch) is written to the `devnet_journal` table and committed before the
call returns. At start-up, and whenever another process has added steps, the chain
replays the journal in id order, so it survives restarts and every process on one
database replays to the same chain. Writers are serialized by a database lock (BEGIN
IMMEDIATE on SQLite, a table lock on PostgreSQL) taken before the in-process lock, so
two processes never append steps that were computed on different chain states.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import structlog
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from orderdesk.payments.amounts import to_base_units
from orderdesk.payments.contract import CompiledContract
from orderdesk.payments.devnet_state import (
    DEVNET_CHAIN_ID,
    DEVNET_SEED,
    MAX_BLOCKS_PER_MINE,
    ChainState,
    DevnetError,
    InvalidDevnetRequest,
    TransactionRejected,
    base_fee,
    contract_address,
)
from orderdesk.payments.erc20 import mint_calldata
from orderdesk.payments.models import DevnetJournalEntry

log = structlog.get_logger(__name__)

DEVNET_CURRENCY = "usdc"
DEVNET_TOKEN_DECIMALS = 6
DEPLOYER_KEY = keccak(DEVNET_SEED + b"/deployer")

PRIORITY_FEE_WEI = 10**9
FAUCET_GAS_WEI = 10**18
GAS_TOP_UP_BELOW_WEI = 10**17
FAUCET_MAX_USDC = Decimal(1_000_000)
MINT_GAS = 150_000
DEPLOY_GAS = 3_000_000
TOKEN_NAME = "USD Coin (devnet)"  # noqa: S105 - a token name, not a password
TOKEN_SYMBOL = "USDC"  # noqa: S105 - a token symbol, not a password


class DevnetUnavailable(DevnetError):
    """The journal could not be read or written, so the chain state is unknown."""


class DevnetReplayError(DevnetError):
    """A journaled step no longer applies, so the journal and the chain disagree."""


@dataclass
class _Step:
    kind: str
    raw: bytes | None = None
    value: int | None = None
    timestamp: int | None = None


class Devnet:
    """The in-process chain. Every method is thread-safe."""

    def __init__(
        self,
        engine: Engine,
        token: CompiledContract,
        *,
        chain_id: int = DEVNET_CHAIN_ID,
    ) -> None:
        self.chain_id = chain_id
        self.deployer = Account.from_key(DEPLOYER_KEY)
        self.token_address = contract_address(self.deployer.address, 0)
        self.token_decimals = DEVNET_TOKEN_DECIMALS
        self._token_contract = token
        self._engine = engine
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)
        self._lock = threading.RLock()
        self._closed = False
        self._reset_memory()

    # Lifecycle

    def start(self) -> None:
        """Replay the journal, then deploy the token if the journal was empty."""
        started = time.monotonic()
        with self.reading() as state:
            deployed = bool(state.code_at(self.token_address))
            replayed = self._last_id
        if not deployed:
            with self._writing() as steps:
                self._bootstrap(steps)
        log.info(
            "devnet_started",
            chain_id=self.chain_id,
            token=self.token_address,
            journal_last_id=replayed,
            block=self.block_number,
            seconds=round(time.monotonic() - started, 3),
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    # Reading

    @contextmanager
    def reading(self) -> Iterator[ChainState]:
        """Hold the chain, caught up with the journal, for a consistent read."""
        with self._lock:
            try:
                with self._sessions() as session:
                    session.connection(execution_options={"read_only": True})
                    self._refresh(session)
            except SQLAlchemyError as exc:
                raise DevnetUnavailable(
                    f"The devnet journal could not be read: {exc.__class__.__name__}"
                ) from exc
            yield self._state

    @property
    def automine(self) -> bool:
        return self._state.automine

    @property
    def block_number(self) -> int:
        with self._lock:
            return self._state.head_number

    # Writing

    def send_raw_transaction(self, raw: bytes) -> bytes:
        """Add a signed transaction to the pending block (mined at once with
        auto-mine) and return its hash. Raises TransactionRejected."""
        with self._writing() as steps:
            return self._submit(raw, steps)

    def mine(self, blocks: int = 1, timestamp: int | None = None) -> list[bytes]:
        """Mine `blocks` blocks; the first gets `timestamp` when one is given."""
        if not 1 <= blocks <= MAX_BLOCKS_PER_MINE:
            raise InvalidDevnetRequest(
                f"Cannot mine {blocks} blocks at once; ask for 1 to "
                f"{MAX_BLOCKS_PER_MINE}."
            )
        with self._writing() as steps:
            if timestamp is not None:
                self._state.check_mine_timestamp(timestamp)
            hashes = [self._mine_step(steps, timestamp)]
            for _ in range(blocks - 1):
                hashes.append(self._mine_step(steps))
            return hashes

    def snapshot(self) -> int:
        with self._writing() as steps:
            snapshot_id = self._state.next_snapshot_id
            self._state.apply_snapshot(snapshot_id)
            steps.append(_Step("snapshot", value=snapshot_id))
            return snapshot_id

    def revert(self, snapshot_id: int) -> bool:
        """Go back to a snapshot, dropping it and later ones; False if unknown."""
        with self._writing() as steps:
            if not self._state.apply_revert(snapshot_id):
                return False
            steps.append(_Step("revert", value=snapshot_id))
            return True

    def increase_time(self, seconds: int) -> int:
        """Move the clock of future blocks forward; return the total offset."""
        if seconds < 0:
            raise InvalidDevnetRequest(
                f"Cannot move the clock back by {-seconds} seconds; the devnet only "
                "moves forward. Use evm_snapshot and evm_revert to go back."
            )
        with self._writing() as steps:
            self._state.time_offset += seconds
            steps.append(_Step("time", value=self._state.time_offset))
            return self._state.time_offset

    def set_automine(self, enabled: bool) -> None:
        """Switch auto-mining; switching it on mines any pending transactions."""
        with self._writing() as steps:
            if enabled == self._state.automine:
                return
            self._state.automine = enabled
            steps.append(_Step("automine", value=int(enabled)))
            if enabled and self._state.pending_block().transactions:
                self._mine_step(steps)

    def fund(self, address: str, usdc: Decimal) -> list[str]:
        """Mint test USDC to `address` and send it FAUCET_GAS_WEI of gas money.

        Returns the two transaction hashes (0x-hex).
        """
        if not Decimal(0) < usdc <= FAUCET_MAX_USDC:
            raise InvalidDevnetRequest(
                f"The faucet sends more than 0 and at most {FAUCET_MAX_USDC} USDC; "
                f"{usdc} is outside that range."
            )
        try:
            units = to_base_units(usdc, self.token_decimals)
        except ValueError as exc:
            raise InvalidDevnetRequest(
                f"{usdc} USDC has more than {self.token_decimals} decimal places; "
                "round it."
            ) from exc
        address = to_checksum_address(address)
        with self._writing() as steps:
            mint = self._sign_deployer(
                self.token_address, data=mint_calldata(address, units), gas=MINT_GAS
            )
            hashes = [self._submit(mint, steps)]
            gas_money = self._sign_deployer(address, value=FAUCET_GAS_WEI)
            hashes.append(self._submit(gas_money, steps))
        log.info("devnet_faucet_funded", address=address, usdc=str(usdc))
        return ["0x" + tx_hash.hex() for tx_hash in hashes]

    def ensure_gas(
        self, address: str, minimum_wei: int = GAS_TOP_UP_BELOW_WEI
    ) -> str | None:
        """Send FAUCET_GAS_WEI to `address` when its balance is below `minimum_wei`.

        Returns the transaction hash, or None when the balance was enough. Like every
        write, this takes the database's write lock in its own transaction: on SQLite,
        call it with no write transaction open in the calling thread, or it waits for
        that transaction's lock until the busy timeout.
        """
        address = to_checksum_address(address)
        with self.reading() as state:
            if state.balance(address, "pending") >= minimum_wei:
                return None
        with self._writing() as steps:
            if self._state.balance(address, "pending") >= minimum_wei:
                return None
            gas_money = self._sign_deployer(address, value=FAUCET_GAS_WEI)
            tx_hash = self._submit(gas_money, steps)
        log.info("devnet_gas_sent", address=address, wei=FAUCET_GAS_WEI)
        return "0x" + tx_hash.hex()

    # Journal

    def _reset_memory(self) -> None:
        self._state = ChainState(self.chain_id, self.deployer.address)
        self._last_id = 0
        self._stale = False

    @contextmanager
    def _writing(self) -> Iterator[list[_Step]]:
        """Run state changes under the journal lock and commit them as steps.

        The database lock comes first and the in-process lock second, so no thread
        waits for the database lock while it has the in-process lock.
        """
        session = self._sessions()
        try:
            self._lock_journal(session)
            with self._lock:
                self._refresh(session)
                steps: list[_Step] = []
                try:
                    yield steps
                except TransactionRejected:
                    # A rejection changes nothing unless earlier steps of this call
                    # already ran on the in-memory chain.
                    self._stale = self._stale or bool(steps)
                    raise
                except BaseException:
                    self._stale = True
                    raise
                if steps:
                    self._commit_steps(session, steps)
        except SQLAlchemyError as exc:
            raise DevnetUnavailable(
                f"The devnet journal could not be written: {exc.__class__.__name__}"
            ) from exc
        finally:
            session.close()

    def _lock_journal(self, session: Session) -> None:
        connection = session.connection()  # SQLite: BEGIN IMMEDIATE takes the lock
        if connection.dialect.name == "postgresql":
            # EXCLUSIVE blocks other writers of the journal but not its readers.
            session.execute(text("LOCK TABLE devnet_journal IN EXCLUSIVE MODE"))

    def _commit_steps(self, session: Session, steps: list[_Step]) -> None:
        entries = [
            DevnetJournalEntry(
                kind=step.kind, raw=step.raw, value=step.value, timestamp=step.timestamp
            )
            for step in steps
        ]
        try:
            session.add_all(entries)
            session.flush()
            # Read the id before the commit: loading it afterwards would begin a new
            # transaction, and so wait for the database lock under the chain lock.
            last_id = entries[-1].id
            session.commit()
        except BaseException:
            # The chain in memory is ahead of the journal: rebuild it on next use.
            self._stale = True
            raise
        self._last_id = last_id

    # TODO: no checkpoints yet, so start-up replays the whole journal from genesis.
    # That took about 25 ms per transaction (2-core machine, coincurve installed).
    def _refresh(self, session: Session) -> None:
        if self._stale:
            log.warning("devnet_rebuilding", after_entry=self._last_id)
            self._reset_memory()
        query = (
            select(DevnetJournalEntry)
            .where(DevnetJournalEntry.id > self._last_id)
            .order_by(DevnetJournalEntry.id)
        )
        for entry in session.scalars(query):
            try:
                self._replay(entry)
            except DevnetError as exc:
                self._stale = True
                raise DevnetReplayError(
                    f"Devnet journal entry {entry.id} ({entry.kind}) does not apply: "
                    f"{exc}. The journal was written by an incompatible devnet; "
                    "delete the rows of the devnet_journal table to start a new chain."
                ) from exc
            self._last_id = entry.id

    def _replay(self, entry: DevnetJournalEntry) -> None:
        state = self._state
        if entry.kind == "tx":
            assert entry.raw is not None and entry.timestamp is not None  # noqa: S101
            state.apply_tx(entry.raw, entry.timestamp)
        elif entry.kind == "mine":
            assert entry.timestamp is not None  # noqa: S101
            state.apply_mine(entry.timestamp)
        elif entry.kind == "time":
            state.time_offset = int(entry.value or 0)
        elif entry.kind == "snapshot":
            state.apply_snapshot(int(entry.value or 0))
        elif entry.kind == "revert":
            if not state.apply_revert(int(entry.value or 0)):
                raise DevnetError(f"snapshot {entry.value} is unknown")
        elif entry.kind == "automine":
            state.automine = bool(entry.value)
        else:
            raise DevnetError(f"unknown journal entry kind {entry.kind!r}")

    # Live steps: apply to the chain, then record what a replay needs.

    def _submit(self, raw: bytes, steps: list[_Step]) -> bytes:
        timestamp = self._state.next_timestamp()
        tx_hash = self._state.apply_tx(raw, timestamp)
        steps.append(_Step("tx", raw=raw, timestamp=timestamp))
        if self._state.automine:
            self._mine_step(steps)
        return tx_hash

    def _mine_step(self, steps: list[_Step], timestamp: int | None = None) -> bytes:
        if timestamp is None:
            timestamp = self._state.next_timestamp()
        block_hash = self._state.apply_mine(timestamp)
        steps.append(_Step("mine", timestamp=timestamp))
        return block_hash

    def _sign_deployer(
        self, to: str, *, data: bytes = b"", value: int = 0, gas: int | None = None
    ) -> bytes:
        if gas is None:
            gas = 100_000 if self._state.code_at(to, "pending") else 21_000
        fee = base_fee(self._state.chain.header)
        signed = self.deployer.sign_transaction(
            {
                "type": 2,
                "chainId": self.chain_id,
                "nonce": self._state.pending_nonce(self.deployer.address),
                "maxPriorityFeePerGas": PRIORITY_FEE_WEI,
                "maxFeePerGas": 2 * fee + PRIORITY_FEE_WEI,
                "gas": gas,
                "to": to,
                "value": value,
                "data": data,
            }
        )
        return bytes(signed.raw_transaction)

    def _bootstrap(self, steps: list[_Step]) -> None:
        if self._state.code_at(self.token_address):
            return  # another process deployed it while this one waited for the lock
        if self._state.pending_nonce(self.deployer.address) != 0:
            raise DevnetReplayError(
                "The devnet journal has transactions but no token contract at "
                f"{self.token_address}; delete the rows of the devnet_journal table "
                "to start a new chain."
            )
        constructor = abi_encode(
            ["string", "string", "uint8"],
            [TOKEN_NAME, TOKEN_SYMBOL, self.token_decimals],
        )
        deploy = self.deployer.sign_transaction(
            {
                "type": 2,
                "chainId": self.chain_id,
                "nonce": 0,
                "maxPriorityFeePerGas": PRIORITY_FEE_WEI,
                "maxFeePerGas": 2 * base_fee(self._state.chain.header)
                + PRIORITY_FEE_WEI,
                "gas": DEPLOY_GAS,
                "data": self._token_contract.bytecode + constructor,
                "value": 0,
            }
        )
        self._submit(bytes(deploy.raw_transaction), steps)
        if not self._state.automine:
            self._mine_step(steps)
        log.info("devnet_token_deployed", token=self.token_address)
