from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, ValidationError

from orderdesk.timefmt import Rfc3339Datetime, iso, parse_rfc3339


class Stamped(BaseModel):
    at: Rfc3339Datetime


def test_iso_milliseconds_and_z() -> None:
    value = datetime(2026, 3, 1, 17, 5, 9, 120999, tzinfo=UTC)
    assert iso(value) == "2026-03-01T17:05:09.120Z"


def test_iso_converts_offset_to_utc() -> None:
    value = datetime(2026, 3, 1, 19, 5, 9, tzinfo=timezone(timedelta(hours=2)))
    assert iso(value) == "2026-03-01T17:05:09.000Z"


def test_iso_four_digit_year() -> None:
    value = datetime(999, 5, 1, 8, 0, 0, 1500, tzinfo=UTC)
    assert iso(value) == "0999-05-01T08:00:00.001Z"


def test_iso_round_trips_parse() -> None:
    value = datetime(999, 5, 1, 8, 0, 0, 1000, tzinfo=UTC)
    assert parse_rfc3339(iso(value)) == value


def test_iso_keeps_none() -> None:
    assert iso(None) is None


def test_iso_rejects_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        iso(datetime(2026, 3, 1))  # noqa: DTZ001 - the case under test


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T17:05:09Z", datetime(2026, 3, 1, 17, 5, 9, tzinfo=UTC)),
        ("2026-03-01t17:05:09z", datetime(2026, 3, 1, 17, 5, 9, tzinfo=UTC)),
        ("2026-03-01 17:05:09Z", datetime(2026, 3, 1, 17, 5, 9, tzinfo=UTC)),
        ("2026-03-01T17:05:09.1Z", datetime(2026, 3, 1, 17, 5, 9, 100000, tzinfo=UTC)),
        (
            "2026-03-01T17:05:09.123456789Z",
            datetime(2026, 3, 1, 17, 5, 9, 123456, tzinfo=UTC),
        ),
        ("2026-03-01T19:05:09+02:00", datetime(2026, 3, 1, 17, 5, 9, tzinfo=UTC)),
        ("2026-03-01T12:35:09-04:30", datetime(2026, 3, 1, 17, 5, 9, tzinfo=UTC)),
        ("2026-03-01T17:05:09-00:00", datetime(2026, 3, 1, 17, 5, 9, tzinfo=UTC)),
        ("2026-03-02T00:05:09+07:00", datetime(2026, 3, 1, 17, 5, 9, tzinfo=UTC)),
    ],
)
def test_parse_accepts_offsets(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-03-01T17:05:09", "no UTC offset"),
        ("2026-03-01T17:05:09.120", "no UTC offset"),
        ("2026-03-01", "not an RFC 3339 time"),
        ("2026-03-01T17:05Z", "not an RFC 3339 time"),
        ("2026-3-1T17:05:09Z", "not an RFC 3339 time"),
        ("2026-03-01T17:05:09+0200", "not an RFC 3339 time"),
        ("2026-03-01T17:05:09+02", "not an RFC 3339 time"),
        ("2026-03-01T17:05:09.Z", "not an RFC 3339 time"),
        ("2026-03-01T17:05:09.1234567890Z", "not an RFC 3339 time"),
        (" 2026-03-01T17:05:09Z", "not an RFC 3339 time"),
        ("2026-03-01T17:05:09Z ", "not an RFC 3339 time"),
        ("1772384709", "not an RFC 3339 time"),
        ("", "not an RFC 3339 time"),
        ("2026-02-30T17:05:09Z", "not a valid time"),
        ("2026-03-01T24:00:00Z", "not a valid time"),
        ("2026-03-01T17:05:60Z", "not a valid time"),
        ("2026-03-01T17:05:09+24:00", "not a valid time"),
        ("2026-03-01T17:05:09+02:60", "not a valid time"),
        ("0000-01-01T00:00:00Z", "not a valid time"),
        ("9999-12-31T23:59:59-01:00", "not a valid time"),
        ("２０２６-03-01T17:05:09Z", "not an RFC 3339 time"),
    ],
)
def test_parse_rejects_bad_times(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_rfc3339(text)


def test_field_type_round_trip() -> None:
    stamped = Stamped.model_validate_json('{"at": "2026-03-01T19:05:09.5+02:00"}')
    assert stamped.at == datetime(2026, 3, 1, 17, 5, 9, 500000, tzinfo=UTC)
    assert stamped.model_dump(mode="json") == {"at": "2026-03-01T17:05:09.500Z"}


@pytest.mark.parametrize("raw", ["1772384709", "null", "true", '"2026-03-01T17:05:09"'])
def test_field_type_rejects_non_rfc3339(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Stamped.model_validate_json('{"at": ' + raw + "}")
    assert caught.value.errors()[0]["loc"] == ("at",)
    assert "offset" in caught.value.errors()[0]["msg"]
