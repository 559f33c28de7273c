"""Print the figures of a bench/run.py result file as Markdown tables.

python bench/markdown.py bench/results/<run id>.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def target_rows(phase: dict[str, Any]) -> list[str]:
    lines = [
        "| target | orders | processes | req/s | x floor | p50 ms | p99 ms "
        "| p99 x floor | non-2xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in phase["reads"] + phase["writes"]:
        orders = f"{entry['orders']:,}" if entry["orders"] else ""
        lines.append(
            f"| {entry['name']} | {orders} | {entry['processes']} "
            f"| {entry['rps']:.0f} | {entry['rps_ratio_to_floor']:.2f} "
            f"| {entry['p50_ms']:.1f} | {entry['p99_ms']:.1f} "
            f"| {entry['p99_ratio_to_floor']:.2f} | {entry['non_2xx']} |"
        )
    return lines


def worker_rows(phases: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| database | refunds | refunds/s | emails (with PDF) | SMTP server "
        "| webhooks | webhooks/s |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for phase in phases:
        worker = phase.get("worker")
        if not worker:
            continue
        lines.append(
            f"| {phase['database']} | {worker['refunds']} "
            f"| {worker['refunds_per_second']} "
            f"| {worker['emails']} ({worker['emails_with_pdf']}) "
            f"| {worker.get('smtp_server') or 'aiosmtpd'} "
            f"| {worker['webhooks']} | {worker['webhooks_per_second']} |"
        )
    return lines


def goal_rows(goals: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| goal | value | by round | target | met |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for goal in goals:
        met = {True: "yes", False: "**no**", None: "(reference)"}[goal["met"]]
        rounds = ", ".join(str(value) for value in goal.get("rounds") or [])
        lines.append(
            f"| {goal['goal']} | {goal['value']} | {rounds} | {goal['target']} "
            f"| {met} |"
        )
    return lines


def seeding_rows(phases: list[dict[str, Any]]) -> list[str]:
    lines = ["| database | part | rows | seconds |", "| --- | --- | ---: | ---: |"]
    for phase in phases:
        for role, seeding in phase["seeding"].items():
            rows = seeding.get("orders") or seeding.get("line_items")
            unit = "orders" if "orders" in seeding else "line items + packages"
            lines.append(
                f"| {phase['database']} | {role} | {rows:,} {unit} "
                f"| {seeding['seconds']} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    data = json.loads(args.results.read_text())
    print(f"Run `{data['run_id']}`, {data['minutes']} minutes: `{data['command']}`\n")
    for phase in data["phases"]:
        print(f"### {phase['database']}\n")
        floor = phase["floor"]
        print(
            f"Floor: {floor['rps']:.0f} req/s, p50 {floor['p50_ms']:.1f} ms, "
            f"p99 {floor['p99_ms']:.1f} ms (median of {floor['runs']} runs).\n"
        )
        print("\n".join(target_rows(phase)) + "\n")
    print("### Worker\n")
    print("\n".join(worker_rows(data["phases"])) + "\n")
    print("### Seeding\n")
    print("\n".join(seeding_rows(data["phases"])) + "\n")
    print("### Goals\n")
    print("\n".join(goal_rows(data["goals"])))


if __name__ == "__main__":
    main()
