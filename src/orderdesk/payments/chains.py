"""Configured chains and their tokens. (Placeholder until the devnet lands.)"""

from __future__ import annotations

from typing import Any


class ChainRegistry:
    def __init__(self) -> None:
        self.chains: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Any, session_factory: Any) -> ChainRegistry:
        return cls()

    def get(self, name: str) -> Any | None:
        return self.chains.get(name)

    def names(self) -> list[str]:
        return sorted(self.chains)

    def close(self) -> None:
        pass
