"""Fulfilment providers: who places a paid order and ships it.

A project names its provider in `Project.fulfilment_provider`; the job
`fulfilment.start` (enqueued when a payment completes) calls `start_fulfilment`.

- `manual`: nothing is placed. An operator records shipments through the API.
- `simulated`: places the order at once, splits it into packages and gives each a
  carrier tracking number. Each package then moves through label created, picked
  up, in transit, out for delivery (sometimes a failed attempt and a retry) and
  delivered, with one `fulfilment.simulated.advance` job per step. Steps are
  `simulated_step_seconds` apart, and the delivery window is revised as a
  carrier's would be.

Everything the simulation decides (package split, carrier, tracking number, whether
a delivery attempt fails, every event time) follows from the order id and the
package's creation time, so a step that runs twice records nothing new: packages
are found again by tracking number and events carry dedupe keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from orderdesk.auth.models import Project
from orderdesk.jobs.services import enqueue
from orderdesk.orders.models import LineItem, Order
from orderdesk.orders.services import record_event
from orderdesk.orders.statuses import PaymentState
from orderdesk.shipping import services
from orderdesk.shipping.carriers.names import DISPLAY_NAMES
from orderdesk.shipping.carriers.settings import read_setting
from orderdesk.shipping.models import Package
from orderdesk.shipping.statuses import TERMINAL_STATUSES, PackageStatus
from orderdesk.shipping.tracking_urls import tracking_url

log = structlog.get_logger(__name__)

ADVANCE_JOB = "fulfilment.simulated.advance"
DEFAULT_STEP_SECONDS = 20.0
MAX_PACKAGES = 3
ACTOR = "system"


def step_seconds(settings: Any) -> float:
    """Return the simulated clock's step; a value that is not a positive number
    falls back to the default."""
    value = read_setting(settings, "simulated_step_seconds", DEFAULT_STEP_SECONDS)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        log.error("simulated_step_seconds_invalid", value=str(value)[:40])
        return DEFAULT_STEP_SECONDS
    return seconds if 0 < seconds < float("inf") else DEFAULT_STEP_SECONDS


class FulfilmentProvider(Protocol):
    name: str

    def start(self, session: Session, order: Order, settings: Any) -> None:
        """Place a paid order. Must be idempotent: the job can run again."""
        ...


class ManualProvider:
    """An operator ships by hand and records shipments through the API."""

    name = "manual"

    def start(self, session: Session, order: Order, settings: Any) -> None:
        log.info("fulfilment_manual", order_id=order.id)


class SimulatedProvider:
    """Ships every order on a simulated carrier clock, for demos and tests."""

    name = "simulated"

    def start(self, session: Session, order: Order, settings: Any) -> None:
        created = []
        for planned in plan_packages(order):
            package = _find_package(session, order.id, planned.tracking_number)
            if package is None:
                package = services.record_package(
                    session,
                    order,
                    DISPLAY_NAMES[planned.carrier],
                    planned.tracking_number,
                    planned.line_items,
                    tracking_url=tracking_url(
                        planned.carrier, planned.tracking_number, settings
                    ),
                    actor=ACTOR,
                )
                created.append(package)
            advance_package(session, package, 0, settings)
        if created:
            record_event(
                session,
                order,
                "fulfilment.placed",
                ACTOR,
                data={"provider": self.name, "packages": [p.id for p in created]},
            )
            log.info("fulfilment_placed", order_id=order.id, packages=len(created))


PROVIDERS: dict[str, FulfilmentProvider] = {
    provider.name: provider for provider in (ManualProvider(), SimulatedProvider())
}


def start_fulfilment(session: Session, order_id: str, settings: Any) -> None:
    """Hand a paid order to its project's provider; an unpaid order is left alone."""
    order = session.get(Order, order_id)
    if order is None:
        log.error("fulfilment_order_missing", order_id=order_id)
        return
    if order.payment_state != PaymentState.COMPLETED:
        log.warning(
            "fulfilment_order_unpaid", order_id=order_id, payment=order.payment_state
        )
        return
    project = session.get(Project, order.project_id)
    name = project.fulfilment_provider if project else "manual"
    provider = PROVIDERS.get(name)
    if provider is None:
        log.error("fulfilment_provider_unknown", order_id=order_id, provider=name)
        return
    provider.start(session, order, settings)


# Planning: packages, carriers and tracking numbers, all from the order id.


@dataclass(frozen=True)
class PlannedPackage:
    line_items: list[int]
    carrier: str
    tracking_number: str


def _digest(*parts: object) -> int:
    text = "|".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")


def plan_packages(order: Order) -> list[PlannedPackage]:
    """Split the order into 1 to 3 packages. An order of a single line item with
    quantity 2 or more is split over two packages for about one order id in three."""
    items: list[LineItem] = sorted(order.line_items, key=lambda item: item.index)
    if not items:
        return []
    choice = _digest("split", order.id)
    count = 1 + choice % min(MAX_PACKAGES, len(items))
    groups: list[list[int]] = [[] for _ in range(count)]
    ranked = sorted(items, key=lambda item: _digest("rank", order.id, item.index))
    for position, item in enumerate(ranked):
        groups[position % count].append(item.index)
    if len(items) == 1 and items[0].quantity >= 2 and choice % 3 == 0:
        groups = [[items[0].index], [items[0].index]]

    locators_by_index = {item.index: item.locator for item in items}
    planned = []
    for number, group in enumerate(groups):
        locators = [locators_by_index[index] for index in group]
        carrier = _choose_carrier(order.id, number, locators)
        tracking_number = make_tracking_number(carrier, order.id, number)
        planned.append(PlannedPackage(sorted(group), carrier, tracking_number))
    return planned


