"""``localvmss autoscale ...``: the az-style mini-languages as tables, commands that must fail
before any request, and the read-modify-write commands against an in-memory daemon."""

from __future__ import annotations

import copy
import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from click.testing import CliRunner

from localvmss.autoscale.engine import evaluate, select_profile
from localvmss.autoscale.settings import parse_autoscale_setting
from localvmss.cli import autoscale_cmds as ac
from localvmss.cli.client import ApiClient
from localvmss.cli.main import cli, main
from localvmss.errors import InvalidSpec, NotFound

CPU = "Percentage CPU"


# =================================================================================== durations
@pytest.mark.parametrize(
    "text,expected",
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("5M", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("90s", timedelta(seconds=90)),
        ("0s", timedelta(0)),
        (" 5m ", timedelta(minutes=5)),
        ("PT5M", timedelta(minutes=5)),
        ("pt1h30m", timedelta(minutes=90)),
        ("P1D", timedelta(days=1)),
        ("PT15S", timedelta(seconds=15)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert ac.parse_duration(text) == expected


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("5", "minutes? write 5m"),
        ("5x", "not a duration"),
        ("m", "not a duration"),
        ("1.5h", "not a duration"),
        ("5m1h", "not a duration"),  # units in order d h m s, as az
        ("-5m", "not a duration"),
        ("P1M", "months or years"),
        ("P1Y", "months or years"),
        ("PT", "not a duration"),
        ("P5X", "not a duration"),
    ],
)
def test_parse_duration_rejects(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        ac.parse_duration(text)
    assert fragment in err.value.message
    assert "\n" not in err.value.message


@pytest.mark.parametrize(
    "value,expected",
    [
        (timedelta(0), "PT0S"),
        (timedelta(seconds=30), "PT30S"),
        (timedelta(minutes=5), "PT5M"),
        (timedelta(minutes=90), "PT1H30M"),
        (timedelta(hours=12), "PT12H"),
        (timedelta(days=1), "P1D"),
        (timedelta(days=7), "P7D"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4), "P1DT2H3M4S"),
        (timedelta(seconds=1.5), "PT1.5S"),
    ],
)
def test_iso_duration(value: timedelta, expected: str) -> None:
    assert ac.iso_duration(value) == expected
    assert ac.parse_duration(expected) == value  # round trip


def test_iso_duration_rejects_negative() -> None:
    with pytest.raises(InvalidSpec):
        ac.iso_duration(timedelta(seconds=-1))


@pytest.mark.parametrize(
    "text,expected",
    [
        ("5", "PT5M"),  # az: minutes
        ("0", "PT0S"),
        ("10", "PT10M"),
        ("0.5", "PT30S"),
        ("90", "PT1H30M"),
        ("30s", "PT30S"),
        ("2m", "PT2M"),
        ("PT1H", "PT1H"),
    ],
)
def test_parse_cooldown(text: str, expected: str) -> None:
    assert ac.parse_cooldown(text) == expected


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "soon", "5 minutes"])
def test_parse_cooldown_rejects(text: str) -> None:
    with pytest.raises(InvalidSpec, match="--cooldown"):
        ac.parse_cooldown(text)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("avg 1m", ("Average", "PT1M")),
        ("min 30s", ("Min", "PT30S")),
        ("max 5m", ("Max", "PT5M")),
        ("sum 1m", ("Sum", "PT1M")),
        ("count 1m", ("Count", "PT1M")),
        ("Average 2m", ("Average", "PT2M")),
        ("AVG PT1M", ("Average", "PT1M")),
        ("1m", ("Average", "PT1M")),  # the statistic defaults to avg
    ],
)
def test_parse_timegrain(text: str, expected: tuple[str, str]) -> None:
    assert ac.parse_timegrain(text) == expected


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "expected '<STATISTIC> <GRAIN>'"),
        ("avg", "not a duration"),
        ("mean 1m", "statistic 'mean' is unknown"),
        ("total 1m", "statistic 'total' is unknown"),  # total is a time aggregation, not a statistic
        ("avg 1m extra", "expected '<STATISTIC> <GRAIN>'"),
        ("avg 0s", "longer than 0"),
        ("avg 1", "not a duration"),
    ],
)
def test_parse_timegrain_rejects(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        ac.parse_timegrain(text)
    assert fragment in err.value.message


# =================================================================================== condition
def trig(
    op: str,
    threshold: float,
    agg: str = "Average",
    window: str = "PT5M",
    metric: str | None = CPU,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"metricName": metric} if metric is not None else {}
    out.update(extra.pop("head", {}))
    out.update(operator=op, threshold=threshold, timeAggregation=agg, timeWindow=window)
    out.update(extra)
    return out


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Percentage CPU > 70 avg 5m", trig("GreaterThan", 70)),
        ("Percentage CPU >= 70 avg 5m", trig("GreaterThanOrEqual", 70)),
        ("Percentage CPU < 30 avg 10m", trig("LessThan", 30, window="PT10M")),
        ("Percentage CPU <= 30 min 1h", trig("LessThanOrEqual", 30, "Minimum", "PT1H")),
        ("Percentage CPU == 0 max 30s", trig("Equals", 0, "Maximum", "PT30S")),
        ("Percentage CPU != 0 total 1h30m", trig("NotEquals", 0, "Total", "PT1H30M")),
        ("Percentage CPU > 70 count 5m", trig("GreaterThan", 70, "Count")),
        ("Percentage CPU > 70 last 2m", trig("GreaterThan", 70, "Last", "PT2M")),
        ("Percentage CPU > 70 Average PT5M", trig("GreaterThan", 70)),
        ("Percentage CPU > 70.5 avg 5m", trig("GreaterThan", 70.5)),
        ("Percentage CPU > 70% avg 5m", trig("GreaterThan", 70)),
        ("Percentage CPU > -1 avg 5m", trig("GreaterThan", -1)),
        # spacing and case are free; operators need no spaces around them
        ("  percentage   cpu   >   70   AVG   5M  ", trig("GreaterThan", 70)),
        ("Percentage CPU>70 avg 5m", trig("GreaterThan", 70)),
        ("Percentage CPU>=70 avg 5m", trig("GreaterThanOrEqual", 70)),
        # multi-word metric names, parsed from the right
        (
            "Available Memory Bytes < 200000000 min 5m",
            trig("LessThan", 200000000, "Minimum", metric="Available Memory Bytes"),
        ),
        (
            "guest percentage cpu > 80 avg 2m",
            trig("GreaterThan", 80, window="PT2M", metric="Guest Percentage CPU"),
        ),
        ("Network In Total > 1e6 total 5m", trig("GreaterThan", 1000000, "Total", metric="Network In Total")),
        # az's quoted metric namespace
        (
            "'Microsoft.Compute/virtualMachineScaleSets' Percentage CPU > 70 avg 5m",
            trig("GreaterThan", 70, head={"metricNamespace": "Microsoft.Compute/virtualMachineScaleSets"}),
        ),
        # az's where clause
        (
            "Percentage CPU > 70 avg 5m where instance_id == 0",
            trig(
                "GreaterThan",
                70,
                dimensions=[{"DimensionName": "instance_id", "Operator": "Equals", "Values": ["0"]}],
            ),
        ),
        (
            "Percentage CPU > 70 avg 5m where instance_id == 0 or 1 and host != h2",
            trig(
                "GreaterThan",
                70,
                dimensions=[
                    {"DimensionName": "instance_id", "Operator": "Equals", "Values": ["0", "1"]},
                    {"DimensionName": "host", "Operator": "NotEquals", "Values": ["h2"]},
                ],
            ),
        ),
        (
            "Percentage CPU > 70 avg 5m WHERE instance_id == 0, 1, host != h2",
            trig(
                "GreaterThan",
                70,
                dimensions=[
                    {"DimensionName": "instance_id", "Operator": "Equals", "Values": ["0", "1"]},
                    {"DimensionName": "host", "Operator": "NotEquals", "Values": ["h2"]},
                ],
            ),
        ),
        (
            "Percentage CPU > 70 avg 5m where host==h1,h2",
            trig(
                "GreaterThan",
                70,
                dimensions=[{"DimensionName": "host", "Operator": "Equals", "Values": ["h1", "h2"]}],
            ),
        ),
    ],
)
def test_parse_condition(text: str, expected: dict[str, Any]) -> None:
    assert ac.parse_condition(text) == expected


