"""Compile the devnet's test stablecoin with vyper, caching the output on disk."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

TOKEN_SOURCE = Path(__file__).with_name("usdc.vy")

_memory_cache: dict[str, CompiledContract] = {}
_compile_lock = threading.Lock()


@dataclass(frozen=True)
class CompiledContract:
    abi: list[dict[str, Any]]
    bytecode: bytes
    source_hash: str


def compile_devnet_token(cache_dir: Path | None = None) -> CompiledContract:
    """Return the compiled usdc.vy, compiling it when no cache contains this source.

    The cache key is the SHA-256 of the source and the vyper version, so editing the
    contract or upgrading vyper compiles again. Results are kept in process memory and,
    when `cache_dir` is given, in a JSON file there.
    """
    import vyper

    source = TOKEN_SOURCE.read_text(encoding="utf-8")
    key = hashlib.sha256(f"{vyper.__version__}\n{source}".encode()).hexdigest()
    with _compile_lock:
        cached = _memory_cache.get(key)
        if cached is not None:
            if cache_dir is not None and not _cache_path(cache_dir, key).exists():
                _write_cache_file(cache_dir, cached)
            return cached
        cached = _read_cache_file(cache_dir, key)
        if cached is None:
            cached = _compile(source, key)
            if cache_dir is not None:
                # Also replaces a cache file that could not be read.
                _write_cache_file(cache_dir, cached)
        _memory_cache[key] = cached
        return cached


def _compile(source: str, key: str) -> CompiledContract:
    import vyper

    output = vyper.compile_code(
        source, contract_path=str(TOKEN_SOURCE), output_formats=["abi", "bytecode"]
    )
    log.info("devnet_token_compiled", vyper=vyper.__version__, source_hash=key[:16])
    return CompiledContract(
        abi=output["abi"],
        bytecode=bytes.fromhex(output["bytecode"].removeprefix("0x")),
        source_hash=key,
    )


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"usdc-{key[:32]}.json"


def _read_cache_file(cache_dir: Path | None, key: str) -> CompiledContract | None:
    if cache_dir is None:
        return None
    path = _cache_path(cache_dir, key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["source_hash"] != key:
            return None
        return CompiledContract(
            abi=data["abi"],
            bytecode=bytes.fromhex(data["bytecode"]),
            source_hash=key,
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("devnet_token_cache_unreadable", path=str(path), error=repr(exc))
        return None


def _write_cache_file(cache_dir: Path, compiled: CompiledContract) -> None:
    path = _cache_path(cache_dir, compiled.source_hash)
    data = {
        "source_hash": compiled.source_hash,
        "abi": compiled.abi,
        "bytecode": compiled.bytecode.hex(),
    }
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename, so a reader never sees half a file.
        fd, temporary = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle)
        os.replace(temporary, path)
    except OSError as exc:
        log.warning("devnet_token_cache_not_written", path=str(path), error=repr(exc))
