"""The devnet's chain in memory: eth-tester's py-evm backend with deterministic steps.

`ChainState` applies the steps that the journal records (a transaction, a mined
block, a snapshot, a revert) so that replaying the same steps with the same
arguments builds the same blocks, hashes included. It holds no lock and touches no
database: `Devnet` does both around it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, cast

import rlp
from eth.abc import BlockAPI, BlockHeaderAPI, ReceiptAPI, SignedTransactionAPI
from eth.chains.base import MiningChain
from eth.db import get_db_backend
from eth.exceptions import PyEVMError, Revert, TransactionNotFound, VMError
from eth.vm.forks import PragueVM
from eth.vm.spoof import SpoofTransaction
from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_keys.exceptions import BadSignature
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.backends.pyevm.main import get_default_genesis_params
from eth_typing import Address, BlockNumber, Hash32
from eth_utils import ValidationError, keccak, to_canonical_address, to_checksum_address

DEVNET_CHAIN_ID = 1337
# Every key of the devnet comes from this public seed, so the token contract has the
# same address on every start. Nothing of value may ever be sent to these keys.
DEVNET_SEED = b"orderdesk devnet v1"
# 2024-01-01T00:00:00Z. A fixed genesis makes the genesis block hash fixed too.
GENESIS_TIMESTAMP = 1_704_067_200
GENESIS_GAS_LIMIT = 30_000_000
GENESIS_BALANCE_WEI = 10**9 * 10**18
MAX_BLOCKS_PER_MINE = 1000
ERROR_STRING_SELECTOR = keccak(b"Error(string)")[:4]


class DevnetError(Exception):
    """Base of the devnet's errors."""


class TransactionRejected(DevnetError):
    """The node refused a transaction (encoding, signature, nonce, fee or funds).

    Nothing changed on the chain.
    """


class InvalidDevnetRequest(DevnetError):
    """A devnet control call had an argument the chain cannot honour."""


class ExecutionReverted(DevnetError):
    """A call or gas estimate failed in the EVM; `data` is the revert data."""

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.data = data


class _DevnetChain(MiningChain):
    chain_id = DEVNET_CHAIN_ID
    vm_configuration = ((BlockNumber(0), PragueVM),)

    def create_header_from_parent(
        self, parent_header: BlockHeaderAPI, **header_params: Any
    ) -> BlockHeaderAPI:
        # Keep the gas limit constant, as eth-tester's own test chain does.
        header_params["gas_limit"] = parent_header.gas_limit
        return super().create_header_from_parent(parent_header, **header_params)

    def get_transaction_builder(self) -> Any:
        # eth-tester's backend builds call and estimate transactions through this.
        return self.get_vm().get_transaction_builder()


class _DevnetBackend(PyEVMBackend):  # type: ignore[misc]
    """eth-tester's py-evm backend on a chain with a fixed id, genesis and accounts."""

    def __init__(self, chain_id: int, funded: str) -> None:
        self._chain_id = chain_id
        self._funded = funded
        super().__init__()

    def reset_to_genesis(self, *args: Any, **kwargs: Any) -> None:
        chain_id = self._chain_id

        class DevnetChain(_DevnetChain):
            pass

        DevnetChain.chain_id = chain_id
        params = get_default_genesis_params(
            {"timestamp": GENESIS_TIMESTAMP, "gas_limit": GENESIS_GAS_LIMIT}
        )
        state: dict[Address, Any] = {
            to_canonical_address(self._funded): {
                "balance": GENESIS_BALANCE_WEI,
                "nonce": 0,
                "code": b"",
                "storage": {},
            }
        }
        self.account_keys = ()
        self.chain = DevnetChain.from_genesis(get_db_backend(), params, state)


@dataclass(frozen=True)
class CallRequest:
    """The fields of eth_call and eth_estimateGas that the devnet uses."""

    sender: str = "0x" + "00" * 20
    to: str | None = None
    data: bytes = b""
    value: int = 0
    gas: int | None = None


@dataclass(frozen=True)
class FoundTransaction:
    """A transaction with the block holding it; `pending` when not yet mined."""

    block: BlockAPI
    transaction: SignedTransactionAPI
    index: int
    pending: bool


