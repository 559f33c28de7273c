"""Look up catalog products and import catalog files."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orderdesk.catalog.locators import parse_locator
from orderdesk.catalog.models import Product
from orderdesk.db.base import utcnow
from orderdesk.errors import InvalidInput

FIELDS = ("locator", "name", "description", "image_url", "price", "shipping", "stock")
MAX_PRICE = Decimal("100000")


def get_product(session: Session, locator_key: str) -> Product | None:
    return session.scalar(select(Product).where(Product.locator == locator_key))


def find_products(session: Session, keys: Iterable[str]) -> dict[str, Product]:
    keys = list(set(keys))
    if not keys:
        return {}
    rows = session.scalars(select(Product).where(Product.locator.in_(keys)))
    return {product.locator: product for product in rows}


def list_products(session: Session) -> list[Product]:
    return list(session.scalars(select(Product).order_by(Product.locator)))


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0


def import_rows(session: Session, rows: Iterable[dict[str, Any]]) -> ImportResult:
    """Insert or update products; any invalid row aborts the import with its number."""
    result = ImportResult()
    for number, row in enumerate(rows, start=1):
        values = _validate_row(number, row)
        product = get_product(session, values["locator"])
        if product is None:
            session.add(Product(**values))
            result.created += 1
        else:
            for field, value in values.items():
                setattr(product, field, value)
            product.updated_at = utcnow()
            result.updated += 1
        session.flush()
    return result


def read_catalog_file(path: Path) -> list[dict[str, Any]]:
    """Read a CSV (header row with FIELDS) or JSON (a list of objects) catalog."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict) and "products" in data:
            data = data["products"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InvalidInput(f"{path} must hold a JSON list of product objects.")
        return data
    return list(csv.DictReader(text.splitlines()))


def sample_catalog_rows() -> list[dict[str, Any]]:
    source = resources.files("orderdesk.catalog").joinpath("sample_catalog.json")
    return list(json.loads(source.read_text(encoding="utf-8")))


def _validate_row(number: int, row: dict[str, Any]) -> dict[str, Any]:
    missing = [
        f for f in ("locator", "name", "price") if not str(row.get(f) or "").strip()
    ]
    if missing:
        raise InvalidInput(f"Catalog row {number} is missing {', '.join(missing)}.")
    locator = parse_locator(str(row["locator"]).strip()).key
    return {
        "locator": locator,
        "name": str(row["name"]).strip()[:300],
        "description": str(row.get("description") or "").strip(),
        "image_url": str(row.get("image_url") or "").strip()[:1000],
        "price": _money(number, "price", row["price"], allow_zero=False),
        "shipping": _money(
            number, "shipping", row.get("shipping") or "0", allow_zero=True
        ),
        "stock": _stock(number, row.get("stock", 0)),
    }


def _money(number: int, field: str, raw: Any, *, allow_zero: bool) -> Decimal:
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation as exc:
        raise InvalidInput(
            f"Catalog row {number}: {field} {raw!r} is not a number."
        ) from exc
    if not value.is_finite() or value < 0 or (value == 0 and not allow_zero):
        raise InvalidInput(f"Catalog row {number}: {field} {raw!r} must be above zero.")
    if value > MAX_PRICE or value != value.quantize(Decimal("0.01")):
        raise InvalidInput(
            f"Catalog row {number}: {field} {raw!r} must have at most 2 decimals and "
            f"be at most {MAX_PRICE}."
        )
    return value.quantize(Decimal("0.01"))


def _stock(number: int, raw: Any) -> int:
    try:
        value = int(str(raw).strip() or "0")
    except ValueError as exc:
        raise InvalidInput(
            f"Catalog row {number}: stock {raw!r} is not an integer."
        ) from exc
    if value < 0:
        raise InvalidInput(f"Catalog row {number}: stock {raw!r} is negative.")
    return value


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