def _choose_carrier(order_id: str, number: int, locators: list[str]) -> str:
    if all(locator.startswith("amazon:") for locator in locators):
        return "amazon"
    return ("ups", "usps")[_digest("carrier", order_id, number) % 2]


def make_tracking_number(carrier: str, order_id: str, number: int) -> str:
    """Return a number in the carrier's format: Amazon TBA + 12 digits, UPS 1Z + 16
    with its check digit, USPS 22 digits with its mod-10 check digit."""
    seed = _digest("tracking", carrier, order_id, number)
    if carrier == "amazon":
        return f"TBA{seed % 10**12:012d}"
    if carrier == "ups":
        shipper = _base36(seed, 6)
        body = f"{shipper}{'01' if seed % 2 else '03'}{(seed >> 40) % 10**7:07d}"
        return f"1Z{body}{ups_check_digit(body)}"
    body = f"94001{(seed >> 8) % 10**16:016d}"
    return f"{body}{usps_check_digit(body)}"


def _base36(value: int, length: int) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    characters = []
    for _ in range(length):
        value, remainder = divmod(value, 36)
        characters.append(alphabet[remainder])
    return "".join(characters)


def ups_check_digit(body: str) -> int:
    """Check digit of the 15 characters after "1Z": letters count as (code - 63) mod
    10, odd positions count twice."""
    values = [int(c) if c.isdigit() else (ord(c) - 63) % 10 for c in body.upper()]
    total = sum(values[0::2]) + 2 * sum(values[1::2])
    return (10 - total % 10) % 10


def usps_check_digit(body: str) -> int:
    """GS1 mod-10 check digit, as USPS uses for 22-digit IMpb numbers: digits
    weigh 3 and 1 alternately from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


# Advancing: the steps of one package and their jobs.


@dataclass(frozen=True)
class Step:
    status: PackageStatus
    # In units of simulated_step_seconds after the package was created.
    at: float
    description: str
    place: str
    # The delivery window this event reports, in the same units; None keeps it.
    window: tuple[float, float] | None


def plan_steps(package: Package, destination: str) -> list[Step]:
    """Return the steps of the package's journey. About one package in four fails its
    first delivery attempt."""
    origin, hub = "Reno, NV, US", "Salt Lake City, UT, US"
    steps = [
        Step(PackageStatus.PENDING, 0, "Shipping label created", origin, (3, 6)),
        Step(PackageStatus.SHIPPED, 1, "Picked up by the carrier", origin, (3, 5)),
        Step(PackageStatus.SHIPPED, 2, "Arrived at carrier facility", hub, None),
        Step(
            PackageStatus.OUT_FOR_DELIVERY,
            3,
            "Out for delivery",
            destination,
            (3.25, 4),
        ),
    ]
    if _digest("attempt", package.tracking_number) % 4 == 0:
        steps += [
            Step(
                PackageStatus.DELIVERY_ATTEMPTED,
                3.5,
                "Delivery attempted: no one available to sign. Next attempt "
                "on the next business day",
                destination,
                (5, 6),
            ),
            Step(
                PackageStatus.OUT_FOR_DELIVERY,
                5,
                "Out for delivery",
                destination,
                (5.25, 5.75),
            ),
            Step(
                PackageStatus.DELIVERED,
                5.5,
                "Delivered, signed by the recipient",
                destination,
                None,
            ),
        ]
    else:
        steps.append(
            Step(
                PackageStatus.DELIVERED,
                3.75,
                "Delivered, left at the front door",
                destination,
                None,
            )
        )
    return steps


def advance_package(
    session: Session, package: Package, step: int, settings: Any
) -> None:
    """Record step `step` of a simulated package and schedule the next one."""
    order = session.get(Order, package.order_id)
    if order is None:
        return
    steps = plan_steps(package, _destination(order))
    if step >= len(steps):
        return
    if step > 0 and package.status in TERMINAL_STATUSES:
        log.info(
            "fulfilment_simulation_stopped",
            package_id=package.id,
            status=package.status,
        )
        return
    seconds = step_seconds(settings)
    anchor = package.created_at
    current = steps[step]
    services.record_tracking_event(
        session,
        package,
        current.status,
        _at(anchor, current.at, seconds),
        current.description,
        current.place,
        _window(anchor, current.window, seconds),
        dedupe_key=f"simulated:{step}",
        source="simulated",
        actor=ACTOR,
    )
    if step + 1 < len(steps):
        enqueue(
            session,
            ADVANCE_JOB,
            {"package_id": package.id, "step": step + 1},
            run_at=_at(anchor, steps[step + 1].at, seconds),
            dedupe_key=f"{ADVANCE_JOB}:{package.id}:{step + 1}",
        )


def advance_simulated(
    session: Session, package_id: str, step: int, settings: Any
) -> None:
    package = session.get(Package, package_id)
    if package is None:
        log.error("fulfilment_package_missing", package_id=package_id)
        return
    advance_package(session, package, step, settings)


def _at(anchor: datetime, units: float, seconds: float) -> datetime:
    return anchor + timedelta(seconds=units * seconds)


def _window(
    anchor: datetime, window: tuple[float, float] | None, seconds: float
) -> services.TimeRange | None:
    if window is None:
        return None
    return services.TimeRange(
        _at(anchor, window[0], seconds), _at(anchor, window[1], seconds)
    )


def _destination(order: Order) -> str:
    address = (order.recipient or {}).get("physicalAddress") or {}
    parts = [address.get(name) for name in ("city", "state", "country")]
    return ", ".join(str(part) for part in parts if part) or "Destination"


def _find_package(
    session: Session, order_id: str, tracking_number: str
) -> Package | None:
    return session.scalar(
        select(Package).where(
            Package.order_id == order_id, Package.tracking_number == tracking_number
        )
    )
