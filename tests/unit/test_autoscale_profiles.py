"""Profile selection: fixed dates, weekly recurrences in time zones, day/hour and DST boundaries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from localvmss.autoscale.engine import evaluate, latest_recurrence_start, select_profile
from localvmss.autoscale.settings import AutoscaleSetting, parse_autoscale_setting

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


def cap(n: int) -> dict[str, int]:
    return {"minimum": n, "maximum": n, "default": n}


def recurring(name: str, tz: str, days: list[str], hours: list[int], minutes: list[int], n: int) -> dict[str, Any]:
    return {
        "name": name,
        "capacity": cap(n),
        "recurrence": {
            "frequency": "Week",
            "schedule": {"timeZone": tz, "days": days, "hours": hours, "minutes": minutes},
        },
    }


def fixed(name: str, tz: str | None, start: str, end: str, n: int) -> dict[str, Any]:
    fd: dict[str, Any] = {"start": start, "end": end}
    if tz is not None:
        fd["timeZone"] = tz
    return {"name": name, "capacity": cap(n), "fixedDate": fd}


def make(*profiles: dict[str, Any]) -> AutoscaleSetting:
    return parse_autoscale_setting({"targetResourceName": "web", "profiles": list(profiles)})


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


EUROPE = make(
    {"name": "default", "capacity": cap(1)},
    recurring("morning", "W. Europe Standard Time", WEEKDAYS, [8], [0], 4),
    recurring("evening", "W. Europe Standard Time", WEEKDAYS, [18], [30], 2),
    fixed("black-friday", "Eastern Standard Time", "2024-11-29T00:00:00", "2024-11-30T00:00:00", 9),
)


@pytest.mark.parametrize(
    "now,expected",
    [
        # winter, CET = UTC+1
        (utc(2024, 1, 8, 6, 59), "evening"),  # Mon 07:59 local: Friday evening still runs
        (utc(2024, 1, 8, 7, 0), "morning"),  # Mon 08:00 local: exactly at the start
        (utc(2024, 1, 8, 17, 29), "morning"),
        (utc(2024, 1, 8, 17, 30), "evening"),  # 18:30 local
        (utc(2024, 1, 6, 12, 0), "evening"),  # Saturday: Friday's evening profile runs all weekend
        (utc(2024, 1, 7, 23, 59), "evening"),  # Sunday night, local Monday 00:59
        # summer, CEST = UTC+2: the same wall times are an hour earlier in UTC
        (utc(2024, 7, 1, 5, 59), "evening"),
        (utc(2024, 7, 1, 6, 0), "morning"),
        (utc(2024, 7, 1, 16, 30), "evening"),
        # the Monday after the spring-forward Sunday (2024-03-31)
        (utc(2024, 4, 1, 6, 0), "morning"),
        (utc(2024, 4, 1, 5, 59), "evening"),
        # the Monday after fall-back (2024-10-27)
        (utc(2024, 10, 28, 7, 0), "morning"),
        (utc(2024, 10, 28, 6, 59), "evening"),
        # fixed date in New York (EST = UTC-5) wins over every recurrence
        (utc(2024, 11, 29, 4, 59), "evening"),  # 05:59 CET Friday: Thursday evening
        (utc(2024, 11, 29, 5, 0), "black-friday"),
        (utc(2024, 11, 29, 20, 0), "black-friday"),
        (utc(2024, 11, 30, 4, 59), "black-friday"),
        (utc(2024, 11, 30, 5, 0), "evening"),  # end is exclusive
    ],
)
def test_europe_schedule(now: datetime, expected: str) -> None:
    assert select_profile(EUROPE, now).name == expected


WORLD = make(
    recurring("tokyo", "Tokyo Standard Time", ["Monday"], [9], [0], 2),
    recurring("pacific", "Pacific Standard Time", ["Monday"], [9], [0], 3),
    recurring("india", "India Standard Time", ["Saturday"], [0], [0], 4),
    recurring("sydney", "Australia/Sydney", ["Wednesday"], [12], [0], 5),
)


@pytest.mark.parametrize(
    "now,expected",
    [
        # Tokyo Mon 09:00 = Mon 00:00 UTC; Pacific Mon 09:00 PST = Mon 17:00 UTC
        (utc(2024, 1, 8, 0, 0), "tokyo"),
        (utc(2024, 1, 7, 23, 59), "india"),  # India started Friday 18:30 UTC
        (utc(2024, 1, 8, 16, 59), "tokyo"),
        (utc(2024, 1, 8, 17, 0), "pacific"),
        # US DST started 2024-03-10: Pacific Mon 09:00 PDT = 16:00 UTC
        (utc(2024, 3, 11, 15, 59), "tokyo"),
        (utc(2024, 3, 11, 16, 0), "pacific"),
        # India (UTC+5:30) Saturday 00:00 = Friday 18:30 UTC: a day boundary in UTC
        (utc(2024, 1, 12, 18, 29), "sydney"),
        (utc(2024, 1, 12, 18, 30), "india"),
        # Sydney (UTC+11 in January) Wednesday 12:00 = Wednesday 01:00 UTC
        (utc(2024, 1, 10, 0, 59), "pacific"),
        (utc(2024, 1, 10, 1, 0), "sydney"),
        # Sydney in July (UTC+10): 02:00 UTC
        (utc(2024, 7, 10, 1, 59), "pacific"),
        (utc(2024, 7, 10, 2, 0), "sydney"),
    ],
)
def test_world_schedule(now: datetime, expected: str) -> None:
    assert select_profile(WORLD, now).name == expected


@pytest.mark.parametrize(
    "tz,day,hour,minute,now,expected_start",
    [
        # plain winter/summer offsets
        ("W. Europe Standard Time", "Monday", 8, 0, utc(2024, 1, 10, 0, 0), utc(2024, 1, 8, 7, 0)),
        ("W. Europe Standard Time", "Monday", 8, 0, utc(2024, 7, 3, 0, 0), utc(2024, 7, 1, 6, 0)),
        # a start exactly now counts
        ("UTC", "Wednesday", 0, 0, utc(2024, 1, 10, 0, 0), utc(2024, 1, 10, 0, 0)),
        # a start one minute in the future: last week's
        ("UTC", "Wednesday", 0, 1, utc(2024, 1, 10, 0, 0), utc(2024, 1, 3, 0, 1)),
        # spring forward, Europe 2024-03-31 02:00 -> 03:00: 02:30 does not exist, happens at 03:30 CEST
        ("Europe/Amsterdam", "Sunday", 2, 30, utc(2024, 3, 31, 1, 30), utc(2024, 3, 31, 1, 30)),
        ("Europe/Amsterdam", "Sunday", 2, 30, utc(2024, 3, 31, 1, 29), utc(2024, 3, 24, 1, 30)),
        # fall back, Europe 2024-10-27 03:00 -> 02:00: 02:30 happens twice, the first (CEST) counts
        ("Europe/Amsterdam", "Sunday", 2, 30, utc(2024, 10, 27, 0, 30), utc(2024, 10, 27, 0, 30)),
        ("Europe/Amsterdam", "Sunday", 2, 30, utc(2024, 10, 27, 1, 45), utc(2024, 10, 27, 0, 30)),
        ("Europe/Amsterdam", "Sunday", 2, 30, utc(2024, 10, 27, 0, 29), utc(2024, 10, 20, 0, 30)),
        # US spring forward 2024-03-10 02:00 -> 03:00 in "Eastern Standard Time"
        ("Eastern Standard Time", "Sunday", 2, 15, utc(2024, 3, 10, 12, 0), utc(2024, 3, 10, 7, 15)),
        # Sunday 23:00 in Los Angeles is Monday 07:00 UTC (PST)
        ("Pacific Standard Time", "Sunday", 23, 0, utc(2024, 1, 8, 7, 0), utc(2024, 1, 8, 7, 0)),
        ("Pacific Standard Time", "Sunday", 23, 0, utc(2024, 1, 8, 6, 59), utc(2024, 1, 1, 7, 0)),
    ],
)
def test_latest_recurrence_start(
    tz: str, day: str, hour: int, minute: int, now: datetime, expected_start: datetime
) -> None:
    s = make(recurring("r", tz, [day], [hour], [minute], 1))
    rec = s.profiles[0].recurrence
    assert rec is not None
    assert latest_recurrence_start(rec, now) == expected_start


def test_several_hours_and_minutes() -> None:
    s = make(recurring("r", "UTC", ["Tuesday"], [12, 8], [30, 0], 1))
    rec = s.profiles[0].recurrence
    assert rec is not None
    day = (2024, 1, 9)  # a Tuesday (year, month, day)
    assert latest_recurrence_start(rec, utc(*day, 8, 29)) == utc(*day, 8, 0)
    assert latest_recurrence_start(rec, utc(*day, 8, 30)) == utc(*day, 8, 30)
    assert latest_recurrence_start(rec, utc(*day, 12, 29)) == utc(*day, 12, 0)
    assert latest_recurrence_start(rec, utc(*day, 11, 59)) == utc(*day, 8, 30)
    assert latest_recurrence_start(rec, utc(*day, 23, 0)) == utc(*day, 12, 30)
    assert latest_recurrence_start(rec, utc(*day, 7, 59)) == utc(2024, 1, 2, 12, 30)


DEFAULT_AND_FIXED = make(
    {"name": "regular", "capacity": cap(2)},
    fixed("sale", "W. Europe Standard Time", "2024-06-01T09:00:00", "2024-06-01T17:00:00", 6),
    fixed("utc-window", None, "2024-06-02T00:00:00Z", "2024-06-02T01:00:00Z", 7),
    fixed("offset-window", "Tokyo Standard Time", "2024-06-03T00:00:00+00:00", "2024-06-03T01:00:00+00:00", 8),
)


@pytest.mark.parametrize(
    "now,expected",
    [
        (utc(2024, 6, 1, 6, 59), "regular"),  # 08:59 CEST
        (utc(2024, 6, 1, 7, 0), "sale"),
        (utc(2024, 6, 1, 14, 59), "sale"),
        (utc(2024, 6, 1, 15, 0), "regular"),
        (utc(2024, 6, 2, 0, 0), "utc-window"),
        (utc(2024, 6, 2, 1, 0), "regular"),
        # explicit offsets in start/end win over the profile's time zone
        (utc(2024, 6, 3, 0, 30), "offset-window"),
        (utc(2024, 6, 2, 15, 30), "regular"),
        # naive now is UTC
        (datetime(2024, 6, 1, 7, 0), "sale"),
        (datetime(2024, 6, 1, 6, 59), "regular"),
    ],
)
def test_default_and_fixed_dates(now: datetime, expected: str) -> None:
    assert select_profile(DEFAULT_AND_FIXED, now).name == expected


def test_overlapping_fixed_dates_first_listed_wins() -> None:
    s = make(
        {"name": "regular", "capacity": cap(1)},
        fixed("a", "UTC", "2024-01-01T00:00:00", "2024-01-03T00:00:00", 2),
        fixed("b", "UTC", "2024-01-02T00:00:00", "2024-01-04T00:00:00", 3),
    )
    assert select_profile(s, utc(2024, 1, 2, 12, 0)).name == "a"
    assert select_profile(s, utc(2024, 1, 3, 12, 0)).name == "b"


def test_recurrence_tie_first_listed_wins() -> None:
    s = make(
        recurring("first", "UTC", ["Monday"], [8], [0], 1),
        recurring("second", "Etc/UTC", ["Monday"], [8], [0], 2),
    )
    assert select_profile(s, utc(2024, 1, 8, 9, 0)).name == "first"


def test_single_recurrence_runs_forever() -> None:
    s = make(recurring("only", "UTC", ["Monday"], [8], [0], 3))
    for day in range(1, 15):
        assert select_profile(s, utc(2024, 1, day, 12, 0)).name == "only"


def test_evaluate_uses_the_selected_profile_capacity() -> None:
    # In the morning profile (min = max = 4) a set of 1 is moved up to 4, reason names the profile.
    d = evaluate(EUROPE, current_capacity=1, now=utc(2024, 1, 8, 9, 0), query=lambda _q: None)
    assert (d.new_capacity, d.direction, d.profile) == (4, "out", "morning")
    assert d.reason.endswith("(profile morning)")
    d = evaluate(EUROPE, current_capacity=4, now=utc(2024, 1, 8, 18, 0), query=lambda _q: None)
    assert (d.new_capacity, d.direction, d.profile) == (2, "in", "evening")
