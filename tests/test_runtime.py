"""The start-up helpers of long-running processes."""

from __future__ import annotations

import gc

from orderdesk.runtime import freeze_startup_objects


def test_freeze_moves_live_objects_out_of_collection() -> None:
    before = gc.get_freeze_count()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > before
        # Later objects are still tracked by the young generations.
        cycle: list[object] = []
        cycle.append(cycle)
        assert gc.is_tracked(cycle)
        assert gc.get_count()[0] > 0
    finally:
        gc.unfreeze()
