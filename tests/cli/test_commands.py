"""The command line against a real database, through typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import TEST_SECRET
from typer.testing import CliRunner

from orderdesk.cli import app

runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORDERDESK_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("ORDERDESK_TREASURY_SECRET", TEST_SECRET)
    monkeypatch.setenv("ORDERDESK_DATA_DIR", str(tmp_path / "var"))
    return tmp_path


def test_keys_create_prints_key_last(cli_env: Path) -> None:
    result = runner.invoke(
        app, ["keys", "create", "--project", "shop", "--scopes", "orders.read"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1].startswith("sk_development_")


def test_keys_create_rejects_unknown_scope(cli_env: Path) -> None:
    result = runner.invoke(
        app, ["keys", "create", "--project", "shop", "--scopes", "orders.all"]
    )
    assert result.exit_code == 1
    assert "orders.all" in result.output


def test_keys_revoke_unknown(cli_env: Path) -> None:
    result = runner.invoke(app, ["keys", "revoke", "nope"])
    assert result.exit_code == 1
    assert "No API key" in result.output


def test_catalog_import_and_list(cli_env: Path) -> None:
    catalog = cli_env / "catalog.csv"
    catalog.write_text(
        "locator,name,price,shipping,stock\namazon:B000000001,Lamp,19.99,2,5\n"
    )
    imported = runner.invoke(app, ["catalog", "import", str(catalog)])
    assert imported.exit_code == 0, imported.output
    listed = runner.invoke(app, ["catalog", "list"])
    assert "amazon:B000000001" in listed.stdout


def test_catalog_import_bad_row(cli_env: Path) -> None:
    catalog = cli_env / "catalog.csv"
    catalog.write_text("locator,name,price\namazon:B000000001,Lamp,-4\n")
    result = runner.invoke(app, ["catalog", "import", str(catalog)])
    assert result.exit_code == 1
    assert "row 1" in result.output


def test_orders_list_json_empty(cli_env: Path) -> None:
    runner.invoke(
        app, ["keys", "create", "--project", "demo", "--scopes", "orders.read"]
    )
    result = runner.invoke(app, ["orders", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"data": [], "nextCursor": None}


def test_orders_show_unknown(cli_env: Path) -> None:
    result = runner.invoke(app, ["orders", "show", "nope"])
    assert result.exit_code == 1
    assert "No order" in result.output


def test_jobs_list_json(cli_env: Path) -> None:
    result = runner.invoke(app, ["jobs", "list", "--failed", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_jobs_retry_unknown(cli_env: Path) -> None:
    result = runner.invoke(app, ["jobs", "retry", "999"])
    assert result.exit_code == 1


def test_keys_list_json(cli_env: Path) -> None:
    runner.invoke(
        app, ["keys", "create", "--project", "shop", "--scopes", "orders.read"]
    )
    result = runner.invoke(app, ["keys", "list", "--json"])
    assert result.exit_code == 0, result.output
    keys = json.loads(result.stdout)
    assert len(keys) == 1
    assert keys[0]["scopes"] == ["orders.read"]
    assert keys[0]["revokedAt"] is None


def test_catalog_list_json(cli_env: Path) -> None:
    catalog = cli_env / "catalog.json"
    catalog.write_text(
        json.dumps([{"locator": "amazon:B000000003", "name": "Cup", "price": "4.5"}])
    )
    runner.invoke(app, ["catalog", "import", str(catalog)])
    result = runner.invoke(app, ["catalog", "list", "--json"])
    assert json.loads(result.stdout)[0]["price"] == "4.50"
