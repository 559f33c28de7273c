"""Apply parsed carrier updates to packages: match each parcel, record its events.

Each event goes through `shipping.services.record_tracking_event` with the provider's
dedupe key, so a resent or reordered feed stores every event once and the status
follows the event times. Nothing here commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orderdesk.shipping import services
from orderdesk.shipping.carriers.base import (
    CarrierEvent,
    CarrierUpdate,
    DeliveryEstimate,
)
from orderdesk.shipping.carriers.names import carrier_code
from orderdesk.shipping.carriers.settings import read_setting
from orderdesk.shipping.exceptions import InvalidShipment
from orderdesk.shipping.models import Package

log = structlog.get_logger(__name__)

SECRET_SETTINGS = (
    "carrier_easypost_secret",
    "carrier_shippo_secret",
    "carrier_shippo_token",
    "carrier_aftership_secret",
)


@dataclass
class IngestResult:
    """Counts of what one webhook changed."""

    recorded: int = 0
    duplicates: int = 0
    skipped: int = 0
    unmatched: list[str] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {
            "received": True,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "unmatched": len(self.unmatched),
        }


def carrier_secrets(settings: Any) -> dict[str, str | None]:
    """Read the webhook secrets from settings; a missing or empty one is None."""
    return {name: read_setting(settings, name) for name in SECRET_SETTINGS}


def find_carrier_package(
    session: Session, carrier: str | None, tracking_number: str
) -> Package | None:
    """Find the package a carrier feed names, by tracking number and carrier.

    The carrier decides between packages sharing a number. A single package with
    the number matches even when the carrier's name differs, because providers
    spell carriers their own way ("amazon-fba-us" for Amazon), and the mismatch is
    logged.
    """
    try:
        number = services.normalize_tracking_number(tracking_number)
    except InvalidShipment:
        return None
    candidates = list(
        session.scalars(
            select(Package).where(Package.tracking_number == number).limit(10)
        )
    )
    code = carrier_code(carrier)
    if code is None:
        return candidates[0] if len(candidates) == 1 else None
    same_carrier = [p for p in candidates if carrier_code(p.carrier_name) == code]
    if len(same_carrier) == 1:
        return same_carrier[0]
    if len(candidates) == 1 and not same_carrier:
        log.warning(
            "carrier_name_mismatch",
            tracking_number=number,
            feed_carrier=carrier,
            package_carrier=candidates[0].carrier_name,
            package_id=candidates[0].id,
        )
        return candidates[0]
    if len(candidates) > 1:
        log.warning(
            "carrier_tracking_number_ambiguous", tracking_number=number, carrier=carrier
        )
    return None


def record_carrier_updates(
    session: Session, provider: str, updates: list[CarrierUpdate]
) -> IngestResult:
    """Record every update's events on its package; unknown parcels are logged."""
    result = IngestResult()
    actor = f"carrier:{provider}"
    for update in updates:
        result.skipped += update.skipped
        package = find_carrier_package(session, update.carrier, update.tracking_number)
        if package is None:
            log.warning(
                "carrier_tracking_number_unknown",
                provider=provider,
                carrier=update.carrier,
                tracking_number=update.tracking_number,
            )
            result.unmatched.append(update.tracking_number)
            continue
        _record_events(session, package, update, actor, result)
    return result


def _record_events(
    session: Session,
    package: Package,
    update: CarrierUpdate,
    actor: str,
    result: IngestResult,
) -> None:
    last = len(update.events) - 1
    for position, event in enumerate(update.events):
        # The estimate is the feed's latest, so it goes with the newest event.
        estimate = update.estimate if position == last else None
        outcome = _record_event(
            session, package, event, estimate, update.provider, actor
        )
        if outcome == "recorded":
            result.recorded += 1
        elif outcome == "duplicate":
            result.duplicates += 1
        else:
            result.skipped += 1
    # TODO: an estimate that arrives with no new event is not stored yet, because the
    # shipment services update the estimate only together with an event.


def _record_event(
    session: Session,
    package: Package,
    event: CarrierEvent,
    estimate: DeliveryEstimate | None,
    provider: str,
    actor: str,
) -> str:
    time_range = (
        services.TimeRange(estimate.lower_bound, estimate.upper_bound)
        if estimate
        else None
    )
    try:
        # A savepoint, so that a concurrent copy of the same event (caught by the
        # unique dedupe key) rolls back this event alone.
        with session.begin_nested():
            update = services.record_tracking_event(
                session,
                package,
                event.status,
                event.occurred_at,
                event.description,
                event.location,
                time_range,
                dedupe_key=event.dedupe_key,
                source=provider,
                raw=event.raw,
                actor=actor,
            )
    except IntegrityError:
        log.info(
            "carrier_event_concurrent_duplicate",
            package_id=package.id,
            provider=provider,
        )
        return "duplicate"
    except InvalidShipment as exc:
        log.warning(
            "carrier_event_rejected",
            package_id=package.id,
            provider=provider,
            error=exc.message,
        )
        return "skipped"
    return "recorded" if update.created else "duplicate"
