"""Autoscale settings: Azure JSON shapes accepted, every bad input rejected with one clear line."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest

from localvmss.autoscale.settings import (
    WINDOWS_TIME_ZONES,
    AutoscaleSetting,
    ComparisonOperator,
    ScaleDirection,
    ScaleType,
    Statistic,
    TimeAggregation,
    parse_autoscale_setting,
    resolve_time_zone,
)
from localvmss.errors import InvalidSpec

# Shaped like the examples in Azure's "Understand autoscale settings" page.
AZURE_EXAMPLE: dict[str, Any] = {
    "enabled": True,
    "targetResourceName": "web",
    "profiles": [
        {
            "name": "Auto created default scale condition",
            "capacity": {"minimum": "1", "maximum": "10", "default": "1"},
            "rules": [
                {
                    "metricTrigger": {
                        "metricName": "Percentage CPU",
                        "metricNamespace": "microsoft.compute/virtualmachinescalesets",
                        "metricResourceUri": "/subscriptions/s/resourceGroups/rg/providers/x/web",
                        "timeGrain": "PT1M",
                        "statistic": "Average",
                        "timeWindow": "PT10M",
                        "timeAggregation": "Average",
                        "operator": "GreaterThan",
                        "threshold": 85,
                        "dimensions": [],
                    },
                    "scaleAction": {
                        "direction": "Increase",
                        "type": "ChangeCount",
                        "value": "1",
                        "cooldown": "PT5M",
                    },
                },
                {
                    "metricTrigger": {
                        "metricName": "Percentage CPU",
                        "timeGrain": "PT1M",
                        "statistic": "Average",
                        "timeWindow": "PT10M",
                        "timeAggregation": "Average",
                        "operator": "LessThan",
                        "threshold": 60,
                    },
                    "scaleAction": {
                        "direction": "Decrease",
                        "type": "ChangeCount",
                        "value": "1",
                        "cooldown": "PT5M",
                    },
                },
            ],
        },
        {
            "name": "weekend",
            "capacity": {"minimum": 1, "maximum": 2, "default": 1},
            "rules": [],
            "recurrence": {
                "frequency": "Week",
                "schedule": {
                    "timeZone": "Pacific Standard Time",
                    "days": ["Saturday", "Sunday"],
                    "hours": [0],
                    "minutes": [0],
                },
            },
        },
        {
            "name": "launch",
            "capacity": {"minimum": 5, "maximum": 20, "default": 5},
            "fixedDate": {
                "timeZone": "W. Europe Standard Time",
                "start": "2024-12-26T00:00:00",
                "end": "2024-12-26T23:59:00",
            },
        },
    ],
}


def test_parses_azure_example() -> None:
    s = parse_autoscale_setting(copy.deepcopy(AZURE_EXAMPLE))
    assert s.scale_set == "web" and s.enabled
    p0 = s.profiles[0]
    assert (p0.capacity.minimum, p0.capacity.maximum, p0.capacity.default) == (1, 10, 1)
    t = p0.rules[0].metric_trigger
    assert t.time_grain == timedelta(minutes=1) and t.time_window == timedelta(minutes=10)
    assert t.statistic is Statistic.AVERAGE and t.time_aggregation is TimeAggregation.AVERAGE
    assert t.operator is ComparisonOperator.GREATER_THAN and t.threshold == 85.0
    a = p0.rules[0].scale_action
    assert (a.direction, a.kind, a.value, a.cooldown) == (
        ScaleDirection.INCREASE,
        ScaleType.CHANGE_COUNT,
        1,
        timedelta(minutes=5),
    )
    assert p0.is_default and not s.profiles[1].is_default
    assert s.profiles[2].fixed_date is not None


def test_round_trip_through_json() -> None:
    s = parse_autoscale_setting(copy.deepcopy(AZURE_EXAMPLE))
    dumped = s.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = json.dumps(dumped)
    assert '"timeWindow": "PT10M"' in text and '"metricTrigger"' in text and '"type": "ChangeCount"' in text
    again = parse_autoscale_setting(json.loads(text))
    assert again == s


def test_accepts_azure_resource_wrapper_and_uri() -> None:
    body = {
        "location": "westeurope",
        "tags": {},
        "properties": {
            "enabled": True,
            "targetResourceUri": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/"
            "virtualMachineScaleSets/web",
            "profiles": [{"name": "p", "capacity": {"minimum": 1, "maximum": 1, "default": 1}}],
            "notifications": [],
        },
    }
    assert parse_autoscale_setting(body).scale_set == "web"


def test_snake_case_and_case_insensitive_enums() -> None:
    s = parse_autoscale_setting(
        {
            "target_resource_name": "web",
            "profiles": [
                {
                    "name": "p",
                    "capacity": {"minimum": 0, "maximum": 1000, "default": 0},
                    "rules": [
                        {
                            "metric_trigger": {
                                "metric_name": "percentage cpu",
                                "statistic": "max",
                                "time_aggregation": "LAST",
                                "operator": "greaterthanorequal",
                                "threshold": "70.5",
                            },
                            "scale_action": {
                                "direction": "increase",
                                "type": "percentchangecount",
                                "value": 50,
                            },
                        }
                    ],
                }
            ],
        }
    )
    t = s.profiles[0].rules[0].metric_trigger
    assert t.metric_name == "Percentage CPU"
    assert (t.statistic, t.time_aggregation, t.operator) == (
        Statistic.MAX,
        TimeAggregation.LAST,
        ComparisonOperator.GREATER_THAN_OR_EQUAL,
    )
    assert t.threshold == 70.5
    # defaults where Azure would require a value
    assert t.time_grain == timedelta(minutes=1) and t.time_window == timedelta(minutes=5)
    assert s.profiles[0].rules[0].scale_action.kind is ScaleType.PERCENT_CHANGE_COUNT


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("PT15S", 15),
        ("PT1M", 60),
        ("PT1M30S", 90),
        ("PT5M", 300),
        ("PT1H", 3600),
        ("PT12H", 43200),
        ("P0DT2H", 7200),
    ],
)
def test_good_windows(text: str, seconds: int) -> None:
    data = copy.deepcopy(AZURE_EXAMPLE)
    data["profiles"][0]["rules"][0]["metricTrigger"]["timeWindow"] = text
    data["profiles"][0]["rules"][0]["metricTrigger"]["timeGrain"] = "PT15S"
    s = parse_autoscale_setting(data)
    assert s.profiles[0].rules[0].metric_trigger.time_window == timedelta(seconds=seconds)


DELETE = object()


def mutate(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(AZURE_EXAMPLE)
    parts = path.split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last: Any = int(parts[-1]) if parts[-1].isdigit() else parts[-1]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return data


R0 = "profiles.0.rules.0"
T0 = f"{R0}.metricTrigger"
A0 = f"{R0}.scaleAction"
C0 = "profiles.0.capacity"
SCHED = "profiles.1.recurrence.schedule"
FD = "profiles.2.fixedDate"


@pytest.mark.parametrize(
    "path,value,expected",
    [
        # unknown metric, listing the known ones
        (
            f"{T0}.metricName",
            "CPU Credits",
            "metricName 'CPU Credits' is unknown; known metrics: Percentage CPU,",
        ),
        # neither metric nor query
        (f"{T0}.metricName", DELETE, "rules[0].metricTrigger: needs a metricName (Percentage CPU"),
        (f"{T0}.query", "  ", "query must not be empty"),
        # malformed or out-of-range durations
        (f"{T0}.timeWindow", "PT5", "timeWindow: 'PT5' is not an ISO-8601 duration such as PT5M"),
        (f"{T0}.timeWindow", "5m", "is not an ISO-8601 duration"),
        (f"{T0}.timeWindow", 300, "is not an ISO-8601 duration string"),
        (f"{T0}.timeWindow", "P1M", "uses months or years"),
        (f"{T0}.timeWindow", "PT13H", "PT13H must be from PT15S to PT12H"),
        (f"{T0}.timeWindow", "PT10S", "must be from PT15S to PT12H"),
        (f"{T0}.timeWindow", "-PT5M", "must be from PT15S"),
        (f"{T0}.timeGrain", "PT1", "timeGrain: 'PT1' is not an ISO-8601 duration"),
        (f"{T0}.timeGrain", "PT20M", "timeWindow PT10M is shorter than timeGrain PT20M"),
        (f"{A0}.cooldown", "P8D", "cooldown: P8D must be from P0D to P7D"),
        (f"{A0}.cooldown", "soon", "cooldown: 'soon' is not an ISO-8601 duration"),
        # capacities
        (f"{C0}.minimum", "5", "capacity: default 1 is outside [minimum 5, maximum 10]"),
        (f"{C0}.maximum", "1001", "maximum '1001' must be an integer from 0 to 1000"),
        (f"{C0}.minimum", -1, "minimum -1 must be an integer from 0 to 1000"),
        (f"{C0}.minimum", "one", "minimum 'one' must be an integer"),
        (f"{C0}.minimum", True, "minimum True must be an integer"),
        (f"{C0}.minimum", 1.5, "minimum 1.5 must be an integer"),
        (f"{C0}.default", "11", "default 11 is outside [minimum 1, maximum 10]"),
        (f"{C0}.default", DELETE, "capacity.default: Field required"),
        # unknown enum values
        (f"{T0}.statistic", "Median", "statistic 'Median' is not one of Average, Min, Max, Sum, Count"),
        (f"{T0}.timeAggregation", "Mean", "timeAggregation 'Mean' is not one of Average, Minimum"),
        (f"{T0}.operator", "Above", "operator 'Above' is not one of Equals, NotEquals, GreaterThan"),
        (f"{T0}.operator", DELETE, "metricTrigger.operator: Field required"),
        (f"{A0}.direction", "Up", "direction 'Up' is not one of None, Increase, Decrease"),
        (f"{A0}.type", "ServiceAllowedNextValue", "type 'ServiceAllowedNextValue' is not one of ChangeCount"),
        (f"{A0}.value", "-1", "value '-1' must be an integer from 0 to 1000"),
        (f"{T0}.threshold", "high", "threshold: Input should be a valid number"),
        (f"{T0}.threshold", float("nan"), "threshold: Input should be a finite number"),
        # typos are caught, not silently ignored
        (f"{T0}.treshold", 5, "metricTrigger.treshold: Extra inputs are not permitted"),
        # time zones
        (f"{SCHED}.timeZone", "Mars Standard Time", "timeZone 'Mars Standard Time' is unknown"),
        (f"{SCHED}.timeZone", "../../etc/passwd", "is unknown"),
        (f"{SCHED}.timeZone", "", "is unknown"),
        (f"{FD}.timeZone", "Atlantis/Capital", "fixedDate.timeZone: timeZone 'Atlantis/Capital' is unknown"),
        # recurrence shape
        (
            "profiles.1.recurrence.frequency",
            "Day",
            "frequency 'Day' is not supported; Azure recurrences are weekly",
        ),
        (f"{SCHED}.days", ["Funday"], "day 'Funday' is not one of Monday"),
        (f"{SCHED}.days", [], "days: List should have at least 1 item"),
        (f"{SCHED}.hours", [24], "hours[0]: Input should be less than or equal to 23"),
        (f"{SCHED}.minutes", [60], "minutes[0]: Input should be less than or equal to 59"),
        (f"{SCHED}.minutes", ["0"], "minutes[0]: Input should be a valid integer"),
        (f"{SCHED}.timeZone", DELETE, "schedule.timeZone: Field required"),
        # fixed date
        (
            f"{FD}.end",
            "2024-12-25T00:00:00",
            "end 2024-12-25T00:00:00 is not after start 2024-12-26T00:00:00",
        ),
        (f"{FD}.start", "tomorrow", "fixedDate.start: Input should be a valid datetime"),
        # profile combinations
        (
            "profiles.2.recurrence",
            AZURE_EXAMPLE["profiles"][1]["recurrence"],
            "profile 'launch' has both fixedDate and recurrence",
        ),
        (
            "profiles.0.targetTracking",
            {"metricName": "Percentage CPU", "target": 50},
            "has both rules and targetTracking",
        ),
        ("profiles.1.name", "launch", "autoscale setting: profile names must be unique; repeated: launch"),
        ("profiles.1.recurrence", DELETE, "only one profile may have neither fixedDate nor recurrence"),
        ("profiles.0.name", "", "profiles[0].name: String should have at least 1 character"),
        (
            "profiles.0.rules",
            [AZURE_EXAMPLE["profiles"][0]["rules"][0]] * 11,
            "List should have at most 10 items",
        ),
        ("profiles", [], "profiles: List should have at least 1 item"),
        # target resource
        ("targetResourceName", DELETE, "targetResourceName (the scale set's name) is required"),
        ("targetResourceName", "Web_1", "targetResourceName 'Web_1' is invalid"),
        ("enabled", "maybe", "enabled: Input should be a valid boolean"),
        # dimensions
        (
            f"{T0}.dimensions",
            [{"DimensionName": "VMName", "Operator": "Equals", "Values": ["a"]}],
            "dimension 'VMName' is not available for 'Percentage CPU'; available: fault_domain, host,",
        ),
        (
            f"{T0}.dimensions",
            [{"DimensionName": "host", "Operator": "Like", "Values": ["a"]}],
            "Operator 'Like' is not one of Equals, NotEquals",
        ),
        (
            f"{T0}.dimensions",
            [{"DimensionName": "host", "Operator": "Equals", "Values": []}],
            "Values: List should have at least 1 item",
        ),
    ],
)
def test_rejects(path: str, value: Any, expected: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_autoscale_setting(mutate(path, value))
    message = info.value.message
    assert "\n" not in message
    assert message.startswith("autoscale setting")
    assert expected in message, message


def test_rejects_min_above_max() -> None:
    data = mutate(f"{C0}.minimum", "12")
    with pytest.raises(InvalidSpec, match=r"profiles\[0\]\.capacity: minimum 12 is greater than maximum 10"):
        parse_autoscale_setting(data)


def test_rejects_dimensions_on_guest_metric_and_raw_query() -> None:
    dims = [{"DimensionName": "host", "Operator": "Equals", "Values": ["h1"]}]
    data = mutate(f"{T0}.dimensions", dims)
    data["profiles"][0]["rules"][0]["metricTrigger"]["metricName"] = "Guest Percentage CPU"
    with pytest.raises(InvalidSpec, match="dimension 'host' is not available for 'Guest Percentage CPU'"):
        parse_autoscale_setting(data)
    data["profiles"][0]["rules"][0]["metricTrigger"]["query"] = "up"
    with pytest.raises(InvalidSpec, match="dimensions apply to catalogue metrics, not to a raw query"):
        parse_autoscale_setting(data)


def test_needs_a_default_profile_without_recurrence() -> None:
    data = copy.deepcopy(AZURE_EXAMPLE)
    data["profiles"] = [data["profiles"][2]]
    with pytest.raises(InvalidSpec, match="needs a default profile"):
        parse_autoscale_setting(data)


def test_recurrence_without_default_profile_is_fine() -> None:
    data = copy.deepcopy(AZURE_EXAMPLE)
    data["profiles"] = [data["profiles"][1]]
    assert parse_autoscale_setting(data).profiles[0].name == "weekend"


def test_query_with_free_metric_name() -> None:
    data = mutate(f"{T0}.query", 'sum(up{scale_set="$scale_set"})')
    data["profiles"][0]["rules"][0]["metricTrigger"]["metricName"] = "Requests"
    s = parse_autoscale_setting(data)
    assert s.profiles[0].rules[0].metric_trigger.display_name == "Requests"


def test_reports_how_many_more_problems() -> None:
    data = mutate(f"{T0}.statistic", "Median")
    data["profiles"][0]["rules"][0]["metricTrigger"]["operator"] = "Above"
    with pytest.raises(InvalidSpec, match=r"\(and 1 more problem\)$"):
        parse_autoscale_setting(data)


@pytest.mark.parametrize("data", [[], "x", None, 5])
def test_rejects_non_objects(data: Any) -> None:
    with pytest.raises(InvalidSpec, match="must be a JSON object"):
        parse_autoscale_setting(data)


TT = "profiles.0.targetTracking"


def tt(value: dict[str, Any]) -> dict[str, Any]:
    data = mutate(TT, value)
    data["profiles"][0]["rules"] = []
    return data


def test_target_tracking_defaults() -> None:
    s = parse_autoscale_setting(tt({"metricName": "Guest Percentage CPU", "target": 60}))
    t = s.profiles[0].target_tracking
    assert t is not None
    assert (t.target, t.tolerance) == (60.0, 0.1)
    assert t.scale_down_stabilization_window == timedelta(minutes=5)
    assert t.scale_up_stabilization_window == timedelta(0)
    assert t.time_window == timedelta(minutes=2)


@pytest.mark.parametrize(
    "value,expected",
    [
        ({"target": 50}, "targetTracking: needs a metricName"),
        ({"metricName": "Percentage CPU", "target": 0}, "target: Input should be greater than 0"),
        ({"metricName": "Percentage CPU"}, "target: Field required"),
        (
            {"metricName": "Percentage CPU", "target": 50, "tolerance": 1},
            "tolerance: Input should be less than 1",
        ),
        ({"metricName": "Percentage CPU", "target": 50, "tolerance": -0.1}, "greater than or equal to 0"),
        (
            {"metricName": "Percentage CPU", "target": 50, "scaleDownStabilizationWindow": "PT2H"},
            "scaleDownStabilizationWindow: PT2H must be from P0D to PT1H",
        ),
        (
            {"metricName": "Percentage CPU", "target": 50, "scaleUpStabilizationWindow": "2 minutes"},
            "scaleUpStabilizationWindow: '2 minutes' is not an ISO-8601 duration",
        ),
        ({"metricName": "Nope", "target": 50}, "metricName 'Nope' is unknown"),
    ],
)
def test_target_tracking_rejects(value: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_autoscale_setting(tt(value))
    assert expected in info.value.message, info.value.message


@pytest.mark.parametrize(
    "name,key",
    [
        ("UTC", "Etc/UTC"),
        ("W. Europe Standard Time", "Europe/Berlin"),
        ("w. europe standard time", "Europe/Berlin"),
        ("Pacific Standard Time", "America/Los_Angeles"),
        ("Eastern Standard Time", "America/New_York"),
        ("Central European Standard Time", "Europe/Warsaw"),
        ("GMT Standard Time", "Europe/London"),
        ("Tokyo Standard Time", "Asia/Tokyo"),
        ("India Standard Time", "Asia/Kolkata"),
        ("AUS Eastern Standard Time", "Australia/Sydney"),
        ("Europe/Amsterdam", "Europe/Amsterdam"),
        ("America/Sao_Paulo", "America/Sao_Paulo"),
    ],
)
def test_time_zones(name: str, key: str) -> None:
    assert resolve_time_zone(name).key == key


def test_every_windows_mapping_resolves() -> None:
    for name in WINDOWS_TIME_ZONES:
        resolve_time_zone(name)


def test_setting_type() -> None:
    assert isinstance(parse_autoscale_setting(copy.deepcopy(AZURE_EXAMPLE)), AutoscaleSetting)
