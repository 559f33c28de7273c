"""Configured chains and their tokens: the embedded devnet and JSON-RPC chains.

A chains file (ORDERDESK_CHAINS_FILE) is TOML with one [[chains]] table per chain:

    [[chains]]
    name = "base-sepolia"
    chain_id = 84532
    rpc_url = "https://sepolia.base.org"
    confirmations = 3

    [chains.tokens.usdc]
    address = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
    decimals = 6
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.orm import Session, sessionmaker
from web3 import HTTPProvider, Web3

from orderdesk.config import Settings
from orderdesk.db.engine import make_engine
from orderdesk.payments.addresses import InvalidAddress, parse_address
from orderdesk.payments.contract import compile_devnet_token
from orderdesk.payments.devnet import DEVNET_CURRENCY, Devnet
from orderdesk.payments.devnet_rpc import DevnetProvider, DevnetRpc

log = structlog.get_logger(__name__)

DEVNET_CHAIN_NAME = "devnet"
RPC_TIMEOUT_SECONDS = 10


class ChainConfigError(ValueError):
    """The chains file is missing, unreadable or invalid."""


@dataclass(frozen=True)
class Token:
    currency: str
    address: str  # EIP-55 checksummed
    decimals: int


@dataclass
class Chain:
    name: str
    chain_id: int
    confirmations: int
    tokens: dict[str, Token]
    web3: Web3
    devnet: Devnet | None = field(default=None, repr=False)

    def ensure_gas(self, address: str) -> str | None:
        """On the devnet, top up `address` with gas money; elsewhere do nothing.

        Returns the hash of the funding transaction, or None when none was sent. On
        a real chain the operator keeps the treasury funded with the native coin.
        """
        if self.devnet is None:
            return None
        return self.devnet.ensure_gas(address)


class ChainRegistry:
    """The chains payments may use, by name."""

    def __init__(self, chains: dict[str, Chain]) -> None:
        self._chains = chains
        self._closed = False

    @classmethod
    def from_settings(
        cls, settings: Settings, session_factory: sessionmaker[Session] | None = None
    ) -> ChainRegistry:
        """Start the devnet when enabled and connect the chains of the chains file.

        The devnet journals into the database the session factory is bound to, over
        a pool of its own so that journal reads do not wait for a connection behind
        request sessions.
        """
        chains: dict[str, Chain] = {}
        if settings.chains_file is not None:
            for chain in load_chains_file(settings.chains_file):
                chains[chain.name] = chain
        if settings.devnet_enabled:
            if DEVNET_CHAIN_NAME in chains:
                raise ChainConfigError(
                    f"{settings.chains_file} defines a chain named "
                    f"{DEVNET_CHAIN_NAME!r}, the embedded devnet's name; rename it or "
                    "turn the devnet off with ORDERDESK_DEVNET=false."
                )
            chains[DEVNET_CHAIN_NAME] = start_devnet_chain(settings, session_factory)
        return cls(chains)

    def get(self, name: str) -> Chain | None:
        return self._chains.get(name)

    def names(self) -> list[str]:
        return sorted(self._chains)

    @property
    def devnet(self) -> Devnet | None:
        chain = self._chains.get(DEVNET_CHAIN_NAME)
        return chain.devnet if chain is not None else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for chain in self._chains.values():
            if chain.devnet is not None:
                chain.devnet.close()


def start_devnet_chain(
    settings: Settings, session_factory: sessionmaker[Session] | None = None
) -> Chain:
    bind = session_factory.kw.get("bind") if session_factory is not None else None
    if bind is not None:
        url = bind.url.render_as_string(hide_password=False)
        settings = settings.model_copy(update={"database_url": url})
    token = compile_devnet_token(settings.data_dir / "devnet")
    devnet = Devnet(make_engine(settings), token)
    try:
        devnet.start()
    except BaseException:
        devnet.close()
        raise
    usdc = Token(DEVNET_CURRENCY, devnet.token_address, devnet.token_decimals)
    return Chain(
        name=DEVNET_CHAIN_NAME,
        chain_id=devnet.chain_id,
        confirmations=settings.devnet_confirmations,
        tokens={DEVNET_CURRENCY: usdc},
        web3=Web3(DevnetProvider(DevnetRpc(devnet))),
        devnet=devnet,
    )


# The chains file


ChainName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]


class _TokenConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    address: str
    decimals: int = Field(ge=0, le=36)

    @field_validator("address")
    @classmethod
    def _checksum(cls, value: str) -> str:
        try:
            return parse_address(value)
        except InvalidAddress as exc:
            raise ValueError(str(exc)) from exc


class _ChainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: ChainName
    chain_id: int = Field(ge=1)
    rpc_url: str = Field(pattern=r"^https?://\S+$")
    confirmations: int = Field(default=1, ge=1, le=1000)
    tokens: dict[Annotated[str, Field(pattern=r"^[a-z0-9]{1,20}$")], _TokenConfig] = (
        Field(min_length=1)
    )


class _ChainsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    chains: list[_ChainConfig] = Field(default_factory=list)


def load_chains_file(path: Path) -> list[Chain]:
    """Read and validate a chains file, connecting each chain over HTTP JSON-RPC.

    Nothing is sent to the nodes here, so start-up works while a node is down.
    """
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ChainConfigError(f"The chains file {path} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ChainConfigError(
            f"The chains file {path} is not valid TOML: {exc}"
        ) from exc
    try:
        parsed = _ChainsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise ChainConfigError(
            f"The chains file {path} is invalid: {problems}"
        ) from exc
    names = [chain.name for chain in parsed.chains]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ChainConfigError(
            f"The chains file {path} names {', '.join(duplicates)} more than once; "
            "give each chain a unique name."
        )
    return [_connect(config) for config in parsed.chains]


def _connect(config: _ChainConfig) -> Chain:
    provider = HTTPProvider(
        config.rpc_url,
        request_kwargs={"timeout": RPC_TIMEOUT_SECONDS},
        # A failed request fails at once; the payment worker retries later.
        exception_retry_configuration=None,
    )
    tokens = {
        currency: Token(currency, token.address, token.decimals)
        for currency, token in config.tokens.items()
    }
    log.info("chain_configured", chain=config.name, chain_id=config.chain_id)
    return Chain(
        name=config.name,
        chain_id=config.chain_id,
        confirmations=config.confirmations,
        tokens=tokens,
        web3=Web3(provider),
    )
