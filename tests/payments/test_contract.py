"""The devnet token is compiled by vyper once and cached by its source hash."""

from __future__ import annotations

import json
from pathlib import Path

from orderdesk.payments import contract
from orderdesk.payments.contract import compile_devnet_token


def test_compiled_output_cached_on_disk(tmp_path: Path) -> None:
    compiled = compile_devnet_token(tmp_path)
    (cached,) = tmp_path.glob("usdc-*.json")
    data = json.loads(cached.read_text())
    assert data["source_hash"] == compiled.source_hash
    assert bytes.fromhex(data["bytecode"]) == compiled.bytecode
    names = {entry.get("name") for entry in compiled.abi}
    expected = {
        "transfer",
        "transferFrom",
        "approve",
        "balanceOf",
        "allowance",
        "totalSupply",
    }
    assert (
        expected | {"name", "symbol", "decimals", "mint", "Transfer", "Approval"}
        <= names
    )


def test_cache_file_is_used(tmp_path: Path, monkeypatch: object) -> None:
    compiled = compile_devnet_token(tmp_path)
    contract._memory_cache.clear()
    calls: list[str] = []
    original = contract._compile

    def counting(source: str, key: str) -> contract.CompiledContract:
        calls.append(key)
        return original(source, key)

    monkeypatch.setattr(contract, "_compile", counting)  # type: ignore[attr-defined]
    again = compile_devnet_token(tmp_path)
    assert again == compiled
    assert calls == []
    contract._memory_cache.clear()
    compile_devnet_token(tmp_path / "empty")
    assert calls == [compiled.source_hash]


def test_corrupt_cache_recompiles(tmp_path: Path) -> None:
    compiled = compile_devnet_token(tmp_path)
    (cached,) = tmp_path.glob("usdc-*.json")
    cached.write_text("{not json")
    contract._memory_cache.clear()
    assert compile_devnet_token(tmp_path) == compiled
    assert json.loads(cached.read_text())["source_hash"] == compiled.source_hash