def base_fee(header: BlockHeaderAPI) -> int:
    """Return the header's base fee (every devnet block is past London)."""
    return int(header.base_fee_per_gas or 0)


def contract_address(deployer: str, nonce: int) -> str:
    """Return the address of the contract created by `deployer` with `nonce`."""
    encoded = rlp.encode([to_canonical_address(deployer), nonce])
    return to_checksum_address(keccak(encoded)[12:])


class ChainState:
    """One chain built from genesis, where the account `funded` starts with
    GENESIS_BALANCE_WEI."""

    def __init__(self, chain_id: int, funded: str) -> None:
        self.chain_id = chain_id
        self.backend = _DevnetBackend(chain_id, funded)
        self.tester = EthereumTester(backend=self.backend, auto_mine_transactions=False)
        # eth-tester keeps its transaction pool in a class attribute until the first
        # send. Each chain gets its own, so two devnets in a process never share it.
        self.tester._pending_transactions = []
        self.automine = True
        self.time_offset = 0
        self.snapshots: dict[int, bytes] = {}
        self.next_snapshot_id = 1

    @property
    def chain(self) -> MiningChain:
        # Reverting to the genesis snapshot replaces the backend's chain object.
        return cast(MiningChain, self.backend.chain)

    @property
    def head_number(self) -> int:
        return int(self.chain.get_canonical_head().block_number)

    def mined_blocks(self, first: int, last: int) -> list[BlockAPI]:
        """Return the mined blocks numbered first to last, both included."""
        blocks = [self.canonical_block(number) for number in range(first, last + 1)]
        return [block for block in blocks if block is not None]

    def code_at(self, address: str, block: str | int = "latest") -> bytes:
        return bytes(self.backend.get_code(to_canonical_address(address), block))

    def pending_block(self) -> BlockAPI:
        return self.chain.get_block()

    def canonical_block(self, number: int) -> BlockAPI | None:
        """Return the mined block with this number, or None past the head."""
        if number < 0 or number > self.chain.get_canonical_head().block_number:
            return None
        return self.chain.get_canonical_block_by_number(BlockNumber(number))

    def block_by_hash(self, block_hash: bytes) -> BlockAPI | None:
        pending = self.pending_block()
        try:
            header = self.chain.chaindb.get_block_header_by_hash(Hash32(block_hash))
        except PyEVMError:
            return None
        block = self.canonical_block(header.block_number)
        if (
            block is None
            or block.hash != block_hash
            or header.block_number >= (pending.number)
        ):
            return None
        return block

    def find_transaction(self, tx_hash: bytes) -> FoundTransaction | None:
        pending = self.pending_block()
        for index, transaction in enumerate(pending.transactions):
            if transaction.hash == tx_hash:
                return FoundTransaction(pending, transaction, index, pending=True)
        try:
            number, index = self.chain.chaindb.get_transaction_index(Hash32(tx_hash))
        except TransactionNotFound:
            return None
        block = self.canonical_block(number)
        if block is None or index >= len(block.transactions):
            return None
        transaction = block.transactions[index]
        if transaction.hash != tx_hash:
            return None
        return FoundTransaction(block, transaction, index, pending=False)

    def receipts(self, block: BlockAPI) -> tuple[ReceiptAPI, ...]:
        return tuple(block.get_receipts(self.chain.chaindb))

    def pending_nonce(self, address: str) -> int:
        return int(self.backend.get_nonce(to_canonical_address(address), "pending"))

    def balance(self, address: str, block: str | int = "latest") -> int:
        return int(self.backend.get_balance(to_canonical_address(address), block))

    def header_at(self, block: str | int) -> BlockHeaderAPI | None:
        """Return the header for a block tag or number, or None when unknown."""
        if block == "pending":
            return self.chain.header
        if block == "earliest":
            return self.chain.get_canonical_block_header_by_number(BlockNumber(0))
        if isinstance(block, int):
            found = self.canonical_block(block)
            return None if found is None else found.header
        return self.chain.get_canonical_head()

    def call(self, request: CallRequest, header: BlockHeaderAPI) -> bytes:
        """Run a call on the state after `header` without charging fees.

        Raises ExecutionReverted with the revert data when the call fails.
        """
        transaction = self._spoofed(request, header)
        try:
            with self.chain.get_vm(header).in_costless_state() as state:
                computation = state.costless_execute_transaction(transaction)
        except ValidationError as exc:
            raise TransactionRejected(_rejection_message(exc)) from exc
        if computation.is_error:
            raise ExecutionReverted(
                _vm_error_message(computation.error), _revert_data(computation)
            )
        return bytes(computation.output)

    def estimate_gas(self, request: CallRequest, header: BlockHeaderAPI) -> int:
        """Return the least gas with which the call succeeds (py-evm's binary search),
        with no margin."""
        transaction = self._spoofed(request, header)
        try:
            return int(self.chain.estimate_gas(transaction, header))
        except Revert as exc:
            data = (
                bytes(exc.args[0])
                if exc.args and isinstance(exc.args[0], bytes)
                else b""
            )
            raise ExecutionReverted(_vm_error_message(exc), data) from exc
        except VMError as exc:
            raise ExecutionReverted(_vm_error_message(exc), b"") from exc
        except ValidationError as exc:
            raise TransactionRejected(_rejection_message(exc)) from exc

    def _spoofed(self, request: CallRequest, header: BlockHeaderAPI) -> Any:
        vm = self.chain.get_vm(header)
        sender = to_canonical_address(request.sender)
        unsigned = vm.create_unsigned_transaction(
            nonce=vm.state.get_nonce(sender),
            gas_price=0,
            gas=request.gas if request.gas is not None else header.gas_limit,
            to=to_canonical_address(request.to) if request.to else Address(b""),
            value=request.value,
            data=request.data,
        )
        return SpoofTransaction(unsigned, from_=sender)

    # Steps. Each apply_* runs both live and on replay, so it must be deterministic
    # given its arguments.

    def apply_tx(self, raw: bytes, timestamp: int) -> bytes:
        transaction = self.decode(raw)
        if self.find_transaction(transaction.hash) is not None:
            raise TransactionRejected("already known")
        header = self.chain.header
        self._pin_timestamp(timestamp)
        try:
            self.chain.apply_transaction(transaction)
        except (ValidationError, PyEVMError, BadSignature, ValueError) as exc:
            self.chain.header = header
            raise TransactionRejected(_rejection_message(exc)) from exc
        return bytes(transaction.hash)

    def decode(self, raw: bytes) -> SignedTransactionAPI:
        if not raw:
            raise TransactionRejected("the transaction is empty")
        if raw[0] == 3:
            raise TransactionRejected(
                "blob transactions (type 3) are not supported on the devnet"
            )
        builder = self.chain.get_vm().get_transaction_builder()
        try:
            transaction = builder.decode(raw)
            # Recover the sender now, so a bad signature is an encoding error.
            transaction.sender  # noqa: B018
        except (rlp.exceptions.RLPException, ValidationError, BadSignature) as exc:
            raise TransactionRejected(
                f"the transaction could not be decoded: {exc}"
            ) from exc
        except (ValueError, TypeError, IndexError, PyEVMError) as exc:
            raise TransactionRejected(
                f"the transaction could not be decoded: {exc}"
            ) from exc
        self._check_chain_id(transaction)
        return transaction

    def _check_chain_id(self, transaction: SignedTransactionAPI) -> None:
        # py-evm does not compare a transaction's chain id with its own, so a
        # transaction signed for another chain would replay here without this.
        if getattr(transaction, "type_id", None) is not None:
            chain_id = transaction.chain_id
        elif getattr(transaction, "v", 0) >= 35:
            chain_id = (int(getattr(transaction, "v", 0)) - 35) // 2
        else:
            raise TransactionRejected(
                "only replay-protected (EIP-155) transactions are accepted; sign with "
                f"chain id {self.chain_id}"
            )
        if chain_id != self.chain_id:
            raise TransactionRejected(
                f"invalid chain id for signer: have {chain_id} want {self.chain_id}"
            )

    def apply_mine(self, timestamp: int) -> bytes:
        self._pin_timestamp(timestamp)
        number = self.chain.header.block_number
        # py-evm would draw PREVRANDAO at random; derive it so a replay matches.
        mix_hash = keccak(DEVNET_SEED + b"/prevrandao/" + number.to_bytes(32, "big"))
        block = self.chain.mine_block(mix_hash=mix_hash)
        return bytes(block.hash)

    def apply_snapshot(self, snapshot_id: int) -> None:
        self.snapshots[snapshot_id] = self.chain.get_canonical_head().hash
        self.next_snapshot_id = snapshot_id + 1

    def apply_revert(self, snapshot_id: int) -> bool:
        block_hash = self.snapshots.get(snapshot_id)
        if block_hash is None:
            return False
        self.backend.revert_to_snapshot(block_hash)
        for later in [key for key in self.snapshots if key >= snapshot_id]:
            del self.snapshots[later]
        return True

    def _pin_timestamp(self, timestamp: int) -> None:
        # The pending block's timestamp is fixed when it receives its first
        # transaction (or is mined empty), and that value is journaled.
        if not self.pending_block().transactions:
            self.chain.header = self.chain.header.copy(timestamp=timestamp)

    def next_timestamp(self) -> int:
        if self.pending_block().transactions:
            return int(self.chain.header.timestamp)
        parent = self.chain.get_canonical_head()
        return max(parent.timestamp + 1, int(time.time()) + self.time_offset)

    def check_mine_timestamp(self, timestamp: int) -> None:
        if self.pending_block().transactions:
            raise InvalidDevnetRequest(
                "The pending block already contains transactions, so its timestamp is "
                "fixed; call evm_mine without a timestamp."
            )
        parent = self.chain.get_canonical_head().timestamp
        if timestamp <= parent:
            raise InvalidDevnetRequest(
                f"The timestamp {timestamp} is not later than the latest block's "
                f"{parent}; pass a later one."
            )


