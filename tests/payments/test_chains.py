"""The chain registry: the devnet, chains files and their validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from orderdesk.config import Settings
from orderdesk.payments.chains import ChainConfigError, ChainRegistry, load_chains_file
from orderdesk.runtime import Runtime

TOKEN = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
GOOD = f"""
[[chains]]
name = "base-sepolia"
chain_id = 84532
rpc_url = "https://sepolia.base.org"
confirmations = 3

[chains.tokens.usdc]
address = "{TOKEN}"
decimals = 6
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chains.toml"
    path.write_text(text)
    return path


def test_registry_lists_devnet_and_file(runtime: Runtime, tmp_path: Path) -> None:
    settings = runtime.settings.model_copy(
        update={"chains_file": write(tmp_path, GOOD)}
    )
    registry = ChainRegistry.from_settings(settings, runtime.session_factory)
    try:
        assert registry.names() == ["base-sepolia", "devnet"]
        remote = registry.get("base-sepolia")
        assert remote is not None
        assert remote.chain_id == 84532
        assert remote.confirmations == 3
        assert remote.tokens["usdc"].address == TOKEN
        assert remote.tokens["usdc"].decimals == 6
        assert remote.devnet is None
        devnet = registry.get("devnet")
        assert devnet is not None
        assert devnet.confirmations == settings.devnet_confirmations
        assert registry.get("mainnet") is None
    finally:
        registry.close()
        registry.close()


def test_registry_without_devnet(tmp_path: Path) -> None:
    settings = Settings(
        devnet=False, chains_file=write(tmp_path, GOOD), data_dir=tmp_path
    )
    registry = ChainRegistry.from_settings(settings, None)
    assert registry.names() == ["base-sepolia"]
    assert registry.devnet is None
    registry.close()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[chains]\n", "not valid TOML"),
        (
            GOOD.replace('name = "base-sepolia"', 'name = "Base Sepolia"'),
            "chains.0.name",
        ),
        (GOOD.replace("chain_id = 84532", 'chain_id = "84532"'), "chains.0.chain_id"),
        (GOOD.replace("https://sepolia.base.org", "ftp://node"), "chains.0.rpc_url"),
        (
            GOOD.replace("confirmations = 3", "confirmations = 0"),
            "chains.0.confirmations",
        ),
        (GOOD.replace(TOKEN, TOKEN.replace("C", "c", 1)), "EIP-55"),
        (GOOD.replace("decimals = 6", "decimals = 99"), "decimals"),
        (GOOD.replace("decimals = 6", "decimals = 6\ncolor = 1"), "color"),
        (GOOD + GOOD, "more than once"),
        (GOOD.split("[chains.tokens.usdc]")[0], "tokens"),
    ],
)
def test_chains_file_rejects(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ChainConfigError, match=problem):
        load_chains_file(write(tmp_path, text))


def test_chains_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ChainConfigError, match="cannot be read"):
        load_chains_file(tmp_path / "absent.toml")


def test_devnet_name_is_reserved(tmp_path: Path) -> None:
    text = GOOD.replace('name = "base-sepolia"', 'name = "devnet"')
    settings = Settings(chains_file=write(tmp_path, text), data_dir=tmp_path)
    with pytest.raises(ChainConfigError, match="devnet"):
        ChainRegistry.from_settings(settings, None)