@pytest.mark.parametrize(
    "text,query,expected",
    [
        ("query > 70 avg 5m", "avg(up)", trig("GreaterThan", 70, metric=None, query="avg(up)")),
        ("QUERY < 1 last 1m", " up ", trig("LessThan", 1, "Last", "PT1M", metric=None, query="up")),
        # any other words label the query (shown in reasons); they need not be catalogue metrics
        (
            "Queue Depth > 100 avg 2m",
            "sum(q)",
            trig("GreaterThan", 100, window="PT2M", metric="Queue Depth", query="sum(q)"),
        ),
        ("Percentage CPU > 70 avg 5m", "x", trig("GreaterThan", 70, query="x")),
    ],
)
def test_parse_condition_with_query(text: str, query: str, expected: dict[str, Any]) -> None:
    assert ac.parse_condition(text, query) == expected


@pytest.mark.parametrize(
    "text,query,fragment",
    [
        ("", None, "no comparison operator (> >= < <= == !=)"),
        ("Percentage CPU 70 avg 5m", None, "no comparison operator"),
        ("Percentage CPU > 70 avg", None, "expected <THRESHOLD> <AGG> <WINDOW> after '>', got '70 avg'"),
        ("Percentage CPU > 70 avg 5m 5m", None, "got '70 avg 5m 5m'"),
        ("> 70 avg 5m", None, "no metric name before '>'"),
        ("Percentage CPU = 70 avg 5m", None, "operator '=' is not one of"),
        ("Percentage CPU => 70 avg 5m", None, "operator '=>' is not one of"),
        ("Percentage CPU >> 70 avg 5m", None, "operator '>>' is not one of"),
        ("Percentage CPU > 70 avg 5m where host = h1", None, "operator '=' is not one of"),
        ("Percentage CPU > high avg 5m", None, "threshold 'high' is not a number"),
        ("Percentage CPU > nan avg 5m", None, "threshold 'nan' is not a number"),
        ("Percentage CPU > inf avg 5m", None, "threshold 'inf' is not a number"),
        (
            "Percentage CPU > 70 mean 5m",
            None,
            "aggregation 'mean' is not one of avg, min, max, total, count, last",
        ),
        ("Percentage CPU > 70 sum 5m", None, "aggregation 'sum'"),
        ("Percentage CPU > 70 avg 5", None, "minutes? write 5m"),
        ("Percentage CPU > 70 avg five", None, "not a duration"),
        ("Percentage CPU > 70 avg 0m", None, "window must be longer than 0"),
        ("Percentage CPU > 70 5m avg", None, "aggregation '5m'"),
        ("CPU > 70 avg 5m", None, "metricName 'CPU' is unknown; known metrics: Percentage CPU"),
        ("query > 70 avg 5m", None, "names 'query' but no --query"),
        ("query > 70 avg 5m", "   ", "--query is empty"),
        ("query > 70 avg 5m where host == h1", "up", "where clause filters catalogue metrics"),
        ("'Microsoft.Compute Percentage CPU > 70 avg 5m", None, "namespace is not closed"),
        ("Percentage CPU > 70 avg 5m where", None, "bad where clause"),
        ("Percentage CPU > 70 avg 5m where host", None, "bad where clause"),
        ("Percentage CPU > 70 avg 5m where host ==", None, "dimension 'host' has no value"),
        ("Percentage CPU > 70 avg 5m where host == h1 or", None, "unexpected 'or'"),
        ("Percentage CPU > 70 avg 5m where host == h1 h2", None, "unexpected 'h2'"),
        ("Percentage CPU > 70 avg 5m where host > h1", None, "bad where clause"),
        ("Percentage CPU > 70 avg where host == h1", None, "after '>', got '70 avg'"),
    ],
)
def test_parse_condition_rejects(text: str, query: str | None, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        ac.parse_condition(text, query)
    assert fragment in err.value.message
    assert "\n" not in err.value.message


def test_condition_errors_say_what_was_expected() -> None:
    with pytest.raises(InvalidSpec) as err:
        ac.parse_condition("Percentage CPU > 70 avg")
    assert "<METRIC NAME> <OP> <THRESHOLD> <AGG> <WINDOW>" in err.value.message
    assert "'Percentage CPU > 70 avg 5m'" in err.value.message


# ======================================================================================= scale
@pytest.mark.parametrize(
    "text,expected",
    [
        ("out 2", ("Increase", "ChangeCount", 2)),
        ("in 1", ("Decrease", "ChangeCount", 1)),
        ("OUT 3", ("Increase", "ChangeCount", 3)),
        ("  in   4 ", ("Decrease", "ChangeCount", 4)),
        ("out 50%", ("Increase", "PercentChangeCount", 50)),
        ("in 10%", ("Decrease", "PercentChangeCount", 10)),
        ("in 10 %", ("Decrease", "PercentChangeCount", 10)),
        ("out 200%", ("Increase", "PercentChangeCount", 200)),
        ("to 5", ("Increase", "ExactCount", 5)),  # a scale-out rule (the engine ignores direction None)
        ("out to 5", ("Increase", "ExactCount", 5)),
        ("in to 2", ("Decrease", "ExactCount", 2)),
        ("in to 0", ("Decrease", "ExactCount", 0)),
    ],
)
def test_parse_scale(text: str, expected: tuple[str, str, int]) -> None:
    direction, kind, value = expected
    assert ac.parse_scale(text) == {"direction": direction, "type": kind, "value": value}


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "expected 'out N', 'in N'"),
        ("out", "expected 'out N'"),
        ("2", "expected 'out N'"),
        ("up 2", "expected 'out N'"),
        ("out 2 3", "expected 'out N'"),
        ("to", "expected 'out N'"),
        ("out two", "'two' is not a whole number"),
        ("out -1", "'-1' is not a whole number"),
        ("out 1.5", "'1.5' is not a whole number"),
        ("out 0", "does nothing"),
        ("in 0%", "does nothing"),
        ("to 5%", "not a percentage"),
        ("to 0", "did you mean 'in to 0'"),
        ("in 5%%", "not a whole number"),
    ],
)
def test_parse_scale_rejects(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        ac.parse_scale(text)
    assert fragment in err.value.message


# ======================================================================================= rules
def test_build_rule_is_azure_shaped_and_valid() -> None:
    rule = ac.build_rule("Percentage CPU > 70 avg 5m", "out 2")
    assert rule == {
        "metricTrigger": {
            "metricName": CPU,
            "timeGrain": "PT1M",
            "statistic": "Average",
            "operator": "GreaterThan",
            "threshold": 70,
            "timeAggregation": "Average",
            "timeWindow": "PT5M",
        },
        "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": 2, "cooldown": "PT5M"},
    }
    setting = parse_autoscale_setting(
        {
            "targetResourceName": "web",
            "profiles": [{"name": "default", "capacity": {"minimum": 1, "maximum": 5, "default": 1}, "rules": [rule]}],
        }
    )
    assert setting.profiles[0].rules[0].scale_action.cooldown == timedelta(minutes=5)


