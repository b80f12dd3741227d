"""Rule evaluation: operators, aggregations, actions, cooldown, flapping, clamping."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localvmss.autoscale.engine import Decision, apply_action, compare, describe_trigger, evaluate
from localvmss.autoscale.settings import (
    AutoscaleSetting,
    ComparisonOperator,
    ScaleAction,
    parse_autoscale_setting,
)
from localvmss.errors import InvalidSpec

NOW = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)

CPU = "localvmss_instance_cpu_seconds_total"
MEM = "localvmss_instance_memory_available_bytes"
NET = "localvmss_instance_network_receive_bytes_total"


def rule(
    op: str,
    threshold: float,
    direction: str,
    value: int | str = 1,
    kind: str = "ChangeCount",
    metric: str = "Percentage CPU",
    window: str = "PT2M",
    cooldown: str = "PT5M",
    aggregation: str = "Average",
) -> dict[str, Any]:
    return {
        "metricTrigger": {
            "metricName": metric,
            "timeGrain": "PT1M",
            "statistic": "Average",
            "timeWindow": window,
            "timeAggregation": aggregation,
            "operator": op,
            "threshold": threshold,
        },
        "scaleAction": {"direction": direction, "type": kind, "value": value, "cooldown": cooldown},
    }


def setting(
    rules: list[dict[str, Any]], minimum: int = 1, maximum: int = 10, default: int | None = None
) -> AutoscaleSetting:
    if default is None:
        default = max(minimum, min(maximum, 2))
    return parse_autoscale_setting(
        {
            "enabled": True,
            "targetResourceName": "web",
            "profiles": [
                {
                    "name": "default",
                    "capacity": {"minimum": str(minimum), "maximum": str(maximum), "default": str(default)},
                    "rules": rules,
                }
            ],
        }
    )


def by_metric(values: dict[str, float | None]) -> Any:
    """A fake Prometheus: the value of the first exported series name found in the query."""

    def query(promql: str) -> float | None:
        for series, value in values.items():
            if series in promql:
                return value
        raise AssertionError(f"unexpected query {promql}")

    return query


def const(value: float | None) -> Any:
    return lambda _q: value


PCT, EXACT = "PercentChangeCount", "ExactCount"
STANDARD = [rule("GreaterThan", 70, "Increase"), rule("LessThan", 30, "Decrease")]


# ------------------------------------------------------------------------------------- operators
@pytest.mark.parametrize(
    "op,value,threshold,expected",
    [
        ("GreaterThan", 71, 70, True),
        ("GreaterThan", 70, 70, False),
        ("GreaterThanOrEqual", 70, 70, True),
        ("GreaterThanOrEqual", 69.9, 70, False),
        ("LessThan", 29, 30, True),
        ("LessThan", 30, 30, False),
        ("LessThanOrEqual", 30, 30, True),
        ("LessThanOrEqual", 30.1, 30, False),
        ("Equals", 5, 5, True),
        ("Equals", 5.5, 5, False),
        ("NotEquals", 5.5, 5, True),
        ("NotEquals", 5, 5, False),
    ],
)
def test_compare(op: str, value: float, threshold: float, expected: bool) -> None:
    assert compare(ComparisonOperator(op), value, threshold) is expected


@pytest.mark.parametrize(
    "op,value,fires",
    [
        ("GreaterThan", 80.0, True),
        ("GreaterThan", 50.0, False),
        ("GreaterThanOrEqual", 50.0, True),
        ("LessThan", 49.0, True),
        ("LessThanOrEqual", 50.0, True),
        ("LessThanOrEqual", 50.5, False),
        ("Equals", 50.0, True),
        ("NotEquals", 50.0, False),
        ("NotEquals", 1.0, True),
    ],
)
def test_every_operator_drives_scale_out(op: str, value: float, fires: bool) -> None:
    s = setting([rule(op, 50, "Increase")])
    d = evaluate(s, current_capacity=2, now=NOW, query=const(value))
    assert (d.new_capacity, d.direction) == ((3, "out") if fires else (2, "none"))
    assert d.observations[0].triggered is fires
    assert d.observations[0].value == value


# ---------------------------------------------------------------------------------- aggregations
@pytest.mark.parametrize(
    "aggregation,fn,word",
    [
        ("Average", "avg_over_time", "avg"),
        ("Minimum", "min_over_time", "min"),
        ("Maximum", "max_over_time", "max"),
        ("Total", "sum_over_time", "total"),
        ("Count", "count_over_time", "count"),
        ("Last", "last_over_time", "last"),
    ],
)
def test_aggregation_reaches_the_query_and_the_reason(aggregation: str, fn: str, word: str) -> None:
    seen: list[str] = []

    def query(promql: str) -> float:
        seen.append(promql)
        return 90.0

    s = setting([rule("GreaterThan", 70, "Increase", aggregation=aggregation)])
    d = evaluate(s, current_capacity=2, now=NOW, query=query)
    assert seen and seen[0].startswith(f"avg({fn}((")
    assert d.reason == f"scale out 2->3: {word} Percentage CPU 90 > 70 over PT2M (profile default)"


# -------------------------------------------------------------------------------- the main table
@pytest.mark.parametrize(
    "rules,cur,values,minmax,expected_cap,expected_dir,reason_part",
    [
        # the canonical example from the brief
        (STANDARD, 2, {CPU: 87.2}, (1, 10), 3, "out", "scale out 2->3: avg Percentage CPU 87.2 > 70 over"),
        (STANDARD, 2, {CPU: 50.0}, (1, 10), 2, "none", "no change at 2"),
        (STANDARD, 4, {CPU: 20.0}, (1, 10), 3, "in", "scale in 4->3: avg Percentage CPU 20 < 30"),
        # clamped at the edges
        (STANDARD, 10, {CPU: 95.0}, (1, 10), 10, "none", "at the maximum 10"),
        (STANDARD, 1, {CPU: 5.0}, (1, 10), 1, "none", "at the minimum 1"),
        ([rule("GreaterThan", 70, "Increase", value=5)], 8, {CPU: 95.0}, (1, 10), 10, "out", "8->10"),
        ([rule("LessThan", 30, "Decrease", value=5)], 4, {CPU: 1.0}, (2, 10), 2, "in", "4->2"),
        # out of range first, whatever the metrics say
        (STANDARD, 0, {CPU: 5.0}, (2, 10), 2, "out", "below the profile minimum 2"),
        (STANDARD, 12, {CPU: 99.0}, (2, 10), 10, "in", "above the profile maximum 10"),
        # scale out if ANY scale-out rule fires; largest result wins
        (
            [
                rule("GreaterThan", 70, "Increase", value=1),
                rule("GreaterThan", 1000, "Increase", value=3, metric="Network In Total"),
            ],
            2,
            {CPU: 50.0, NET: 5000.0},
            (1, 10),
            5,
            "out",
            "scale out 2->5: avg Network In Total 5000 > 1000",
        ),
        (
            [
                rule("GreaterThan", 70, "Increase", value=1),
                rule("GreaterThan", 1000, "Increase", value=3, metric="Network In Total"),
            ],
            2,
            {CPU: 90.0, NET: 5000.0},
            (1, 10),
            5,
            "out",
            "2->5",
        ),
        # scale in only if ALL scale-in rules fire
        (
            [
                rule("LessThan", 30, "Decrease"),
                rule("LessThan", 100, "Decrease", metric="Network In Total"),
            ],
            4,
            {CPU: 10.0, NET: 50.0},
            (1, 10),
            3,
            "in",
            "scale in 4->3: avg Percentage CPU 10 < 30 over PT2M; avg Network In Total 50 < 100 over PT2M",
        ),
        (
            [
                rule("LessThan", 30, "Decrease"),
                rule("LessThan", 100, "Decrease", metric="Network In Total"),
            ],
            4,
            {CPU: 10.0, NET: 5000.0},
            (1, 10),
            4,
            "none",
            "Network In Total 5000 not < 100",
        ),
        # all fire: the smallest reduction wins
        (
            [
                rule("LessThan", 30, "Decrease", value=1),
                rule("LessThan", 100, "Decrease", value=3, metric="Network In Total"),
            ],
            6,
            {CPU: 10.0, NET: 5.0},
            (1, 10),
            5,
            "in",
            "6->5",
        ),
        # a scale-out rule that fires wins over scale-in rules that fire too
        (
            [rule("GreaterThan", 1000, "Increase", metric="Network In Total"), STANDARD[1]],
            4,
            {CPU: 10.0, NET: 5000.0},
            (1, 10),
            5,
            "out",
            "4->5",
        ),
        # missing data: the rule does not fire
        (STANDARD, 3, {CPU: None}, (1, 10), 3, "none", "no data over PT2M"),
        (STANDARD, 3, {CPU: math.nan}, (1, 10), 3, "none", "no data"),
        (STANDARD, 3, {CPU: math.inf}, (1, 10), 3, "none", "no data"),
        # no data at all and below default: go to the default
        (STANDARD, 1, {CPU: None}, (1, 10), 2, "out", "no metric data; using the profile default"),
        # direction None rules only observe
        ([rule("GreaterThan", 1, "None")], 2, {CPU: 50.0}, (1, 10), 2, "none", "no change at 2"),
        # action types
        ([rule("GreaterThan", 70, "Increase", 50, PCT)], 4, {CPU: 90.0}, (1, 10), 6, "out", "4->6"),
        ([rule("GreaterThan", 70, "Increase", 10, PCT)], 4, {CPU: 90.0}, (1, 10), 5, "out", "4->5"),
        ([rule("GreaterThan", 70, "Increase", 7, EXACT)], 4, {CPU: 90.0}, (1, 10), 7, "out", "4->7"),
        ([rule("GreaterThan", 70, "Increase", 3, EXACT)], 4, {CPU: 90.0}, (1, 10), 4, "none", "maximum"),
        ([rule("LessThan", 30, "Decrease", 50, PCT)], 8, {CPU: 1.0}, (1, 10), 4, "in", "8->4"),
        ([rule("LessThan", 30, "Decrease", 2, EXACT)], 8, {CPU: 1.0}, (1, 10), 2, "in", "8->2"),
    ],
)
def test_evaluate_table(
    rules: list[dict[str, Any]],
    cur: int,
    values: dict[str, float | None],
    minmax: tuple[int, int],
    expected_cap: int,
    expected_dir: str,
    reason_part: str,
) -> None:
    lo, hi = minmax
    s = setting(rules, minimum=lo, maximum=hi, default=max(lo, min(hi, 2)))
    d = evaluate(s, current_capacity=cur, now=NOW, query=by_metric(values))
    assert (d.new_capacity, d.direction) == (expected_cap, expected_dir), d.reason
    assert reason_part in d.reason
    assert d.reason.endswith("(profile default)")
    assert d.profile == "default"
    assert "\n" not in d.reason


# ---------------------------------------------------------------------------------------- actions
@pytest.mark.parametrize(
    "direction,kind,value,current,expected",
    [
        ("Increase", "ChangeCount", 2, 3, 5),
        ("Decrease", "ChangeCount", 2, 3, 1),
        ("Decrease", "ChangeCount", 5, 3, 0),
        ("Increase", "PercentChangeCount", 50, 4, 6),
        ("Increase", "PercentChangeCount", 1, 4, 5),  # at least one
        ("Increase", "PercentChangeCount", 10, 0, 1),  # from zero: at least one
        ("Increase", "PercentChangeCount", 33, 3, 4),  # 0.99 rounds up
        ("Increase", "PercentChangeCount", 0, 3, 3),
        ("Decrease", "PercentChangeCount", 25, 10, 7),  # ceil(2.5) = 3
        ("Decrease", "PercentChangeCount", 1, 10, 9),
        ("Increase", "ExactCount", 7, 3, 7),
        ("Decrease", "ExactCount", 1, 3, 1),
        ("None", "ChangeCount", 4, 3, 3),
    ],
)
def test_apply_action(direction: str, kind: str, value: int, current: int, expected: int) -> None:
    action = ScaleAction.model_validate({"direction": direction, "type": kind, "value": value})
    assert apply_action(action, current) == expected


# --------------------------------------------------------------------------------------- cooldown
@pytest.mark.parametrize(
    "cpu,cur,since,last_dir,expected_cap,reason_part",
    [
        # scale out blocked for 5 minutes after any scale action
        (90.0, 2, timedelta(minutes=2), "out", 2, "cooldown for PT3M (last scale action after scale out"),
        (90.0, 2, timedelta(minutes=2), "in", 2, "after scale in"),
        (90.0, 2, timedelta(minutes=2), None, 2, "(last scale action at 2024-01-10T11:58:00Z)"),
        (90.0, 2, timedelta(minutes=5), "out", 3, "scale out 2->3"),
        (90.0, 2, timedelta(hours=1), "in", 3, "scale out 2->3"),
        # scale in likewise
        (10.0, 4, timedelta(minutes=4, seconds=30), "out", 4, "in cooldown for PT30S"),
        (10.0, 4, timedelta(minutes=6), "out", 3, "scale in 4->3"),
    ],
)
def test_cooldown(cpu: float, cur: int, since: timedelta, last_dir: Any, expected_cap: int, reason_part: str) -> None:
    d = evaluate(
        setting(STANDARD),
        current_capacity=cur,
        now=NOW,
        query=const(cpu),
        last_scale_action_at=NOW - since,
        last_direction=last_dir,
    )
    assert d.new_capacity == expected_cap, d.reason
    assert reason_part in d.reason


def test_cooldown_is_per_rule() -> None:
    rules = [
        rule("GreaterThan", 70, "Increase", value=1, cooldown="PT10M"),
        rule("GreaterThan", 1000, "Increase", value=4, metric="Network In Total", cooldown="PT1M"),
    ]
    d = evaluate(
        setting(rules),
        current_capacity=2,
        now=NOW,
        query=by_metric({CPU: 90.0, NET: 5000.0}),
        last_scale_action_at=NOW - timedelta(minutes=2),
    )
    assert (d.new_capacity, d.direction) == (6, "out")
    d = evaluate(
        setting(rules),
        current_capacity=2,
        now=NOW,
        query=by_metric({CPU: 90.0, NET: 50.0}),
        last_scale_action_at=NOW - timedelta(minutes=2),
    )
    assert (d.new_capacity, d.direction) == (2, "none")
    assert "cooldown for PT8M" in d.reason


def test_out_of_range_ignores_cooldown() -> None:
    d = evaluate(
        setting(STANDARD, minimum=3),
        current_capacity=1,
        now=NOW,
        query=const(50.0),
        last_scale_action_at=NOW,
    )
    assert (d.new_capacity, d.direction) == (3, "out")


def test_naive_last_scale_action_is_utc() -> None:
    d = evaluate(
        setting(STANDARD),
        current_capacity=2,
        now=NOW.replace(tzinfo=None),
        query=const(90.0),
        last_scale_action_at=(NOW - timedelta(minutes=1)).replace(tzinfo=None),
    )
    assert d.new_capacity == 2 and "cooldown for PT4M" in d.reason


# --------------------------------------------------------------------------------------- flapping
@pytest.mark.parametrize(
    "rules,cur,values,expected_cap,reason_part",
    [
        # Azure's example: out > 60, in < 50; 2 instances at 40% -> 1 instance would be 80% > 60
        (
            [rule("GreaterThan", 60, "Increase"), rule("LessThan", 50, "Decrease")],
            2,
            {CPU: 40.0},
            2,
            "scale in skipped to avoid flapping: avg Percentage CPU would be 80 > 60 at 1",
        ),
        # 3 instances at 40%: -> 2 gives 60, not > 60: fine
        (
            [rule("GreaterThan", 60, "Increase"), rule("LessThan", 50, "Decrease")],
            3,
            {CPU: 40.0},
            2,
            "scale in 3->2",
        ),
        # big step would flap, smaller step does not: scale in by fewer
        (
            [rule("GreaterThan", 70, "Increase"), rule("LessThan", 30, "Decrease", value=4)],
            6,
            {CPU: 25.0},
            3,
            "scale in 6->3: avg Percentage CPU 25 < 30 over PT2M; reduced from 6->2 to avoid flapping"
            " (avg Percentage CPU would be 75 > 70 at 2)",
        ),
        # projection of a different metric's scale-out rule also counts
        (
            [
                rule("GreaterThan", 1000, "Increase", metric="Network In Total"),
                rule("LessThan", 30, "Decrease"),
            ],
            2,
            {CPU: 10.0, NET: 600.0},
            2,
            "Network In Total would be 1200 > 1000 at 1",
        ),
        # non-proportional metric (available memory) is not projected
        (
            [
                rule("LessThan", 1000, "Increase", metric="Available Memory Bytes"),
                rule("LessThan", 30, "Decrease"),
            ],
            2,
            {MEM: 5000.0, CPU: 10.0},
            1,
            "scale in 2->1",
        ),
        # no data for the scale-out metric: nothing to project
        (
            [
                rule("GreaterThan", 1000, "Increase", metric="Network In Total"),
                rule("LessThan", 30, "Decrease"),
            ],
            2,
            {CPU: 10.0, NET: None},
            1,
            "scale in 2->1",
        ),
        # scaling in to zero with load would be infinite load
        (
            [rule("GreaterThan", 60, "Increase"), rule("LessThan", 50, "Decrease")],
            1,
            {CPU: 1.0},
            1,
            "flapping",
        ),
    ],
)
def test_flapping(
    rules: list[dict[str, Any]],
    cur: int,
    values: dict[str, float | None],
    expected_cap: int,
    reason_part: str,
) -> None:
    d = evaluate(setting(rules, minimum=0), current_capacity=cur, now=NOW, query=by_metric(values))
    assert d.new_capacity == expected_cap, d.reason
    assert reason_part in d.reason


def test_scale_to_zero_without_load_is_allowed() -> None:
    rules = [rule("GreaterThan", 60, "Increase"), rule("LessThan", 50, "Decrease")]
    d = evaluate(setting(rules, minimum=0), current_capacity=1, now=NOW, query=const(0.0))
    assert (d.new_capacity, d.direction) == (0, "in")


# ---------------------------------------------------------------------------------- other paths
def test_disabled_setting_does_nothing() -> None:
    s = setting(STANDARD, minimum=3)
    s.enabled = False
    d = evaluate(s, current_capacity=1, now=NOW, query=const(99.0))
    assert (d.new_capacity, d.direction) == (1, "none")
    assert "disabled" in d.reason


@pytest.mark.parametrize("cur,expected,direction", [(1, 4, "out"), (4, 4, "none"), (7, 4, "in")])
def test_profile_without_rules_uses_default(cur: int, expected: int, direction: str) -> None:
    s = setting([], minimum=1, maximum=8, default=4)
    d = evaluate(s, current_capacity=cur, now=NOW, query=const(None))
    assert (d.new_capacity, d.direction) == (expected, direction)
    assert "default 4" in d.reason


def test_observations_list_every_rule() -> None:
    rules = [*STANDARD, rule("GreaterThan", 1e9, "None", metric="Network In Total")]
    d = evaluate(setting(rules), current_capacity=2, now=NOW, query=by_metric({CPU: 50.0, NET: 12.0}))
    assert [(o.rule, o.value, o.triggered) for o in d.observations] == [
        ("scale out by 1 when avg Percentage CPU > 70 over PT2M", 50.0, False),
        ("scale in by 1 when avg Percentage CPU < 30 over PT2M", 50.0, False),
        ("observe when avg Network In Total > 1000000000 over PT2M", 12.0, False),
    ]
    assert isinstance(d, Decision)


def test_queries_target_the_scale_set() -> None:
    seen: list[str] = []

    def query(q: str) -> float:
        seen.append(q)
        return 50.0

    evaluate(setting(STANDARD), current_capacity=2, now=NOW, query=query)
    assert len(seen) == 2 and all('scale_set="web"' in q for q in seen)


def test_raw_query_rule() -> None:
    s = parse_autoscale_setting(
        {
            "targetResourceName": "web",
            "profiles": [
                {
                    "name": "p",
                    "capacity": {"minimum": 1, "maximum": 5, "default": 1},
                    "rules": [
                        {
                            "metricTrigger": {
                                "query": 'sum(rate(http_requests_total{scale_set="$scale_set"}[1m]))',
                                "operator": "GreaterThan",
                                "threshold": 100,
                            },
                            "scaleAction": {"direction": "Increase"},
                        }
                    ],
                }
            ],
        }
    )
    seen: list[str] = []

    def query(q: str) -> float:
        seen.append(q)
        return 150.0

    d = evaluate(s, current_capacity=1, now=NOW, query=query)
    assert seen == ['sum(rate(http_requests_total{scale_set="web"}[1m]))']
    assert d.reason == "scale out 1->2: avg query 150 > 100 over PT5M (profile p)"


@pytest.mark.parametrize("cur", [-1, True, 1.5])
def test_bad_current_capacity(cur: Any) -> None:
    with pytest.raises(InvalidSpec, match="current capacity"):
        evaluate(setting(STANDARD), current_capacity=cur, now=NOW, query=const(1.0))


@pytest.mark.parametrize(
    "value,expected",
    [
        (None, "avg Percentage CPU > 70 over PT2M"),
        (87.234, "avg Percentage CPU 87.23 > 70 over PT2M"),
        (12.0, "avg Percentage CPU 12 not > 70 over PT2M"),
    ],
)
def test_describe_trigger(value: float | None, expected: str) -> None:
    s = setting(STANDARD)
    assert describe_trigger(s.profiles[0].rules[0].metric_trigger, value) == expected


# ------------------------------------------------------------------------------------- property
@settings(max_examples=300, deadline=None)
@given(
    lo=st.integers(0, 5),
    span=st.integers(0, 10),
    cur=st.integers(0, 20),
    cpu=st.one_of(st.none(), st.floats(0, 200, allow_nan=False)),
    out_value=st.integers(0, 6),
    in_value=st.integers(0, 6),
    kind=st.sampled_from(["ChangeCount", PCT, EXACT]),
    cooled=st.booleans(),
)
def test_property_result_is_in_range_and_consistent(
    lo: int, span: int, cur: int, cpu: float | None, out_value: int, in_value: int, kind: str, cooled: bool
) -> None:
    hi = lo + span
    rules = [
        rule("GreaterThan", 70, "Increase", value=out_value, kind=kind),
        rule("LessThan", 30, "Decrease", value=in_value, kind=kind),
    ]
    d = evaluate(
        setting(rules, minimum=lo, maximum=hi),
        current_capacity=cur,
        now=NOW,
        query=const(cpu),
        last_scale_action_at=None if cooled else NOW - timedelta(minutes=1),
    )
    assert lo <= d.new_capacity <= hi
    assert d.direction == ("out" if d.new_capacity > cur else "in" if d.new_capacity < cur else "none")
    if lo <= cur <= hi and cpu is not None and 30 <= cpu <= 70:
        assert d.direction == "none"  # neither rule fires
    if lo <= cur <= hi and not cooled and cpu is not None:
        assert d.direction == "none"  # cooldown blocks both directions