def _revert_data(computation: Any) -> bytes:
    if isinstance(computation.error, Revert):
        return bytes(computation.output)
    return b""


def _vm_error_message(error: Exception) -> str:
    if isinstance(error, Revert):
        data = error.args[0] if error.args and isinstance(error.args[0], bytes) else b""
        reason = _revert_reason(data)
        return f"execution reverted: {reason}" if reason else "execution reverted"
    return f"execution failed: {error.__class__.__name__} {error}".strip()


def _revert_reason(data: bytes) -> str | None:
    """Decode an Error(string) revert reason, the form Solidity and Vyper emit."""
    if data[:4] != ERROR_STRING_SELECTOR:
        return None
    try:
        (reason,) = abi_decode(["string"], data[4:])
    except (DecodingError, ValueError):
        return None
    return str(reason)


_NONCE_MESSAGE = re.compile(r"Expected (\d+), but got (\d+)")


def _rejection_message(exc: Exception) -> str:
    """Reword py-evm's validation errors with the phrases geth uses.

    Clients that match on geth's error strings ("nonce too low", "insufficient
    funds") then work unchanged.
    """
    message = str(exc) or exc.__class__.__name__
    nonce = _NONCE_MESSAGE.search(message)
    if "nonce" in message.lower() and nonce:
        expected, got = int(nonce.group(1)), int(nonce.group(2))
        kind = "nonce too low" if got < expected else "nonce too high"
        return f"{kind}: next nonce {expected}, tx nonce {got}"
    if "enough balance" in message:
        return f"insufficient funds for gas * price + value: {message}"
    if "cannot afford txn" in message:
        return (
            "insufficient funds for gas * price + value: "
            + message.split("cannot afford txn ", 1)[1]
        )
    if "lower than block's base fee" in message:
        return f"max fee per gas less than block base fee: {message}"
    if "exceeds gas limit" in message:
        return f"exceeds block gas limit: {message}"
    if "intrinsic gas" in message.lower() or "gas cannot be negative" in message:
        return f"intrinsic gas too low: {message}"
    return message
