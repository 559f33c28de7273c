"""Calls to a chain's node, with connection failures turned into ChainUnavailable."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
import structlog
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3Exception

from orderdesk.payments.chains import Chain
from orderdesk.payments.exceptions import ChainUnavailable

log = structlog.get_logger(__name__)


@contextmanager
def node_errors(chain: Chain) -> Iterator[None]:
    """Raise ChainUnavailable when the node cannot be reached or returns an error.

    TransactionNotFound and ContractLogicError (a call that reverted) are results,
    not failures, so they pass through for the caller to handle.
    """
    try:
        yield
    except (TransactionNotFound, ContractLogicError):
        raise
    except (Web3Exception, requests.RequestException, OSError) as exc:
        log.warning("chain_node_failed", chain=chain.name, error=repr(exc))
        raise ChainUnavailable(chain.name, exc.__class__.__name__) from exc
