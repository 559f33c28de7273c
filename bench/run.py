"""orderdesk benchmark: the hot HTTP paths and the worker, measured side by side.

Run from the repository root (wrk comes from Debian: `apt-get install -y wrk`):

    python bench/run.py                       # full run: 1,000,000 orders, both DBs
    python bench/run.py --big-orders 20000 --duration 3 --rounds 1   # quick check

What one run does, on loopback addresses only:

1. For each database kind it creates fresh databases: SQLite files, or PostgreSQL
   databases at 127.0.0.1:5432 (user postgres, trust auth) that the run drops at
   the end. It migrates them and seeds them in bulk with Core inserts (COPY on
   PostgreSQL): `small` with `--small-orders` paid orders, `big` with
   `--big-orders`, `writes` with delivered line items and packages in transit as
   write targets, and `worker` with accepted refunds.
2. It starts orderdesk as `orderdesk serve --no-worker` builds it, through
   bench/serve.py (uvicorn, SO_REUSEPORT socket), once per database, plus a
   second two-process server on the PostgreSQL `small` database, and the floor: a
   bare Starlette app on the same uvicorn settings that returns the bytes of one
   real tracking reply from memory (one process, and two for PostgreSQL).
3. It runs wrk (one thread, `--connections` connections, `--duration` seconds per
   run, bench/lua/orderdesk.lua sending X-API-KEY and rotating ids) `--rounds`
   times over every target, the floor first in each round, so the figures of one
   round are taken side by side. A one-second warm-up run precedes each target's
   first round. Each read target then reads its ids WARM_UP_PASSES times over (in
   every process on its port), so that the rounds measure polling clients: replies
   cached per process, rebuilt when the order changes. Writes take a fresh line
   item or event per request.
4. It measures one `orderdesk worker` process: accepted refunds completed per
   second (label PDF, return parcel, email with the PDF to an aiosmtpd server),
   then webhook deliveries per second to a loopback receiver.
5. It prints requests per second, p50 and p99 latency and each target's ratio to
   the floor of the same database phase (medians over the rounds), checks the
   goals, and writes everything to bench/results/<run id>.json.

Ratios, not absolute times, are the result: the machine is shared and noisy. See
docs/benchmarks.md for the figures of a full run and what each ratio means.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    BENCH_DIR,
    Database,
    ServerGroup,
    WrkResult,
    new_run_id,
    run_wrk,
    service_environment,
)
from seed import (  # noqa: E402
    RowFactory,
    SeedResult,
    analyze,
    prepare,
    seed_engine,
    seed_reads,
    seed_writes,
)
from workers import (  # noqa: E402
    PostfixSink,
    SmtpSink,
    measure_worker,
    settings_for,
    smtp_sink,
)

RESULTS_DIR = BENCH_DIR / "results"
READ_MODES = ("tracking", "refunds", "order")
WRITE_MODES = ("refund", "event")
WARM_UP_SECONDS = 1.0
# Before its first round, each read target reads its ids this many times over, in
# runs of WARM_UP_SECONDS, for at most WARM_UP_MAX_SECONDS.
WARM_UP_PASSES = 2
WARM_UP_MAX_SECONDS = 60.0
TREASURY = "0x" + "cd" * 20
console = Console(width=150)


@dataclass
class Options:
    databases: list[str]
    small_orders: int
    big_orders: int
    sample: int
    write_targets: int
    duration: float
    rounds: int
    connections: int
    worker_refunds: int
    worker_webhooks: int
    keep: bool
    skip_worker: bool
    skip_reads: bool = False
    smtp: str = "auto"


def parse_options(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Benchmark orderdesk's hot paths against a bare Starlette floor.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--databases",
        default="sqlite,postgres",
        help="Comma-separated database kinds to measure: sqlite, postgres.",
    )
    parser.add_argument("--small-orders", type=int, default=1_000)
    parser.add_argument(
        "--big-orders",
        type=int,
        default=1_000_000,
        help="Orders in the big database, compared with --small-orders.",
    )
    parser.add_argument(
        "--sample", type=int, default=1_000, help="Order ids each read rotates over."
    )
    parser.add_argument(
        "--write-targets",
        type=int,
        default=80_000,
        help="Fresh line items (and packages) seeded for the write endpoints. Each "
        "request takes one, so this must exceed the requests of all write rounds.",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="Seconds of each wrk run."
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--worker-refunds", type=int, default=1_000)
    parser.add_argument("--worker-webhooks", type=int, default=1_000)
    parser.add_argument(
        "--keep", action="store_true", help="Keep the databases and the work folder."
    )
    parser.add_argument("--skip-worker", action="store_true")
    parser.add_argument(
        "--skip-reads",
        action="store_true",
        help="Measure only the floor and the write endpoints (and the worker).",
    )
    parser.add_argument(
        "--smtp",
        choices=("auto", "postfix", "aiosmtpd"),
        default="auto",
        help="The SMTP server the worker sends to: postfix's smtp-sink (Debian's "
        "postfix package), aiosmtpd in this process, or auto: smtp-sink when "
        "installed.",
    )
    args = parser.parse_args(argv)
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    unknown = sorted(set(databases) - {"sqlite", "postgres"})
    if unknown:
        parser.error(f"unknown database kind(s): {', '.join(unknown)}")
    return Options(
        databases=databases,
        small_orders=args.small_orders,
        big_orders=args.big_orders,
        sample=args.sample,
        write_targets=args.write_targets,
        duration=args.duration,
        rounds=args.rounds,
        connections=args.connections,
        worker_refunds=args.worker_refunds,
        worker_webhooks=args.worker_webhooks,
        keep=args.keep,
        skip_worker=args.skip_worker,
        skip_reads=args.skip_reads,
        smtp=args.smtp,
    )


@dataclass
class Target:
    """One server and endpoint measured in every round."""

    name: str
    database: str
    server: ServerGroup
    mode: str
    targets_file: Path
    orders: int | None = None
    offset: int = 0
    results: list[WrkResult] = field(default_factory=list)


@dataclass
class Phase:
    """Everything measured on one database kind."""

    database: str
    reads: list[Target] = field(default_factory=list)
    writes: list[Target] = field(default_factory=list)
    seeding: dict[str, Any] = field(default_factory=dict)
    worker: dict[str, Any] | None = None


class BenchRun:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.run_id = new_run_id()
        self.work_dir = RESULTS_DIR / f"work-{self.run_id}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.api_key = "sk_production_" + secrets.token_urlsafe(24).replace(
            "-", "a"
        ).replace("_", "b")
        self.databases: list[Database] = []
        self.servers: list[ServerGroup] = []
        self.phases: list[Phase] = []
        self.base_epoch = int(time.time()) - 3600
        self.floor_body: Path | None = None
        self.smtp: SmtpSink | PostfixSink | None = None
        self.receiver: ServerGroup | None = None
        self.load_samples: list[tuple[str, tuple[float, float, float]]] = []

    # Databases and servers

    def database(self, kind: str, role: str) -> Database:
        database = Database.create(kind, role, self.work_dir, self.run_id)
        self.databases.append(database)
        return database

    def server(
        self, label: str, app: str, database: Database | None, processes: int = 1
    ) -> ServerGroup:
        environment = (
            service_environment(database.url, self.work_dir)
            if database is not None
            else dict(os.environ)
        )
        arguments = []
        if app == "floor":
            assert self.floor_body is not None
            arguments = ["--body-file", str(self.floor_body)]
        group = ServerGroup(
            label, app, processes, self.work_dir, environment, arguments
        )
        self.servers.append(group)
        return group.start()

    def write_targets(self, name: str, lines: list[str]) -> Path:
        path = self.work_dir / f"{name}.txt"
        path.write_text("\n".join(lines) + "\n")
        return path

    def seed_read_database(
        self, kind: str, role: str, orders: int, phase: Phase
    ) -> tuple[Database, SeedResult]:
        database = self.database(kind, role)
        settings = settings_for(database.url, self.work_dir)
        engine = seed_engine(database.url)
        started = time.monotonic()
        project_id = prepare(engine, settings, self.api_key)
        factory = RowFactory(project_id, TREASURY, seed={"small": 1, "big": 2}[role])
        result = seed_reads(
            engine, factory, orders, self.options.sample, f"{kind} {role}"
        )
        analyze(engine)
        engine.dispose()
        elapsed = time.monotonic() - started
        phase.seeding[role] = {
            "orders": orders,
            "seconds": round(elapsed, 1),
            "orders_per_second": round(orders / elapsed),
        }
        return database, result

    def seed_write_database(
        self, kind: str, phase: Phase
    ) -> tuple[Database, SeedResult]:
        database = self.database(kind, "writes")
        settings = settings_for(database.url, self.work_dir)
        engine = seed_engine(database.url)
        started = time.monotonic()
        project_id = prepare(engine, settings, self.api_key)
        factory = RowFactory(project_id, TREASURY, seed=3)
        targets = self.options.write_targets
        result = seed_writes(engine, factory, targets, targets, f"{kind} writes")
        analyze(engine)
        engine.dispose()
        phase.seeding["writes"] = {
            "line_items": targets,
            "packages": targets,
            "seconds": round(time.monotonic() - started, 1),
        }
        return database, result

    # Measuring

    def check_replies(self, server: ServerGroup, order_id: str) -> bytes:
        """Read each endpoint once and fail on anything but 200; return tracking."""
        headers = {"X-API-KEY": self.api_key}
        tracking = b""
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            for path in (
                f"/api/unstable/orders/{order_id}/tracking",
                f"/api/unstable/orders/{order_id}/refunds",
                f"/api/2022-06-09/orders/{order_id}",
            ):
                reply = client.get(path)
                if reply.status_code != 200:
                    raise RuntimeError(
                        f"{server.label} GET {path} returned {reply.status_code}: "
                        f"{reply.text[:300]}"
                    )
                if path.endswith("/tracking"):
                    tracking = reply.content
        return tracking

    def measure(self, target: Target, *, warm_up: bool) -> None:
        duration = WARM_UP_SECONDS if warm_up else self.options.duration
        result = run_wrk(
            target.server.url,
            target.mode,
            target.targets_file,
            self.api_key,
            connections=self.options.connections,
            duration=duration,
            offset=target.offset,
            base_epoch=self.base_epoch,
        )
        if target.mode in WRITE_MODES:
            # Requests still in flight when wrk stopped used a target too.
            target.offset += result.requests + self.options.connections
        if warm_up:
            return
        target.results.append(result)
        console.print(
            f"  {target.database:8} {target.name:22} {result.rps:8.0f} req/s  "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
            + (f"  non-2xx {result.non_2xx}" if result.non_2xx else "")
        )

    def warm_replies(self, target: Target) -> None:
        """Read every id of a read target a few times, so that the rounds measure
        what polling clients get: replies cached per process (see
        orderdesk.fastpath). Each of the processes on the port needs its own."""
        needed = WARM_UP_PASSES * self.options.sample * target.server.processes
        done = 0
        deadline = time.monotonic() + WARM_UP_MAX_SECONDS
        while done < needed and time.monotonic() < deadline:
            done += run_wrk(
                target.server.url,
                target.mode,
                target.targets_file,
                self.api_key,
                connections=self.options.connections,
                duration=WARM_UP_SECONDS,
                base_epoch=self.base_epoch,
            ).requests

    def run_rounds(self, targets: list[Target], label: str) -> None:
        for target in targets:
            self.measure(target, warm_up=True)
            if target.mode in READ_MODES and target.orders is not None:
                self.warm_replies(target)
        for number in range(self.options.rounds):
            self.load_samples.append((f"{label} round {number + 1}", os.getloadavg()))
            console.print(f"[bold]{label}, round {number + 1}[/bold]")
            for target in targets:
                self.measure(target, warm_up=False)

    # Phases

    def run_phase(self, kind: str) -> Phase:
        phase = Phase(kind)
        self.phases.append(phase)
        console.rule(f"{kind}: seeding")
        small, small_ids = self.seed_read_database(
            kind, "small", self.options.small_orders, phase
        )
        big, big_ids = self.seed_read_database(
            kind, "big", self.options.big_orders, phase
        )
        writes, write_ids = self.seed_write_database(kind, phase)

        console.rule(f"{kind}: starting servers")
        servers = {
            "small": self.server(f"{kind}-small", "orderdesk", small),
            "big": self.server(f"{kind}-big", "orderdesk", big),
            "writes": self.server(f"{kind}-writes", "orderdesk", writes),
        }
        if kind == "postgres":
            servers["small x2"] = self.server(
                f"{kind}-small-x2", "orderdesk", small, processes=2
            )
        tracking = self.check_replies(servers["small"], small_ids.read_order_ids[0])
        self.check_replies(servers["big"], big_ids.read_order_ids[0])
        if self.floor_body is None:
            self.floor_body = self.work_dir / "floor-body.json"
            self.floor_body.write_bytes(tracking)
        floors = {"floor": self.server(f"{kind}-floor", "floor", None)}
        if kind == "postgres":
            floors["floor x2"] = self.server(
                f"{kind}-floor-x2", "floor", None, processes=2
            )

        files = {
            "small": self.read_files("small", kind, small_ids),
            "big": self.read_files("big", kind, big_ids),
        }
        if not self.options.skip_reads:
            phase.reads = self.read_targets(kind, servers, floors, files)
            self.run_rounds(phase.reads, f"{kind} reads")

        refund_file = self.write_targets(
            f"{kind}-refund-targets",
            [f"{order} {index}" for order, index in write_ids.refund_targets],
        )
        event_file = self.write_targets(
            f"{kind}-event-targets",
            [f"{order} {package}" for order, package in write_ids.event_targets],
        )
        phase.writes = [
            Target("floor", kind, floors["floor"], "tracking", files["small"]["order"]),
            Target("POST refunds", kind, servers["writes"], "refund", refund_file),
            Target(
                "POST tracking events", kind, servers["writes"], "event", event_file
            ),
        ]
        self.run_rounds(phase.writes, f"{kind} writes")
        self.check_write_targets(phase)
        for group in [*servers.values(), *floors.values()]:
            group.stop()

        if not self.options.skip_worker:
            phase.worker = self.run_worker(kind)
        return phase

    def read_files(self, role: str, kind: str, ids: SeedResult) -> dict[str, Path]:
        orders = self.write_targets(f"{kind}-{role}-orders", ids.read_order_ids)
        refunds = self.write_targets(
            f"{kind}-{role}-refund-orders", ids.refund_order_ids
        )
        return {"tracking": orders, "order": orders, "refunds": refunds}

    def read_targets(
        self,
        kind: str,
        servers: dict[str, ServerGroup],
        floors: dict[str, ServerGroup],
        files: dict[str, dict[str, Path]],
    ) -> list[Target]:
        names = {
            "tracking": "GET tracking",
            "refunds": "GET refunds",
            "order": "GET order",
        }
        targets = [
            Target("floor", kind, floors["floor"], "tracking", files["small"]["order"])
        ]
        sizes = {"small": self.options.small_orders, "big": self.options.big_orders}
        # Each read runs on the small database and right after it on the big one,
        # so that the two p50s of a round are taken side by side.
        for mode in READ_MODES:
            for role in ("small", "big"):
                targets.append(
                    Target(
                        f"{names[mode]} @{role}",
                        kind,
                        servers[role],
                        mode,
                        files[role][mode],
                        orders=sizes[role],
                    )
                )
        if "small x2" in servers:
            targets.append(
                Target(
                    "floor x2",
                    kind,
                    floors["floor x2"],
                    "tracking",
                    files["small"]["order"],
                )
            )
            for mode in READ_MODES:
                targets.append(
                    Target(
                        f"{names[mode]} @small x2",
                        kind,
                        servers["small x2"],
                        mode,
                        files["small"][mode],
                        orders=self.options.small_orders,
                    )
                )
        return targets

    def check_write_targets(self, phase: Phase) -> None:
        for target in phase.writes:
            if (
                target.mode in WRITE_MODES
                and target.offset > self.options.write_targets
            ):
                console.print(
                    f"[yellow]{target.name} used {target.offset} targets of "
                    f"{self.options.write_targets}: raise --write-targets[/yellow]"
                )

    def run_worker(self, kind: str) -> dict[str, Any]:
        console.rule(f"{kind}: worker")
        if self.smtp is None:
            self.smtp = smtp_sink(self.options.smtp)
        if self.receiver is None:
            self.receiver = self.server("receiver", "receiver", None)
        database = self.database(kind, "worker")
        result = measure_worker(
            database.url,
            self.work_dir,
            settings_for(database.url, self.work_dir),
            self.api_key,
            refunds=self.options.worker_refunds,
            webhooks=self.options.worker_webhooks,
            smtp=self.smtp,
            receiver=self.receiver,
            timeout=600,
        )
        summary = result.as_dict()
        console.print(
            f"  {kind:8} refunds (label + email) {summary['refunds_per_second']}/s, "
            f"webhooks {summary['webhooks_per_second']}/s, "
            f"SMTP server {summary['smtp_server']}"
        )
        return summary

    def cleanup(self) -> None:
        for group in self.servers:
            group.stop()
        if self.smtp is not None:
            self.smtp.stop()
        if not self.options.keep:
            for database in self.databases:
                try:
                    database.drop()
                except Exception as exc:  # noqa: BLE001 - report and go on cleaning
                    console.print(f"[red]could not drop {database.url}: {exc}[/red]")
            shutil.rmtree(self.work_dir, ignore_errors=True)


# Reporting


def median_of(results: list[WrkResult], name: str) -> float:
    return statistics.median(getattr(result, name) for result in results)


def summarize(target: Target) -> dict[str, Any]:
    return {
        "name": target.name,
        "database": target.database,
        "orders": target.orders,
        "processes": target.server.processes,
        "rps": round(median_of(target.results, "rps"), 1),
        "p50_ms": round(median_of(target.results, "p50_ms"), 3),
        "p99_ms": round(median_of(target.results, "p99_ms"), 3),
        "non_2xx": sum(result.non_2xx for result in target.results),
        "socket_errors": sum(result.socket_errors for result in target.results),
        "rounds": [result.as_dict() for result in target.results],
    }


def round_ratios(entry: dict[str, Any], base: dict[str, Any], name: str) -> list[float]:
    """Return entry's `name` over base's, round by round: the two were measured
    minutes apart at most, under the same load. A round where base's figure is 0
    (no request completed) gives NaN, which meets no goal."""
    return [
        round(mine[name] / theirs[name], 3) if theirs[name] else math.nan
        for mine, theirs in zip(entry["rounds"], base["rounds"], strict=True)
    ]


def median_ratio(entry: dict[str, Any], base: dict[str, Any], name: str) -> float:
    """Return the median over the rounds of entry's `name` over base's."""
    ratios = round_ratios(entry, base, name)
    if any(math.isnan(ratio) for ratio in ratios):
        return math.nan
    return round(statistics.median(ratios), 3)


def phase_summary(phase: Phase) -> dict[str, Any]:
    reads = [summarize(target) for target in phase.reads]
    writes = [summarize(target) for target in phase.writes]
    floor = _floor_of(reads + writes, "floor")
    # The reads and the writes each run their own floor first in every round.
    add_floor_ratios(reads)
    add_floor_ratios(writes)
    return {
        "database": phase.database,
        "floor": floor,
        "reads": reads,
        "writes": writes,
        "seeding": phase.seeding,
        "worker": phase.worker,
    }


def add_floor_ratios(entries: list[dict[str, Any]]) -> None:
    """Add to each entry its ratios to the floor run of the same list, round by
    round and as medians. A list without a floor is left as it is."""
    floor = _named(entries, "floor")
    if floor is None:
        return
    for entry in entries:
        entry["rps_ratios_by_round"] = round_ratios(entry, floor, "rps")
        entry["rps_ratio_to_floor"] = median_ratio(entry, floor, "rps")
        entry["p99_ratio_to_floor"] = median_ratio(entry, floor, "p99_ms")


def _floor_of(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Return the floor of a phase: the median over its floor runs, reads and writes."""
    runs = [
        run for entry in entries if entry["name"] == name for run in entry["rounds"]
    ]
    return {
        "rps": round(statistics.median(run["rps"] for run in runs), 1),
        "p50_ms": round(statistics.median(run["p50_ms"] for run in runs), 3),
        "p99_ms": round(statistics.median(run["p99_ms"] for run in runs), 3),
        "runs": len(runs),
    }


