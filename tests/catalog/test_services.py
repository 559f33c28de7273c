import json
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select

from orderdesk.catalog.models import Product
from orderdesk.catalog.pricing import line_charges, sales_tax_rate
from orderdesk.catalog.services import (
    get_product,
    import_rows,
    read_catalog_file,
    sample_catalog_rows,
)
from orderdesk.errors import InvalidInput
from orderdesk.runtime import Runtime


def test_sample_catalog_imports(runtime: Runtime) -> None:
    with runtime.session_factory() as session, session.begin():
        result = import_rows(session, sample_catalog_rows())
    assert result.created >= 10
    with runtime.session_factory() as session, session.begin():
        again = import_rows(session, sample_catalog_rows())
        count = session.scalar(select(func.count()).select_from(Product))
    assert again.created == 0
    assert again.updated == result.created
    assert count == result.created


def test_csv_and_json_files(runtime: Runtime, tmp_path: Path) -> None:
    csv_file = tmp_path / "catalog.csv"
    csv_file.write_text(
        "locator,name,description,image_url,price,shipping,stock\n"
        "amazon:https://www.amazon.com/dp/B000000001,Lamp,Desk lamp,,19.99,2.50,7\n"
    )
    json_file = tmp_path / "catalog.json"
    json_file.write_text(
        json.dumps([{"locator": "amazon:B000000002", "name": "Pen", "price": 3}])
    )
    with runtime.session_factory() as session, session.begin():
        import_rows(session, read_catalog_file(csv_file))
        import_rows(session, read_catalog_file(json_file))
    with runtime.session_factory() as session:
        lamp = get_product(session, "amazon:B000000001")
        pen = get_product(session, "amazon:B000000002")
    assert lamp is not None and pen is not None
    assert lamp.price == Decimal("19.99")
    assert lamp.shipping == Decimal("2.50")
    assert lamp.stock == 7
    assert pen.price == Decimal("3.00")
    assert pen.stock == 0


@pytest.mark.parametrize(
    "row",
    [
        {"locator": "amazon:B000000001", "name": "x", "price": "-1"},
        {"locator": "amazon:B000000001", "name": "x", "price": "1.001"},
        {"locator": "amazon:B000000001", "name": "x", "price": "abc"},
        {"locator": "amazon:B000000001", "name": "x", "price": "NaN"},
        {"locator": "amazon:B000000001", "name": "", "price": "1"},
        {"locator": "nowhere:1", "name": "x", "price": "1"},
        {"locator": "amazon:B000000001", "name": "x", "price": "1", "stock": "-3"},
    ],
)
def test_invalid_row_rejected(runtime: Runtime, row: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        with runtime.session_factory() as session, session.begin():
            import_rows(session, [row])
    with runtime.session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Product)) == 0


def test_tax_rounds_half_up_per_line() -> None:
    # 3 x 0.50 = 1.50 at 5% is 0.075, which rounds half-up to 0.08.
    charges = line_charges(Decimal("0.50"), Decimal("1.00"), 3, Decimal("0.05"))
    assert charges.sales_tax == Decimal("0.08")
    assert charges.shipping == Decimal("3.00")
    assert charges.total == Decimal("4.58")


def test_tax_rate_only_for_us_states() -> None:
    rates = {"NY": Decimal("0.085")}
    assert sales_tax_rate(rates, "US", "ny") == Decimal("0.085")
    assert sales_tax_rate(rates, "US", "OR") == Decimal("0")
    assert sales_tax_rate(rates, "CA", "ON") == Decimal("0")