def test_build_rule_options() -> None:
    rule = ac.build_rule("query > 3 last 2m", "in to 1", cooldown="0.5", timegrain="max 30s", query="max(q)")
    assert rule["metricTrigger"] == {
        "query": "max(q)",
        "timeGrain": "PT30S",
        "statistic": "Max",
        "operator": "GreaterThan",
        "threshold": 3,
        "timeAggregation": "Last",
        "timeWindow": "PT2M",
    }
    assert rule["scaleAction"] == {
        "direction": "Decrease",
        "type": "ExactCount",
        "value": 1,
        "cooldown": "PT30S",
    }


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"condition": "Percentage CPU > 70 avg 30s"}, "timeWindow PT30S is shorter than timeGrain PT1M"),
        ({"condition": "Percentage CPU > 70 avg 13h"}, "timeWindow: PT13H must be from PT15S to PT12H"),
        ({"condition": "Percentage CPU > 70 avg 10s", "timegrain": "avg 10s"}, "must be from PT15S"),
        ({"condition": "Percentage CPU > 70 avg 5m where fault == 1"}, "dimension 'fault' is not available"),
        ({"cooldown": "8d"}, "cooldown: P8D must be from"),
        ({"scale": "out 1001"}, "value"),
    ],
)
def test_build_rule_checks_like_the_daemon(kwargs: dict[str, str], fragment: str) -> None:
    args = {"condition": "Percentage CPU > 70 avg 5m", "scale": "out 1", **kwargs}
    with pytest.raises(InvalidSpec) as err:
        ac.build_rule(**args)
    assert fragment in err.value.message
    assert err.value.message.startswith("rule ")


# =================================================================================== schedules
@pytest.mark.parametrize(
    "text,expected",
    [
        ("week mon", ["Monday"]),
        ("week mon tue wed thu fri", ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
        ("week sat sun", ["Saturday", "Sunday"]),
        ("week sun sat", ["Saturday", "Sunday"]),  # week order
        ("Week Saturday SUNDAY", ["Saturday", "Sunday"]),
        ("week mon,wed,fri", ["Monday", "Wednesday", "Friday"]),
        ("week mon mon", ["Monday"]),
        ("weekly tue", ["Tuesday"]),
    ],
)
def test_parse_recurrence(text: str, expected: list[str]) -> None:
    assert ac.parse_recurrence(text) == expected


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("", "expected 'week DAY [DAY ...]'"),
        ("mon tue", "expected 'week DAY"),
        ("month 1 15", "expected 'week DAY"),
        ("week", "no days given"),
        ("week mon funday", "'funday' is not a day"),
        ("week mo", "'mo' is not a day"),
    ],
)
def test_parse_recurrence_rejects(text: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        ac.parse_recurrence(text)
    assert fragment in err.value.message


@pytest.mark.parametrize(
    "text,expected",
    [
        ("08:00", (8, 0)),
        ("8:00", (8, 0)),
        ("17:30", (17, 30)),
        ("00:00", (0, 0)),
        ("23:59", (23, 59)),
        ("09:15:00", (9, 15)),
        (" 7:05 ", (7, 5)),
    ],
)
def test_parse_clock(text: str, expected: tuple[int, int]) -> None:
    assert ac.parse_clock(text) == expected


@pytest.mark.parametrize("text", ["24:00", "12:60", "8", "8am", "08-00", "08:00:30", "", "2026-01-01T08:00"])
def test_parse_clock_rejects(text: str) -> None:
    with pytest.raises(InvalidSpec, match="expected HH:MM"):
        ac.parse_clock(text)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-11-27", "2026-11-27T00:00:00"),
        ("2026-11-27T08:00", "2026-11-27T08:00:00"),
        ("2026-11-27 08:00:00", "2026-11-27T08:00:00"),
        ("2026-11-27T08:00:00Z", "2026-11-27T08:00:00+00:00"),
        ("2026-11-27T08:00+01:00", "2026-11-27T08:00:00+01:00"),
    ],
)
def test_parse_fixed_time(text: str, expected: str) -> None:
    assert ac.parse_fixed_time(text) == expected


@pytest.mark.parametrize("text", ["tomorrow", "27/11/2026", "2026-13-01", "", "08:00"])
def test_parse_fixed_time_rejects(text: str) -> None:
    with pytest.raises(InvalidSpec, match="expected ISO-8601"):
        ac.parse_fixed_time(text)


NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("now", NOW),
        ("NOW", NOW),
        ("now-1h", NOW - timedelta(hours=1)),
        ("now - 90m", NOW - timedelta(minutes=90)),
        ("now+30m", NOW + timedelta(minutes=30)),
        ("now-PT2H", NOW - timedelta(hours=2)),
        ("2026-03-10T10:00:00", datetime(2026, 3, 10, 10, tzinfo=UTC)),  # naive means UTC
        ("2026-03-10T10:00:00Z", datetime(2026, 3, 10, 10, tzinfo=UTC)),
        ("2026-03-10T11:00:00+01:00", datetime(2026, 3, 10, 11, tzinfo=timezone(timedelta(hours=1)))),
        ("2026-03-10", datetime(2026, 3, 10, tzinfo=UTC)),
    ],
)
def test_parse_moment(text: str, expected: datetime) -> None:
    got = ac.parse_moment(text, NOW)
    assert got == expected
    assert got.tzinfo is not None


@pytest.mark.parametrize("text", ["yesterday", "now-", "now-1", "now*2h", "10:00", ""])
def test_parse_moment_rejects(text: str) -> None:
    with pytest.raises(InvalidSpec):
        ac.parse_moment(text, NOW)


# ================================================================== weekly profiles, companions
def test_companion_names_round_trip() -> None:
    name = ac.companion_name("default", "office")
    assert json.loads(name) == {"name": "default", "for": "office"}
    assert ac.companion_for(name) == "office"
    # the Azure portal's spelling too
    assert ac.companion_for('{"name":"Auto created default scale condition","for":"Weekends"}') == "Weekends"
    for ordinary in ("default", "office", "{not json", '{"name": "x"}', "[1]", '{"for": 3}'):
        assert ac.companion_for(ordinary) is None


DEFAULT: dict[str, Any] = {
    "name": "default",
    "capacity": {"minimum": 1, "maximum": 5, "default": 2},
    "rules": [ac.build_rule("Percentage CPU > 70 avg 5m", "out 1")],
}


def weekly(setting_profiles: list[dict[str, Any]]) -> Any:
    return parse_autoscale_setting({"targetResourceName": "web", "profiles": setting_profiles})


def test_recurring_profiles_start_and_end() -> None:
    main_p, end_p = ac.recurring_profiles(
        "office",
        {"minimum": 4, "maximum": 8, "default": 4},
        ["Monday", "Friday"],
        (8, 0),
        (18, 30),
        "Europe/Amsterdam",
        DEFAULT,
    )
    assert main_p == {
        "name": "office",
        "capacity": {"minimum": 4, "maximum": 8, "default": 4},
        "rules": [],
        "recurrence": {
            "frequency": "Week",
            "schedule": {
                "timeZone": "Europe/Amsterdam",
                "days": ["Monday", "Friday"],
                "hours": [8],
                "minutes": [0],
            },
        },
    }
    assert end_p["name"] == ac.companion_name("default", "office")
    assert end_p["capacity"] == DEFAULT["capacity"] and end_p["rules"] == DEFAULT["rules"]
    assert end_p["capacity"] is not DEFAULT["capacity"]  # copies, not shared
    assert end_p["recurrence"]["schedule"] == {
        "timeZone": "Europe/Amsterdam",
        "days": ["Monday", "Friday"],
        "hours": [18],
        "minutes": [30],
    }
    # what the engine makes of it (Amsterdam is UTC+1 in March)
    setting = weekly([copy.deepcopy(DEFAULT), main_p, end_p])
    at = datetime(2026, 3, 9, 7, 30, tzinfo=UTC)  # Monday 08:30 local
    assert select_profile(setting, at).name == "office"
    assert select_profile(setting, at.replace(hour=17, minute=31)).name == end_p["name"]  # 18:31 local
    assert select_profile(setting, datetime(2026, 3, 10, 12, tzinfo=UTC)).name == end_p["name"]  # Tuesday