def _named(entries: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    for entry in entries:
        if entry["name"] == name:
            return entry
    return None


def _entry(summary: dict[str, Any], name: str) -> dict[str, Any] | None:
    return _named(summary["reads"] + summary["writes"], name)


def evaluate_goals(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return every goal with its value and whether it is met. A ratio's value is
    the median over the rounds of the ratio within each round."""
    goals: list[dict[str, Any]] = []

    def goal(
        name: str,
        value: float | None,
        target: str,
        met: bool | None,
        rounds: list[float] | None = None,
    ) -> None:
        goals.append(
            {
                "goal": name,
                "value": value,
                "target": target,
                "met": met,
                "rounds": rounds,
            }
        )

    for summary in phases:
        database = summary["database"]
        for name in ("GET tracking @small", "GET refunds @small"):
            entry = _entry(summary, name)
            if entry is None:
                continue
            ratio = entry["rps_ratio_to_floor"]
            rounds = entry["rps_ratios_by_round"]
            p99 = entry["p99_ratio_to_floor"]
            if database != "sqlite":
                # The read goals are set on SQLite; the other database is shown.
                goal(
                    f"{database}: {name} req/s vs floor (reference)",
                    ratio,
                    "-",
                    None,
                    rounds,
                )
                goal(f"{database}: {name} p99 vs floor (reference)", p99, "-", None)
                continue
            goal(
                f"{database}: {name} req/s vs floor",
                ratio,
                ">= 0.50",
                ratio >= 0.5,
                rounds,
            )
            goal(f"{database}: {name} p99 vs floor", p99, "<= 2.00", p99 <= 2.0)
        entry = _entry(summary, "POST refunds")
        if entry is not None:
            ratio = entry["rps_ratio_to_floor"]
            goal(
                f"{database}: POST refunds req/s vs floor",
                ratio,
                ">= 0.25",
                ratio >= 0.25,
                entry["rps_ratios_by_round"],
            )
        for mode in ("GET tracking", "GET refunds", "GET order"):
            small, big = (
                _entry(summary, f"{mode} @small"),
                _entry(summary, f"{mode} @big"),
            )
            if small and big:
                ratio = median_ratio(big, small, "p50_ms")
                sizes = f"{big['orders']:,} vs {small['orders']:,} orders"
                goal(
                    f"{database}: {mode} p50 {sizes}",
                    ratio,
                    "<= 1.25",
                    ratio <= 1.25,
                    round_ratios(big, small, "p50_ms"),
                )
        for mode in ("GET tracking", "GET refunds", "GET order"):
            one, two = (
                _entry(summary, f"{mode} @small"),
                _entry(summary, f"{mode} @small x2"),
            )
            if one and two:
                ratio = median_ratio(two, one, "rps")
                goal(
                    f"{database}: {mode} req/s 2 vs 1 process",
                    ratio,
                    ">= 1.60",
                    ratio >= 1.6,
                    round_ratios(two, one, "rps"),
                )
        floor_one, floor_two = _entry(summary, "floor"), _entry(summary, "floor x2")
        if floor_one and floor_two:
            ratio = median_ratio(floor_two, floor_one, "rps")
            goal(
                f"{database}: floor req/s 2 vs 1 process (reference)",
                ratio,
                "-",
                None,
                round_ratios(floor_two, floor_one, "rps"),
            )
        worker = summary.get("worker")
        if worker and worker.get("refunds_per_second") is not None:
            value = worker["refunds_per_second"]
            goal(
                f"{database}: worker refunds (label + email) per second",
                value,
                ">= 50",
                value >= 50,
            )
    return goals


def machine_info() -> dict[str, Any]:
    def command(*args: str) -> str:
        try:
            return subprocess.run(
                args, capture_output=True, text=True, check=False
            ).stdout.strip()
        except OSError:
            return ""

    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import sqlite3

    import fastapi
    import sqlalchemy
    import starlette
    import uvicorn

    try:
        import orjson

        orjson_version = orjson.__version__
    except ImportError:
        orjson_version = None
    return {
        "nproc": command("nproc"),
        "free_h": command("free", "-h"),
        "cpu_model": cpu,
        "python": platform.python_version(),
        "wrk": command("wrk", "-v").splitlines()[0] if command("wrk", "-v") else "",
        "sqlite": sqlite3.sqlite_version,
        "postgres": command(
            "psql", "-h", "127.0.0.1", "-U", "postgres", "-tAc", "SHOW server_version"
        ),
        "packages": {
            "fastapi": fastapi.__version__,
            "starlette": starlette.__version__,
            "uvicorn": uvicorn.__version__,
            "sqlalchemy": sqlalchemy.__version__,
            "orjson": orjson_version,
        },
        "uvicorn_loop_http": _uvicorn_choice(),
    }


def _uvicorn_choice() -> str:
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"{loop} + {http}"


def print_report(phases: list[dict[str, Any]], goals: list[dict[str, Any]]) -> None:
    for summary in phases:
        table = Table(
            title=f"{summary['database']} (medians of rounds; x floor: median of "
            "each round's ratio)"
        )
        for column in (
            "target",
            "orders",
            "procs",
            "req/s",
            "x floor",
            "p50 ms",
            "p99 ms",
            "p99 x floor",
            "non-2xx",
        ):
            table.add_column(column, justify="right")
        for entry in summary["reads"] + summary["writes"]:
            table.add_row(
                entry["name"],
                f"{entry['orders']:,}" if entry["orders"] else "",
                str(entry["processes"]),
                f"{entry['rps']:.0f}",
                f"{entry['rps_ratio_to_floor']:.2f}",
                f"{entry['p50_ms']:.2f}",
                f"{entry['p99_ms']:.2f}",
                f"{entry['p99_ratio_to_floor']:.2f}",
                str(entry["non_2xx"]),
            )
        console.print(table)
        if summary.get("worker"):
            console.print(f"worker: {summary['worker']}")
    table = Table(title="goals (medians of the ratios of each round)")
    for column in ("goal", "value", "rounds", "target", "met"):
        table.add_column(column)
    for item in goals:
        met = {True: "yes", False: "NO", None: "-"}[item["met"]]
        rounds = ", ".join(str(value) for value in item.get("rounds") or [])
        table.add_row(item["goal"], str(item["value"]), rounds, item["target"], met)
    console.print(table)


def _stop_on_sigterm(_signum: int, _frame: Any) -> None:
    # Turn SIGTERM into an exception so that servers stop and databases are dropped.
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # Seeding calls services that log each change; the run prints its own progress.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING)
    )
    run = BenchRun(options)
    started = datetime.now(UTC)
    try:
        for kind in options.databases:
            run.run_phase(kind)
    finally:
        run.cleanup()
    phases = [phase_summary(phase) for phase in run.phases]
    goals = evaluate_goals(phases)
    print_report(phases, goals)
    RESULTS_DIR.mkdir(exist_ok=True)
    output = RESULTS_DIR / f"{run.run_id}.json"
    output.write_text(
        json.dumps(
            {
                "run_id": run.run_id,
                "started_at": started.isoformat(),
                "minutes": round(
                    (datetime.now(UTC) - started) / timedelta(minutes=1), 1
                ),
                "command": " ".join(
                    ["python", "bench/run.py", *(argv or sys.argv[1:])]
                ),
                "options": options.__dict__,
                "machine": machine_info(),
                "load_average": run.load_samples,
                "phases": phases,
                "goals": goals,
            },
            indent=2,
        )
    )
    console.print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
