"""The benchmark's goal figures: each ratio is taken within a round, then the
median over the rounds, so one slow round moves neither side alone."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import run as bench  # noqa: E402


def entry(name: str, rounds: list[tuple[float, float, float]], **extra: Any) -> dict:
    return {
        "name": name,
        "orders": extra.get("orders"),
        "rounds": [
            {"rps": rps, "p50_ms": p50, "p99_ms": p99} for rps, p50, p99 in rounds
        ],
    }


def phase(reads: list[dict], writes: list[dict]) -> dict:
    return {"database": "sqlite", "reads": reads, "writes": writes}


def with_ratios(summary: dict) -> dict:
    bench.add_floor_ratios(summary["reads"])
    bench.add_floor_ratios(summary["writes"])
    return summary


def goal(goals: list[dict], name: str) -> dict:
    [found] = [item for item in goals if item["goal"] == name]
    return found


def test_round_ratio_uses_own_floor():
    # The machine slows down after round one. Two rounds give 0.5 and one 0.8, so
    # the median is 0.5. The ratio of the medians would be 4,000 / 5,000 = 0.8.
    floor = entry("floor", [(10_000, 1, 2), (5_000, 2, 4), (5_000, 2, 4)])
    refunds = entry("POST refunds", [(5_000, 1, 2), (2_500, 2, 4), (4_000, 2, 4)])
    assert bench.round_ratios(refunds, floor, "rps") == [0.5, 0.5, 0.8]
    assert bench.median_ratio(refunds, floor, "rps") == 0.5


def test_p50_goal_ignores_one_slow_round():
    # Round one is slow for the big database alone, and round three for both. The
    # ratio of the medians would be 2.1 / 1.0 and fail the goal.
    small = entry(
        "GET order @small", [(1, 1.0, 4), (1, 1.0, 4), (1, 2.0, 4)], orders=1_000
    )
    big = entry(
        "GET order @big", [(1, 2.6, 4), (1, 1.0, 4), (1, 2.1, 4)], orders=1_000_000
    )
    floor = entry("floor", [(1, 1, 1)] * 3)
    goals = bench.evaluate_goals([with_ratios(phase([floor, small, big], []))])
    found = goal(goals, "sqlite: GET order p50 1,000,000 vs 1,000 orders")
    assert found["rounds"] == [2.6, 1.0, 1.05]
    assert found["value"] == 1.05
    assert found["met"] is True


@pytest.mark.parametrize(("rps", "met"), [(2_600, True), (2_400, False)])
def test_refund_goal_uses_writes_floor(rps, met):
    # The read rounds had a faster floor, but refunds compare with the writes' floor.
    read_floor = entry("floor", [(20_000, 1, 2)] * 3)
    write_floor = entry("floor", [(10_000, 1, 2)] * 3)
    refunds = entry("POST refunds", [(rps, 5, 9)] * 3)
    summary = with_ratios(phase([read_floor], [write_floor, refunds]))
    found = goal(bench.evaluate_goals([summary]), "sqlite: POST refunds req/s vs floor")
    assert found["met"] is met
    assert found["value"] == rps / 10_000


def test_empty_floor_round_meets_no_goal():
    floor = entry("floor", [(0, 0, 0), (8_000, 1, 2), (8_000, 1, 2)])
    refunds = entry("POST refunds", [(0, 0, 0), (2_400, 5, 9), (2_400, 5, 9)])
    goals = bench.evaluate_goals([with_ratios(phase([floor], [floor, refunds]))])
    found = goal(goals, "sqlite: POST refunds req/s vs floor")
    assert math.isnan(found["value"])
    assert found["met"] is False


def test_phase_summary_keeps_round_ratios():
    summary = bench.phase_summary(
        bench.Phase(
            "sqlite",
            reads=[_target("floor", [8_000, 4_000]), _target("GET x", [4_000, 2_400])],
        )
    )
    [_floor, read] = summary["reads"]
    assert read["rps_ratios_by_round"] == [0.5, 0.6]
    assert read["rps_ratio_to_floor"] == 0.55


class _Server:
    processes = 1


def _target(name: str, rps: list[float]) -> bench.Target:
    target = bench.Target(name, "sqlite", _Server(), "tracking", Path("unused"))
    target.results = [
        bench.WrkResult(
            requests=int(value),
            seconds=1.0,
            rps=value,
            p50_ms=1.0,
            p90_ms=1.5,
            p99_ms=2.0,
            max_ms=3.0,
            non_2xx=0,
            socket_errors=0,
        )
        for value in rps
    ]
    return target