def test_recurring_profiles_overnight_end_on_the_following_days() -> None:
    main_p, end_p = ac.recurring_profiles(
        "night",
        {"minimum": 1, "maximum": 1, "default": 1},
        ["Friday", "Sunday"],
        (22, 0),
        (6, 0),
        "UTC",
        DEFAULT,
    )
    assert main_p["recurrence"]["schedule"]["days"] == ["Friday", "Sunday"]
    assert end_p["recurrence"]["schedule"]["days"] == ["Monday", "Saturday"]  # Sunday night ends Monday
    setting = weekly([copy.deepcopy(DEFAULT), main_p, end_p])
    assert select_profile(setting, datetime(2026, 3, 13, 23, tzinfo=UTC)).name == "night"  # Fri 23:00
    assert select_profile(setting, datetime(2026, 3, 14, 5, tzinfo=UTC)).name == "night"  # Sat 05:00
    assert select_profile(setting, datetime(2026, 3, 14, 7, tzinfo=UTC)).name == end_p["name"]  # Sat 07:00
    assert select_profile(setting, datetime(2026, 3, 16, 5, tzinfo=UTC)).name == "night"  # Mon 05:00


def test_recurring_profiles_same_start_and_end_rejected() -> None:
    with pytest.raises(InvalidSpec, match="same as --start"):
        ac.recurring_profiles(
            "x", {"minimum": 1, "maximum": 1, "default": 1}, ["Monday"], (8, 0), (8, 0), "UTC", DEFAULT
        )


def test_recurring_profiles_copy_target_tracking_of_the_default() -> None:
    default = {
        "name": "default",
        "capacity": {"minimum": 1, "maximum": 5, "default": 2},
        "rules": [],
        "targetTracking": {"metricName": CPU, "target": 50},
    }
    _, end_p = ac.recurring_profiles(
        "x", {"minimum": 1, "maximum": 1, "default": 1}, ["Monday"], (8, 0), (9, 0), "UTC", default
    )
    assert end_p["targetTracking"] == {"metricName": CPU, "target": 50}


def test_sync_companions() -> None:
    main_p, end_p = ac.recurring_profiles(
        "office", {"minimum": 4, "maximum": 8, "default": 4}, ["Monday"], (8, 0), (18, 0), "UTC", DEFAULT
    )
    default = copy.deepcopy(DEFAULT)
    fixed: dict[str, Any] = {
        "name": "sale",
        "capacity": {"minimum": 9, "maximum": 9, "default": 9},
        "rules": [],
        "fixedDate": {"timeZone": "UTC", "start": "2026-11-27T00:00:00", "end": "2026-11-28T00:00:00"},
    }
    setting = {"profiles": [default, main_p, end_p, fixed]}
    default["capacity"] = {"minimum": 2, "maximum": 10, "default": 3}
    default["rules"] = []
    default["targetTracking"] = {"metricName": CPU, "target": 60}
    ac.sync_companions(setting)
    assert end_p["capacity"] == {"minimum": 2, "maximum": 10, "default": 3}
    assert end_p["rules"] == [] and end_p["targetTracking"] == {"metricName": CPU, "target": 60}
    assert main_p["capacity"] == {"minimum": 4, "maximum": 8, "default": 4} and "targetTracking" not in main_p
    assert fixed["capacity"]["default"] == 9
    default.pop("targetTracking")
    default["rules"] = [ac.build_rule("Percentage CPU < 10 avg 5m", "in 1")]
    ac.sync_companions(setting)
    assert "targetTracking" not in end_p and end_p["rules"] == default["rules"]
    assert end_p["rules"][0] is not default["rules"][0]
    ac.sync_companions({"profiles": [main_p]})  # no default profile: nothing to copy, no error


@pytest.mark.parametrize(
    "count,minimum,maximum,expected",
    [
        (2, None, None, {"minimum": 2, "maximum": 2, "default": 2}),  # az: min and max default to count
        (2, 1, 5, {"minimum": 1, "maximum": 5, "default": 2}),
        (0, 0, 3, {"minimum": 0, "maximum": 3, "default": 0}),
        (3, 1, None, {"minimum": 1, "maximum": 3, "default": 3}),
    ],
)
def test_capacity(count: int, minimum: int | None, maximum: int | None, expected: dict[str, int]) -> None:
    assert ac._capacity(count, minimum, maximum) == expected


@pytest.mark.parametrize(
    "count,minimum,maximum,fragment",
    [
        (2, 3, 1, "--min-count 3 is greater than --max-count 1"),
        (6, 1, 5, "--count 6 is outside"),
        (0, 1, 5, "--count 0 is outside"),
        (-1, None, None, "--count -1 must not be negative"),
        (2, None, 1, "greater than --max-count 1"),
    ],
)
def test_capacity_rejects(count: int, minimum: int | None, maximum: int | None, fragment: str) -> None:
    with pytest.raises(InvalidSpec, match=fragment.replace("-", r"\-")):
        ac._capacity(count, minimum, maximum)


# =============================================================================== greedy options
@pytest.mark.parametrize(
    "args,expected",
    [
        (["--scale", "out", "2"], ["--scale", "out 2"]),
        (["--scale", "out 2"], ["--scale", "out 2"]),
        (["--scale=out", "2", "--cooldown", "5"], ["--scale", "out 2", "--cooldown", "5"]),
        (
            ["--condition", "x > 1 avg 5m", "--scale", "in", "50%", "--cooldown", "3"],
            ["--condition", "x > 1 avg 5m", "--scale", "in 50%", "--cooldown", "3"],
        ),
        (["--scale-down-window", "5m"], ["--scale-down-window", "5m"]),  # only the exact option
        (["--scale", "out", "2", "--", "--scale"], ["--scale", "out 2", "--", "--scale"]),
        (["--scale", "to", "5", "-h"], ["--scale", "to 5", "-h"]),
    ],
)
def test_join_greedy(args: list[str], expected: list[str]) -> None:
    assert ac.join_greedy(args, ["--scale"]) == expected


def test_join_greedy_needs_a_value() -> None:
    import click

    with pytest.raises(click.UsageError, match="--scale needs a value"):
        ac.join_greedy(["--scale", "--cooldown", "5"], ["--scale"])


