"""Target tracking: HPA formula, tolerance, stabilisation windows, clamping, engine wiring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from localvmss.autoscale.engine import evaluate
from localvmss.autoscale.settings import parse_autoscale_setting
from localvmss.autoscale.target_tracking import Recommendation, hpa_desired, recommend
from localvmss.errors import InvalidSpec

NOW = datetime(2024, 1, 10, 12, 0, tzinfo=UTC)


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


@pytest.mark.parametrize(
    "current,metric,target,tolerance,expected",
    [
        (2, 100.0, 50.0, 0.1, 4),
        (2, 54.0, 50.0, 0.1, 2),  # within tolerance
        (2, 55.0, 50.0, 0.1, 2),  # exactly at the tolerance edge: no change
        (2, 56.0, 50.0, 0.1, 3),  # ceil(2.24)
        (10, 45.0, 50.0, 0.1, 10),  # 0.9: edge, no change
        (10, 44.0, 50.0, 0.1, 9),  # ceil(8.8)
        (4, 10.0, 50.0, 0.1, 1),  # ceil(0.8)
        (4, 0.0, 50.0, 0.1, 0),
        (3, 70.0, 70.0, 0.1, 3),
        (3, 0.7, 0.7, 0.0, 3),  # no float noise at ratio 1
        (2, 51.0, 50.0, 0.0, 3),  # zero tolerance
        (2, 60.0, 50.0, 0.25, 2),  # wide tolerance
        (0, 100.0, 50.0, 0.1, 0),  # nothing to scale from
        (5, 150.0, 50.0, 0.1, 15),
    ],
)
def test_hpa_desired(current: int, metric: float, target: float, tolerance: float, expected: int) -> None:
    assert hpa_desired(current, metric, target, tolerance) == expected


@pytest.mark.parametrize("target,tolerance", [(0.0, 0.1), (-1.0, 0.1), (50.0, 1.0), (50.0, -0.1)])
def test_hpa_desired_rejects(target: float, tolerance: float) -> None:
    with pytest.raises(InvalidSpec):
        hpa_desired(2, 10.0, target, tolerance)


@pytest.mark.parametrize(
    "current,metric,history,down,up,minmax,expected,raw",
    [
        # no history: the formula, clamped
        (2, 100.0, [], 5, 0, (1, 10), 4, 4),
        (4, 10.0, [], 5, 0, (1, 10), 1, 1),  # no earlier recommendation to hold on to
        (4, 10.0, [], 0, 0, (1, 10), 1, 1),
        (8, 500.0, [], 5, 0, (1, 10), 10, 80),  # clamped to maximum
        (4, 1.0, [], 0, 0, (2, 10), 2, 1),  # clamped to minimum
        # scale-down stabilisation: highest recommendation in the window
        (6, 25.0, [(4, 6), (2, 5)], 5, 0, (1, 10), 6, 3),
        (6, 25.0, [(4, 4), (2, 5)], 5, 0, (1, 10), 5, 3),
        (6, 25.0, [(6, 6), (5.5, 5)], 5, 0, (1, 10), 3, 3),  # older than the window
        (6, 25.0, [(5, 6)], 5, 0, (1, 10), 3, 3),  # exactly window old: out
        # scale up is immediate with a zero up-window, whatever the history
        (2, 200.0, [(1, 1)], 5, 0, (1, 10), 8, 8),
        # scale-up stabilisation: lowest recommendation in the up-window
        (4, 100.0, [(1, 5)], 5, 3, (1, 10), 5, 8),
        (4, 100.0, [(1, 3)], 5, 3, (1, 10), 4, 8),  # lowest is below current: hold
        (4, 100.0, [(4, 3)], 5, 3, (1, 10), 8, 8),  # outside the up-window
        # within tolerance: no change recorded as current
        (4, 52.0, [(1, 2)], 5, 0, (1, 10), 4, 4),
    ],
)
def test_recommend(
    current: int,
    metric: float,
    history: list[tuple[float, int]],
    down: float,
    up: float,
    minmax: tuple[int, int],
    expected: int,
    raw: int,
) -> None:
    lo, hi = minmax
    res = recommend(
        current=current,
        metric=metric,
        target=50.0,
        minimum=lo,
        maximum=hi,
        now=NOW,
        history=[Recommendation(ago(m), r) for m, r in history],
        scale_down_window=timedelta(minutes=down),
        scale_up_window=timedelta(minutes=up),
    )
    assert (res.desired, res.raw) == (expected, raw), res.reason
    assert res.history[-1] == Recommendation(NOW, raw)


def test_history_is_pruned_to_the_longest_window() -> None:
    history = [Recommendation(ago(m), 3) for m in (10, 6, 4, 1)]
    res = recommend(
        current=3,
        metric=50.0,
        target=50.0,
        minimum=1,
        maximum=10,
        now=NOW,
        history=history,
        scale_down_window=timedelta(minutes=5),
        scale_up_window=timedelta(minutes=2),
    )
    assert [r.at for r in res.history] == [ago(4), ago(1), NOW]


@pytest.mark.parametrize("metric", [None, float("nan"), float("inf")])
def test_no_data_keeps_capacity_and_records_nothing(metric: float | None) -> None:
    history = [Recommendation(ago(1), 7)]
    res = recommend(current=3, metric=metric, target=50.0, minimum=1, maximum=10, now=NOW, history=history)
    assert res.desired == 3
    assert res.history == tuple(history)
    assert "no data" in res.reason


def test_no_data_still_clamps() -> None:
    res = recommend(current=12, metric=None, target=50.0, minimum=1, maximum=10, now=NOW)
    assert res.desired == 10


def test_recommend_rejects_min_above_max() -> None:
    with pytest.raises(InvalidSpec):
        recommend(current=1, metric=1.0, target=1.0, minimum=5, maximum=2, now=NOW)


def test_load_drop_is_stabilised_for_the_window() -> None:
    """Load falls from 100% to 20% at t=0 with 6 instances; the set holds for 5 minutes."""
    history: tuple[Recommendation, ...] = ()
    current = 6
    seen = []
    for minute in range(-3, 8):
        now = NOW + timedelta(minutes=minute)
        metric = 50.0 if minute < 0 else 20.0 * 6 / current  # total load fixed, spread over the set
        res = recommend(current=current, metric=metric, target=50.0, minimum=1, maximum=10, now=now, history=history)
        history = res.history
        current = res.desired
        seen.append(current)
    # minutes -3..-1 steady at 6; 0..3 held by the 6 recorded at -1, which is inside the
    # 5-minute window until minute 4 (the window excludes its start, as in the HPA).
    assert seen == [6, 6, 6, 6, 6, 6, 6, 3, 3, 3, 3]


def test_reason_mentions_numbers() -> None:
    res = recommend(
        current=2,
        metric=100.0,
        target=50.0,
        minimum=1,
        maximum=3,
        now=NOW,
        metric_label="avg Percentage CPU",
    )
    assert res.reason == (
        "avg Percentage CPU 100 vs target 50 (ratio 2.00, tolerance 0.1) -> 4, clamped to 3 by [1, 3]"
    )


# ------------------------------------------------------------------------------ via the engine
def tt_setting(**tt: Any) -> Any:
    target_tracking = {"metricName": "Percentage CPU", "target": 50, **tt}
    return parse_autoscale_setting(
        {
            "targetResourceName": "web",
            "profiles": [
                {
                    "name": "tt",
                    "capacity": {"minimum": 1, "maximum": 10, "default": 2},
                    "targetTracking": target_tracking,
                }
            ],
        }
    )


def test_engine_target_tracking_scale_out_and_history() -> None:
    s = tt_setting()
    seen: list[str] = []

    def query(q: str) -> float:
        seen.append(q)
        return 100.0

    d = evaluate(s, current_capacity=2, now=NOW, query=query)
    assert (d.new_capacity, d.direction) == (4, "out")
    assert d.reason == (
        "scale out 2->4: target tracking avg Percentage CPU 100 vs target 50 (ratio 2.00, tolerance 0.1)"
        " -> 4 (profile tt)"
    )
    assert d.history == (Recommendation(NOW, 4),)
    assert seen == [
        'avg(avg_over_time((100 * rate(localvmss_instance_cpu_seconds_total{scale_set="web"}[1m])'
        ' / localvmss_instance_vcpus{scale_set="web"})[2m:1m]))'
    ]
    assert d.observations[0].value == 100.0 and d.observations[0].triggered


def test_engine_target_tracking_scale_down_is_stabilised() -> None:
    s = tt_setting(scaleDownStabilizationWindow="PT3M")
    d1 = evaluate(s, current_capacity=4, now=NOW, query=lambda _q: 50.0)
    assert d1.direction == "none" and "keep 4" in d1.reason
    d2 = evaluate(s, current_capacity=4, now=NOW + timedelta(minutes=1), query=lambda _q: 10.0, history=d1.history)
    assert (d2.new_capacity, d2.direction) == (4, "none")
    assert "stabilised to 4" in d2.reason
    d3 = evaluate(s, current_capacity=4, now=NOW + timedelta(minutes=3), query=lambda _q: 10.0, history=d2.history)
    assert (d3.new_capacity, d3.direction) == (1, "in")


def test_engine_target_tracking_tolerance() -> None:
    s = tt_setting(tolerance=0.3)
    d = evaluate(s, current_capacity=4, now=NOW, query=lambda _q: 64.0)
    assert (d.new_capacity, d.direction) == (4, "none")
    d = evaluate(s, current_capacity=4, now=NOW, query=lambda _q: 66.0)
    assert (d.new_capacity, d.direction) == (6, "out")


def test_engine_target_tracking_no_data() -> None:
    d = evaluate(tt_setting(), current_capacity=3, now=NOW, query=lambda _q: None)
    assert (d.new_capacity, d.direction) == (3, "none")
    assert "no data" in d.reason
