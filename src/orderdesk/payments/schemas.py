"""Request bodies of the payments API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

TxId = Annotated[str, Field(max_length=66, pattern=r"^0x[0-9a-fA-F]{64}$")]


class PaymentSubmission(BaseModel):
    """`{"type": "crypto-tx-id", "txId": "0x" + 64 hex digits}`."""

    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True)

    type: Literal["crypto-tx-id"]
    tx_id: TxId = Field(alias="txId")
