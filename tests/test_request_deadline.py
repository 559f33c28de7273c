"""The request deadline that the timeout middleware and the committing code share."""

from __future__ import annotations

import asyncio
import time

from orderdesk.request_timeout import RequestDeadline


def test_claim_blocks_expiry_until_release() -> None:
    deadline = RequestDeadline(0.5)
    assert deadline.claim()
    assert not deadline.expire()
    deadline.release()
    assert deadline.expire()
    assert deadline.expired
    # Once expired, no later claim goes through.
    assert not deadline.claim()


def test_ends_at_matches_timeout() -> None:
    before = time.monotonic()
    deadline = RequestDeadline(2.0)
    assert before + 2.0 <= deadline.ends_at <= time.monotonic() + 2.0


def test_wait_expired_after_expiry() -> None:
    async def scenario() -> tuple[bool, bool]:
        deadline = RequestDeadline(0.5)
        deadline.claim()
        waiter = asyncio.ensure_future(deadline.wait_expired())
        await asyncio.sleep(0.01)
        waiting = not waiter.done()
        deadline.release()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, deadline.expire)
        await asyncio.wait_for(waiter, 1)
        return waiting, deadline.expired

    waiting, expired = asyncio.run(scenario())
    assert waiting
    assert expired


def test_wait_expired_when_already_expired() -> None:
    async def scenario() -> None:
        deadline = RequestDeadline(0.5)
        deadline.expire()
        await asyncio.wait_for(deadline.wait_expired(), 0.5)

    asyncio.run(scenario())