# ========================================================================= commands: no daemon
@pytest.fixture
def no_http(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []

    def request(self: ApiClient, method: str, path: str, body: Any = None, headers: Any = None) -> Any:
        calls.append((method, path))
        raise AssertionError(f"unexpected request {method} {path}")

    monkeypatch.setattr(ApiClient, "request", request)
    return calls


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["localvmss", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


HELP_PATHS = [
    ["autoscale"],
    ["autoscale", "create"],
    ["autoscale", "show"],
    ["autoscale", "update"],
    ["autoscale", "delete"],
    ["autoscale", "rule"],
    ["autoscale", "rule", "create"],
    ["autoscale", "rule", "list"],
    ["autoscale", "rule", "delete"],
    ["autoscale", "profile"],
    ["autoscale", "profile", "create"],
    ["autoscale", "profile", "list"],
    ["autoscale", "profile", "delete"],
    ["autoscale", "target-tracking"],
    ["autoscale", "simulate"],
]


@pytest.mark.parametrize("path", HELP_PATHS, ids=" ".join)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(path: list[str], flag: str, no_http: list[Any]) -> None:
    result = CliRunner().invoke(cli, [*path, flag])
    assert result.exit_code == 0, result.output
    assert "Usage: cli " + " ".join(path) in result.output


def test_help_documents_the_languages(no_http: list[Any]) -> None:
    out = CliRunner().invoke(cli, ["autoscale", "rule", "create", "--help"]).output
    for word in (
        "Percentage CPU > 70 avg 5m",
        "avg min max total count last",
        "out N%",
        "$scale_set",
        "minutes",
    ):
        assert word in " ".join(out.split()), word
    out = CliRunner().invoke(cli, ["autoscale", "target-tracking", "--help"]).output
    assert "REMOVES THAT PROFILE'S RULES" in " ".join(out.split())


BAD_BEFORE_HTTP = [
    (
        [
            "rule",
            "create",
            "--resource",
            "web",
            "--condition",
            "Percentage CPU > 70 avg",
            "--scale",
            "out",
            "1",
        ],
        "after '>', got '70 avg'",
    ),
    (
        [
            "rule",
            "create",
            "--resource",
            "web",
            "--condition",
            "Percentage CPU =< 70 avg 5m",
            "--scale",
            "out",
            "1",
        ],
        "operator '=<'",
    ),
    (
        ["rule", "create", "--resource", "web", "--condition", "CPU > 70 avg 5m", "--scale", "out", "1"],
        "metricName 'CPU' is unknown",
    ),
    (
        [
            "rule",
            "create",
            "--resource",
            "web",
            "--condition",
            "Percentage CPU > 70 avg 5m",
            "--scale",
            "up",
            "1",
        ],
        "--scale 'up 1'",
    ),
    (
        [
            "rule",
            "create",
            "--resource",
            "web",
            "--condition",
            "Percentage CPU > 70 avg 5m",
            "--scale",
            "out",
            "1",
            "--cooldown",
            "soon",
        ],
        "--cooldown 'soon'",
    ),
    (
        [
            "rule",
            "create",
            "--resource",
            "web",
            "--condition",
            "Percentage CPU > 70 avg 5m",
            "--scale",
            "out",
            "1",
            "--timegrain",
            "mean 1m",
        ],
        "statistic 'mean'",
    ),
    (
        ["rule", "create", "--resource", "web", "--condition", "query > 70 avg 5m", "--scale", "out", "1"],
        "no --query",
    ),
    (
        [
            "rule",
            "create",
            "--resource",
            "web",
            "--condition",
            "Percentage CPU > 70 avg 30s",
            "--scale",
            "out",
            "1",
        ],
        "shorter than timeGrain",
    ),
    (["rule", "delete", "--resource", "web", "--index", "first"], "--index 'first'"),
    (
        ["create", "--resource", "web", "--count", "7", "--min-count", "1", "--max-count", "5"],
        "--count 7 is outside",
    ),
    (["update", "--resource", "web"], "nothing to update"),
    (["update", "--resource", "web", "--min-count", "-1"], "must not be negative"),
    (["profile", "create", "--resource", "web", "--name", "p", "--count", "2"], "give --start and --end"),
    (
        [
            "profile",
            "create",
            "--resource",
            "web",
            "--name",
            "p",
            "--count",
            "2",
            "--start",
            "2026-11-27",
            "--end",
            "tomorrow",
        ],
        "--end 'tomorrow'",
    ),
    (
        [
            "profile",
            "create",
            "--resource",
            "web",
            "--name",
            "p",
            "--count",
            "2",
            "--start",
            "2026-11-28",
            "--end",
            "2026-11-27",
        ],
        "is not after start",
    ),
    (
        [
            "profile",
            "create",
            "--resource",
            "web",
            "--name",
            "p",
            "--count",
            "2",
            "--recurrence",
            "month",
            "1",
        ],
        "expected 'week DAY",
    ),
    (
        [
            "profile",
            "create",
            "--resource",
            "web",
            "--name",
            "p",
            "--count",
            "2",
            "--recurrence",
            "week",
            "mon",
            "--start",
            "2026-11-27",
        ],
        "--start '2026-11-27' is not a time of day",
    ),
    (
        [
            "profile",
            "create",
            "--resource",
            "web",
            "--name",
            "p",
            "--count",
            "2",
            "--recurrence",
            "week",
            "mon",
            "--start",
            "08:00",
            "--end",
            "08:00",
        ],
        "same as --start",
    ),
    (
        [
            "profile",
            "create",
            "--resource",
            "web",
            "--name",
            "p",
            "--count",
            "2",
            "--recurrence",
            "week",
            "mon",
            "--timezone",
            "Mars/Olympus",
        ],
        "timeZone 'Mars/Olympus' is unknown",
    ),
    (["target-tracking", "--resource", "web", "--metric", CPU], "give --target"),
    (["target-tracking", "--resource", "web", "--target", "50"], "either --metric NAME or --query PROMQL"),
    (
        ["target-tracking", "--resource", "web", "--target", "50", "--metric", "CPU"],
        "--metric: metricName 'CPU'",
    ),
    (["target-tracking", "--resource", "web", "--target", "0", "--metric", CPU], "target tracking target"),
    (
        ["target-tracking", "--resource", "web", "--target", "50", "--metric", CPU, "--tolerance", "1.5"],
        "tolerance",
    ),
    (
        [
            "target-tracking",
            "--resource",
            "web",
            "--target",
            "50",
            "--metric",
            CPU,
            "--scale-down-window",
            "2h",
        ],
        "scaleDownStabilizationWindow",
    ),
    (["target-tracking", "--resource", "web", "--remove", "--target", "50"], "--remove takes no"),
    (["simulate", "--resource", "web", "--start", "yesterday"], "--start 'yesterday'"),
    (["simulate", "--resource", "web", "--start", "now", "--end", "now-1h"], "is not after --start"),
]


@pytest.mark.parametrize("args,fragment", BAD_BEFORE_HTTP, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_input_exits_2_before_any_request(
    args: list[str],
    fragment: str,
    no_http: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_main(monkeypatch, capsys, "autoscale", *args)
    assert code == 2, (out, err)
    assert no_http == []
    assert fragment in " ".join(err.split()), err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1, err


def test_setting_file_must_be_json(
    tmp_path: Any, no_http: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "setting.json"
    bad.write_text("{not json")
    code, _, err = run_main(
        monkeypatch,
        capsys,
        "autoscale",
        "simulate",
        "--resource",
        "web",
        "--start",
        "now-1h",
        "--setting-file",
        str(bad),
    )
    assert code == 2 and "not readable JSON" in err and no_http == []
    bad.write_text("[1, 2]")
    code, _, err = run_main(
        monkeypatch,
        capsys,
        "autoscale",
        "simulate",
        "--resource",
        "web",
        "--start",
        "now-1h",
        "--setting-file",
        str(bad),
    )
    assert code == 2 and "must hold a JSON object" in err


@pytest.mark.parametrize(
    "args",
    [
        ["rule", "create", "--resource", "web", "--condition", "Percentage CPU > 70 avg 5m", "--scale"],
        ["rule", "create", "--resource", "web", "--condition", "Percentage CPU > 70 avg 5m"],
        ["simulate", "--resource", "web", "--start", "now-1h", "--step", "0"],
        ["update", "--resource", "web", "--enabled", "maybe"],
    ],
)
def test_usage_errors_exit_2(
    args: list[str], no_http: list[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(monkeypatch, capsys, "autoscale", *args)
    assert code == 2, err
    assert no_http == []


# ================================================================ commands: in-memory daemon
class FakeDaemon:
    """The autoscale routes, validating like the daemon (minus Prometheus)."""

    def __init__(self) -> None:
        self.settings: dict[str, dict[str, Any]] = {}
        self.sets = {"web"}
        self.groups = {"localvmss", "rg1", "rg2"}
        self.in_group: dict[str, str] = {}  # set -> group; the rest are in "localvmss"
        self.calls: list[tuple[str, str, Any]] = []
        self.simulated: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, headers: Any = None) -> Any:
        self.calls.append((method, path, copy.deepcopy(body)))
        path, _, query = path.partition("?")
        group = dict(kv.split("=", 1) for kv in query.split("&") if kv).get("resourceGroup")
        if group is not None and group.lower() not in self.groups:
            raise NotFound(f"resource group {group!r} not found")
        parts = path.strip("/").split("/")
        if parts == ["scaleSets"] and method == "GET":
            return {"value": [{"name": n, "resourceGroup": self.group_of(n)} for n in sorted(self.sets)]}
        assert parts[0] == "scaleSets" and parts[2] == "autoscale", path
        name = parts[1]
        if group is not None and name in self.sets and self.group_of(name) != group.lower():
            raise NotFound(f"scale set {name!r} not found in resource group {group!r}")
        if name not in self.sets:
            raise NotFound(f"scale set {name!r} not found")
        if parts[3:] == ["simulate"]:
            return {"value": self.simulated}
        if method == "PUT":
            data = {**body, "targetResourceName": body.get("targetResourceName", name)}
            setting = parse_autoscale_setting(data)
            self.settings[name] = setting.model_dump(mode="json", by_alias=True, exclude_none=True)
            return copy.deepcopy(self.settings[name])
        if name not in self.settings:
            raise NotFound(f"scale set {name!r} has no autoscale setting")
        if method == "DELETE":
            del self.settings[name]
            return {"status": "Deleted"}
        return copy.deepcopy(self.settings[name])

    def group_of(self, name: str) -> str:
        return self.in_group.get(name, "localvmss")

    def puts(self) -> int:
        return sum(1 for m, _, _ in self.calls if m == "PUT")


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> FakeDaemon:
    fake = FakeDaemon()
    monkeypatch.setattr(
        ApiClient, "request", lambda self, method, path, body=None, headers=None: fake.request(method, path, body)
    )
    return fake


def az(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_main(monkeypatch, capsys, "-o", "json", "autoscale", *args)


def ok(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = az(monkeypatch, capsys, *args)
    assert code == 0, err
    return json.loads(out) if out.strip() else None


def test_create_show_update_delete(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got = ok(
        monkeypatch,
        capsys,
        "create",
        "--resource",
        "web",
        "--min-count",
        "1",
        "--max-count",
        "5",
        "--count",
        "2",
    )
    assert got["enabled"] is True and got["targetResourceName"] == "web"
    assert got["profiles"] == [{"name": "default", "capacity": {"minimum": 1, "maximum": 5, "default": 2}, "rules": []}]
    code, _, err = az(monkeypatch, capsys, "create", "--resource", "web", "--count", "2")
    assert code == 4 and "already has an autoscale setting" in err  # Conflict, nothing written
    assert daemon.puts() == 1

    got = ok(monkeypatch, capsys, "update", "--resource", "web", "--max-count", "8", "--enabled", "false")
    assert got["enabled"] is False
    assert got["profiles"][0]["capacity"] == {"minimum": 1, "maximum": 8, "default": 2}
    code, _, err = az(monkeypatch, capsys, "update", "--resource", "web", "--min-count", "3")
    assert code == 2 and "--count 2 is outside --min-count 3" in err

    assert ok(monkeypatch, capsys, "show", "--resource", "web") == daemon.settings["web"]
    ok(monkeypatch, capsys, "delete", "--resource", "web")
    code, _, err = az(monkeypatch, capsys, "show", "--resource", "web")
    assert code == 3 and "has no autoscale setting" in err and "localvmss autoscale create" in err


def test_create_disabled_and_fixed_count_update(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    got = ok(monkeypatch, capsys, "create", "--resource", "web", "--count", "3", "--disabled")
    assert got["enabled"] is False
    assert got["profiles"][0]["capacity"] == {"minimum": 3, "maximum": 3, "default": 3}
    # az: a fixed profile (min = max = count) follows --count alone
    got = ok(monkeypatch, capsys, "update", "--resource", "web", "--count", "5")
    assert got["profiles"][0]["capacity"] == {"minimum": 5, "maximum": 5, "default": 5}


def test_create_for_unknown_set(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = az(monkeypatch, capsys, "create", "--resource", "nope", "--count", "1")
    assert code == 3 and "scale set 'nope' not found" in err


def test_rules(daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ok(
        monkeypatch,
        capsys,
        "create",
        "--resource",
        "/subscriptions/s/virtualMachineScaleSets/web",
        "--min-count",
        "1",
        "--max-count",
        "5",
        "--count",
        "1",
    )
    code, out, err = az(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--condition",
        "Percentage CPU > 70 avg 5m",
        "--scale",
        "out",
        "2",
    )
    assert code == 0 and "scale out but none to scale in" in err
    assert json.loads(out)["index"] == 0
    ok(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--condition",
        "Percentage CPU < 20 avg 10m",
        "--scale",
        "in 1",
        "--cooldown",
        "10",
        "--timegrain",
        "max 2m",
    )
    ok(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--condition",
        "busy > 5 last 1m",
        "--query",
        'sum(busy{scale_set="$scale_set"})',
        "--scale",
        "to",
        "4",
    )
    rules = ok(monkeypatch, capsys, "rule", "list", "--resource", "web")
    assert [r["index"] for r in rules] == [0, 1, 2]
    assert rules[1]["metricTrigger"]["statistic"] == "Max" and rules[1]["scaleAction"]["cooldown"] == "PT10M"
    assert rules[2]["metricTrigger"]["query"] == 'sum(busy{scale_set="$scale_set"})'
    assert rules[2]["scaleAction"] == {
        "direction": "Increase",
        "type": "ExactCount",
        "value": 4,
        "cooldown": "PT5M",
    }

    # the stored setting behaves as intended in the engine
    setting = parse_autoscale_setting(daemon.settings["web"])
    values = {"busy": 9.0}
    decision = evaluate(setting, current_capacity=1, now=NOW, query=lambda q: values["busy"] if "busy" in q else 50.0)
    assert decision.new_capacity == 4

    code, _, err = az(monkeypatch, capsys, "rule", "delete", "--resource", "web", "--index", "7")
    assert code == 3 and "no index 7" in err
    remaining = ok(monkeypatch, capsys, "rule", "delete", "--resource", "web", "--index", "0", "2")
    assert [r["metricTrigger"]["operator"] for r in remaining] == ["LessThan"]
    assert ok(monkeypatch, capsys, "rule", "delete", "--resource", "web", "--index", "*") == []
    code, _, err = az(monkeypatch, capsys, "rule", "list", "--resource", "web", "--profile-name", "nope")
    assert code == 3 and "no profile 'nope'; profiles: 'default'" in err


def test_profiles_and_companions(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(
        monkeypatch,
        capsys,
        "create",
        "--resource",
        "web",
        "--min-count",
        "1",
        "--max-count",
        "5",
        "--count",
        "2",
    )
    ok(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--condition",
        "Percentage CPU > 70 avg 5m",
        "--scale",
        "out",
        "1",
    )
    new = ok(
        monkeypatch,
        capsys,
        "profile",
        "create",
        "--resource",
        "web",
        "--name",
        "office",
        "--count",
        "4",
        "--max-count",
        "8",
        "--recurrence",
        "week",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "--start",
        "08:00",
        "--end",
        "18:00",
        "--timezone",
        "W. Europe Standard Time",
        "--copy-rules",
        "default",
    )
    assert [p["name"] for p in new] == ["office", ac.companion_name("default", "office")]
    assert new[0]["capacity"] == {"minimum": 4, "maximum": 8, "default": 4}
    assert len(new[0]["rules"]) == 1  # copied
    assert new[1]["recurrence"]["schedule"]["hours"] == [18]
    ok(
        monkeypatch,
        capsys,
        "profile",
        "create",
        "--resource",
        "web",
        "--name",
        "sale",
        "--count",
        "9",
        "--start",
        "2026-11-27",
        "--end",
        "2026-11-28T06:00",
        "--timezone",
        "Eastern Standard Time",
    )
    code, _, err = az(
        monkeypatch,
        capsys,
        "profile",
        "create",
        "--resource",
        "web",
        "--name",
        "sale",
        "--count",
        "1",
        "--start",
        "2027-01-01",
        "--end",
        "2027-01-02",
    )
    assert code == 4 and "profile 'sale' exists" in err
    names = [p["name"] for p in ok(monkeypatch, capsys, "profile", "list", "--resource", "web")]
    assert names == ["default", "office", ac.companion_name("default", "office"), "sale"]

    # changes to the default profile reach the companion
    ok(monkeypatch, capsys, "update", "--resource", "web", "--max-count", "6")
    ok(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--condition",
        "Percentage CPU < 10 avg 5m",
        "--scale",
        "in",
        "1",
    )
    profiles = {p["name"]: p for p in daemon.settings["web"]["profiles"]}
    companion = profiles[ac.companion_name("default", "office")]
    assert companion["capacity"] == profiles["default"]["capacity"] == {"minimum": 1, "maximum": 6, "default": 2}
    assert companion["rules"] == profiles["default"]["rules"] and len(companion["rules"]) == 2
    assert len(profiles["office"]["rules"]) == 1  # other profiles keep their own
    # rules of a named profile
    ok(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--profile-name",
        "office",
        "--condition",
        "Percentage CPU > 90 avg 5m",
        "--scale",
        "out",
        "2",
    )
    assert len(ok(monkeypatch, capsys, "rule", "list", "--resource", "web", "--profile-name", "office")) == 2

    code, _, err = az(monkeypatch, capsys, "profile", "delete", "--resource", "web", "--name", "default")
    assert code == 2 and "cannot be deleted" in err
    left = ok(monkeypatch, capsys, "profile", "delete", "--resource", "web", "--name", "office")
    assert [p["name"] for p in left] == ["default", "sale"]  # the companion went with it


def test_target_tracking(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(
        monkeypatch,
        capsys,
        "create",
        "--resource",
        "web",
        "--min-count",
        "1",
        "--max-count",
        "5",
        "--count",
        "2",
    )
    ok(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--condition",
        "Percentage CPU > 70 avg 5m",
        "--scale",
        "out",
        "1",
    )
    code, out, err = az(
        monkeypatch,
        capsys,
        "target-tracking",
        "--resource",
        "web",
        "--metric",
        "percentage cpu",
        "--target",
        "50",
        "--scale-down-window",
        "10m",
    )
    assert code == 0 and "removed 1 rule(s)" in err
    profile = json.loads(out)
    assert profile["rules"] == []
    tt = profile["targetTracking"]
    assert tt["metricName"] == CPU and tt["target"] == 50 and tt["scaleDownStabilizationWindow"] == "PT10M"
    assert profile["capacity"] == {"minimum": 1, "maximum": 5, "default": 2}
    # a rule replaces target tracking again
    code, _, err = az(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--condition",
        "Percentage CPU > 70 avg 5m",
        "--scale",
        "out",
        "1",
    )
    assert code == 0 and "now uses rules instead" in err
    assert "targetTracking" not in daemon.settings["web"]["profiles"][0]
    ok(monkeypatch, capsys, "target-tracking", "--resource", "web", "--query", "avg(x)", "--target", "10")
    profile = ok(monkeypatch, capsys, "target-tracking", "--resource", "web", "--remove")
    assert "targetTracking" not in profile
    code, _, err = az(monkeypatch, capsys, "target-tracking", "--resource", "web", "--remove")
    assert code == 3 and "has no target tracking" in err


def test_simulate(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    setting_file = tmp_path / "s.json"
    setting_file.write_text(json.dumps({"profiles": []}))
    code, out, _ = run_main(
        monkeypatch,
        capsys,
        "autoscale",
        "simulate",
        "--resource",
        "web",
        "--start",
        "2026-03-10T10:00:00",
        "--end",
        "2026-03-10T11:00:00Z",
        "--step",
        "30",
        "--setting-file",
        str(setting_file),
    )
    assert code == 0 and out.startswith("no scaling between 2026-03-10T10:00:00+00:00 and 2026-03-10T11:00:00+00:00")
    assert daemon.calls[-1] == (
        "POST",
        "/scaleSets/web/autoscale/simulate",
        {
            "start": "2026-03-10T10:00:00+00:00",
            "end": "2026-03-10T11:00:00+00:00",
            "step": 30.0,
            "setting": {"profiles": []},
        },
    )
    daemon.simulated = [
        {
            "at": "2026-03-10T10:05:00+00:00",
            "from": 1,
            "to": 3,
            "reason": "scale out 1->3: avg Percentage CPU 91 > 70 over PT5M (profile default)",
        }
    ]
    code, out, _ = run_main(monkeypatch, capsys, "autoscale", "simulate", "--resource", "web", "--start", "now-1h")
    assert code == 0
    assert "2026-03-10T10:05:00+00:00" in out and "scale out 1->3" in out and "From" in out
    assert set(daemon.calls[-1][2]) == {"start", "end"}
    assert ok(monkeypatch, capsys, "simulate", "--resource", "web", "--start", "now-1h") == daemon.simulated


def test_tables(daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from localvmss.cli import output

    monkeypatch.setattr(output.out_console, "width", 200)  # one line per row, whatever the terminal
    ok(
        monkeypatch,
        capsys,
        "create",
        "--resource",
        "web",
        "--min-count",
        "1",
        "--max-count",
        "5",
        "--count",
        "2",
    )
    ok(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--condition",
        "Percentage CPU >= 70 avg 5m",
        "--scale",
        "out",
        "1",
    )
    code, out, _ = run_main(monkeypatch, capsys, "autoscale", "rule", "list", "--resource", "web")
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split() == [
        "Index",
        "Metric",
        "Operator",
        "Threshold",
        "Window",
        "Direction",
        "Type",
        "Value",
        "Cooldown",
    ]
    assert row.split() == [
        "0",
        "avg",
        "Percentage",
        "CPU",
        ">=",
        "70",
        "PT5M",
        "Increase",
        "ChangeCount",
        "1",
        "PT5M",
    ]
    ok(
        monkeypatch,
        capsys,
        "rule",
        "create",
        "--resource",
        "web",
        "--condition",
        "Percentage CPU < 10 avg 5m where instance_id == 0 or 1 and host != h2",
        "--scale",
        "in",
        "1",
    )
    code, out, _ = run_main(monkeypatch, capsys, "autoscale", "rule", "list", "--resource", "web")
    assert "avg Percentage CPU where instance_id == 0 or 1 and host != h2" in out
    code, out, _ = run_main(monkeypatch, capsys, "autoscale", "show", "--resource", "web")
    assert code == 0 and "Resource" in out and "2 rules" in out and "default" in out


# ===================================================== az's names: --resource ids, --name, -g
ARM = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups"


@pytest.mark.parametrize(
    "value,expected",
    [
        ("web", ("web", None)),
        (" web ", ("web", None)),
        (f"{ARM}/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/web", ("web", "rg1")),
        (f"{ARM}/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/web/", ("web", "rg1")),
        # ARM compares types and the resourceGroups key case-insensitively
        (f"{ARM.lower()}/RG1/providers/microsoft.compute/virtualmachinescalesets/web", ("web", "RG1")),
        (f"{ARM}/my%20rg/providers/Microsoft.Compute/virtualMachineScaleSets/web", ("web", "my rg")),
        ("/scaleSets/web", ("web", None)),  # this API's own ids
        ("/subscriptions/s/virtualMachineScaleSets/web", ("web", None)),
    ],
)
def test_parse_resource(value: str, expected: tuple[str, str | None]) -> None:
    assert ac.parse_resource(value) == expected


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("", "--resource is empty"),
        (f"{ARM}/rg1/providers/Microsoft.Web/sites/app", "is a Microsoft.Web/sites; localvmss autoscales only"),
        (f"{ARM}/rg1/providers/Microsoft.Compute/virtualMachines/vm1", "is a Microsoft.Compute/virtualMachines"),
        ("a/b", "neither a scale set name nor a scale set resource id"),
    ],
)
def test_parse_resource_rejects(value: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        ac.parse_resource(value)
    assert fragment in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(
    "resource_type,namespace,fine",
    [
        ("Microsoft.Compute/virtualMachineScaleSets", None, True),
        ("microsoft.compute/virtualmachinescalesets", None, True),
        ("virtualMachineScaleSets", "Microsoft.Compute", True),
        ("virtualMachineScaleSets", None, True),
        (None, "Microsoft.Compute", True),
        (None, None, True),
        ("Microsoft.Web/serverfarms", None, False),
        ("virtualMachines", "Microsoft.Compute", False),
        ("virtualMachineScaleSets", "Microsoft.Web", False),
        (None, "Microsoft.Web", False),
    ],
)
def test_check_resource_type(resource_type: str | None, namespace: str | None, fine: bool) -> None:
    if fine:
        ac.check_resource_type(resource_type, namespace)
    else:
        with pytest.raises(InvalidSpec, match="--resource-(type|namespace)"):
            ac.check_resource_type(resource_type, namespace)


@pytest.mark.parametrize("name", ["autoscale", "My Autoscale-1", "a" * 260, "web.settings_2"])
def test_check_setting_name(name: str) -> None:
    assert ac.check_setting_name(name) == name


@pytest.mark.parametrize("name", ["", "a" * 261, "a/b", "a?b", "a%b", "a\nb", "a:b"])
def test_check_setting_name_rejects(name: str) -> None:
    with pytest.raises(InvalidSpec, match="autoscale setting name"):
        ac.check_setting_name(name)


AZ_BAD_BEFORE_HTTP = [
    (["show"], "give --name NAME (the autoscale setting) or --resource SCALE_SET"),
    (["rule", "list"], "give --autoscale-name NAME (the autoscale setting) or --resource SCALE_SET"),
    (["create", "--name", "autoscale", "--count", "2"], "give --resource SCALE_SET"),
    (["create", "--resource", "web", "--resource-type", "Microsoft.Web/sites", "--count", "2"], "--resource-type"),
    (["show", "-n", "a/b"], "autoscale setting name"),
    (["create", "--resource", f"{ARM}/g/providers/Microsoft.Web/sites/x", "--count", "1"], "is a Microsoft.Web/sites"),
]


@pytest.mark.parametrize("args,fragment", AZ_BAD_BEFORE_HTTP, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_az_names_bad_input_exits_2_before_any_request(
    args: list[str],
    fragment: str,
    no_http: list[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_main(monkeypatch, capsys, "autoscale", *args)
    assert code == 2, (out, err)
    assert no_http == []
    assert fragment in " ".join(err.split()), err
    assert len(err.strip().splitlines()) == 1, err


def test_az_tutorial_lines(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lines of Microsoft's tutorial-autoscale-cli and of az's help: a setting named apart
    from its set, found by --autoscale-name / --name, in a resource group."""
    daemon.in_group["web"] = "rg1"
    got = ok(
        monkeypatch,
        capsys,
        *"create --resource-group rg1 --resource web --resource-type Microsoft.Compute/virtualMachineScaleSets".split(),
        *"--name autoscale --min-count 2 --max-count 10 --count 2".split(),
    )
    assert got["name"] == "autoscale" and got["targetResourceName"] == "web"
    assert got["profiles"][0]["capacity"] == {"minimum": 2, "maximum": 10, "default": 2}
    assert all("resourceGroup=rg1" in path for _, path, _ in daemon.calls if path != "/scaleSets")
    assert daemon.settings["web"]["name"] == "autoscale"  # kept by the daemon's model

    for condition, scale in (("Percentage CPU > 70 avg 5m", "out 3"), ("Percentage CPU < 30 avg 5m", "in 1")):
        ok(
            monkeypatch,
            capsys,
            *"rule create --resource-group rg1 --autoscale-name autoscale --condition".split(),
            condition,
            "--scale",
            *scale.split(),
        )
    rules = ok(monkeypatch, capsys, *"rule list --autoscale-name autoscale --resource-group rg1".split())
    assert [(r["scaleAction"]["direction"], r["scaleAction"]["value"]) for r in rules] == [
        ("Increase", 3),
        ("Decrease", 1),
    ]
    assert rules[0]["metricTrigger"]["threshold"] == 70 and rules[0]["metricTrigger"]["timeWindow"] == "PT5M"

    ok(
        monkeypatch,
        capsys,
        *"profile create -g rg1 --autoscale-name autoscale -n Christmas --copy-rules default".split(),
        *"--min-count 3 --count 6 --max-count 10 --start 2018-12-24 --end 2018-12-26 --timezone".split(),
        "Pacific Standard Time",
    )
    names = [p["name"] for p in ok(monkeypatch, capsys, *"profile list --autoscale-name autoscale -g rg1".split())]
    assert names == ["default", "Christmas"]
    ok(monkeypatch, capsys, *"profile delete --autoscale-name autoscale --name Christmas --resource-group rg1".split())

    got = ok(monkeypatch, capsys, *"update -g rg1 -n autoscale --count 3".split())
    assert got["profiles"][0]["capacity"] == {"minimum": 2, "maximum": 10, "default": 3}
    got = ok(monkeypatch, capsys, *"update --enabled false --name autoscale --resource-group rg1".split())
    assert got["enabled"] is False and got["name"] == "autoscale"
    assert ok(monkeypatch, capsys, *"show --name autoscale --resource-group rg1".split()) == daemon.settings["web"]
    # by the set, the old way, still
    assert ok(monkeypatch, capsys, "show", "--resource", "web")["name"] == "autoscale"

    # the wrong group, a name no setting has, a name that is the set's but not the setting's
    code, _, err = az(monkeypatch, capsys, *"show --name autoscale -g rg2".split())
    assert code == 3 and "no autoscale setting named 'autoscale' in resource group 'rg2'" in err
    code, _, err = az(monkeypatch, capsys, *"show --name nope".split())
    assert code == 3 and "no autoscale setting named 'nope'" in err
    code, _, err = az(monkeypatch, capsys, *"show --resource web --name web".split())
    assert code == 3 and "is named 'autoscale', not 'web'" in err

    # the same lines under az's own group, 'monitor autoscale'
    code, out, err = run_main(
        monkeypatch, capsys, "monitor", "autoscale", "show", "-n", "autoscale", "-g", "rg1", "-o", "json"
    )
    assert code == 0 and json.loads(out)["name"] == "autoscale", err

    ok(monkeypatch, capsys, *"delete --name autoscale --resource-group rg1".split())
    assert daemon.settings == {}


def test_az_resource_id_and_default_name(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """az's help: ``create -g G --resource {resource-id} ...`` then ``rule create --autoscale-name
    {resource-name}``: a setting created without --name is named after its set."""
    daemon.in_group["web"] = "rg1"
    rid = f"{ARM}/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/web"
    got = ok(
        monkeypatch,
        capsys,
        "create",
        "-g",
        "rg1",
        "--resource",
        rid,
        "--min-count",
        "2",
        "--max-count",
        "5",
        "--count",
        "3",
    )
    assert got["name"] == "web"
    ok(
        monkeypatch,
        capsys,
        *"rule create -g rg1 --autoscale-name web --scale out 1 --condition".split(),
        "Percentage CPU > 75 avg 5m",
    )
    assert len(daemon.settings["web"]["profiles"][0]["rules"]) == 1
    # the id's group wins over -g, as in az
    got = ok(monkeypatch, capsys, "show", "-g", "rg2", "--resource", rid)
    assert got["name"] == "web" and "resourceGroup=rg1" in daemon.calls[-1][1]


def test_az_names_are_unique_and_found_among_sets(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.sets |= {"api", "db"}
    ok(monkeypatch, capsys, *"create --resource api --name shared --count 1".split())
    code, _, err = az(monkeypatch, capsys, *"create --resource db --name SHARED --count 1".split())
    assert code == 4 and "scale set 'api' is already named 'SHARED'" in err
    assert "db" not in daemon.settings
    # found by name (case-insensitive, as ARM) though no set is called so
    assert ok(monkeypatch, capsys, *"show -n Shared".split())["targetResourceName"] == "api"
    # a setting named after another set is found by its name, not by that set
    ok(monkeypatch, capsys, *"create --resource db --name web --count 1".split())
    assert ok(monkeypatch, capsys, *"show -n web".split())["targetResourceName"] == "db"
    ok(monkeypatch, capsys, *"create --resource web --count 1".split())
    code, _, err = az(monkeypatch, capsys, *"show -n web".split())
    # web's own setting (default name web) is found first: the direct look-up wins
    assert code == 0
    # two settings with one name (made behind the CLI's back) are refused, not guessed
    daemon.settings["web"]["name"] = "dup"
    daemon.settings["db"]["name"] = "dup"
    code, _, err = az(monkeypatch, capsys, *"show -n dup".split())
    assert code == 4 and "are all named 'dup'; give --resource SCALE_SET" in err
