"""Evaluate an autoscale setting against metric values (pure: time and metrics are passed in).

Profile selection (``select_profile``), as Azure does it:

1. a profile whose ``fixedDate`` window contains ``now`` (start inclusive, end exclusive) wins;
   the first such profile in list order;
2. else the recurrence profile whose most recent start (its days x hours x minutes, as wall
   times in its own time zone) is the latest one at or before ``now``: a recurrence profile runs
   until the next recurrence profile starts. Ties go to the first in list order. A start that
   falls into a spring-forward gap happens at the wall time plus the gap (02:30 -> 03:30); a
   start in a repeated autumn hour happens at its first occurrence (PEP 495 ``fold=0``);
3. else the default profile (neither fixedDate nor recurrence).

Naive ``now`` values are taken as UTC.

Rule evaluation (``evaluate``), Azure semantics:

* capacity outside the profile's [minimum, maximum] is moved into range first, without
  looking at metrics or cooldowns;
* a profile without rules or target tracking sets the capacity to its default;
* when no rule has any metric data and the capacity is below the profile default, the set
  is raised to the default (Azure: "default" is used when metrics are unavailable);
* scale out if ANY scale-out rule triggers; when several do, the largest resulting capacity wins;
* scale in only if ALL scale-in rules trigger; the smallest reduction among them is used;
* missing data (query returns None, NaN or inf) means the rule does not trigger;
* cooldown: a rule may act only when at least its ``cooldown`` has passed since the last scale
  action *in either direction* (Azure: "the amount of time to wait since the last scaling
  action"); ``last_direction`` is only used to word the reason;
* flapping estimate: before scaling in from N to M, each scale-out rule's value is projected to
  ``value * N / M`` (load-proportional metrics only, see ``metrics_catalog.is_load_proportional``)
  and if any projection would trigger its scale-out rule, a smaller step is tried; if no step
  avoids it, scale-in is skipped and the reason says "flapping" (Azure may "scale in by a
  smaller number of instances than specified" or skip);
* ChangeCount adds/removes ``value``; PercentChangeCount ``ceil(current * value / 100)``, at
  least 1; ExactCount sets ``value``; the result is clamped to [minimum, maximum].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

import isodate

from localvmss.autoscale.metrics_catalog import build_query, is_load_proportional
from localvmss.autoscale.settings import (
    WEEKDAYS,
    AutoscaleSetting,
    ComparisonOperator,
    MetricTrigger,
    Profile,
    Recurrence,
    Rule,
    ScaleAction,
    ScaleDirection,
    ScaleType,
    TimeAggregation,
    finite,
)
from localvmss.autoscale.target_tracking import Recommendation, recommend
from localvmss.errors import InvalidSpec

__all__ = [
    "Decision",
    "Direction",
    "Observation",
    "apply_action",
    "compare",
    "describe_trigger",
    "evaluate",
    "latest_recurrence_start",
    "select_profile",
]

Direction = Literal["out", "in", "none"]
QueryFn = Callable[[str], float | None]

_OP_SYMBOL = {
    ComparisonOperator.EQUALS: "==",
    ComparisonOperator.NOT_EQUALS: "!=",
    ComparisonOperator.GREATER_THAN: ">",
    ComparisonOperator.GREATER_THAN_OR_EQUAL: ">=",
    ComparisonOperator.LESS_THAN: "<",
    ComparisonOperator.LESS_THAN_OR_EQUAL: "<=",
}
_AGG_WORD = {
    TimeAggregation.AVERAGE: "avg",
    TimeAggregation.MINIMUM: "min",
    TimeAggregation.MAXIMUM: "max",
    TimeAggregation.TOTAL: "total",
    TimeAggregation.COUNT: "count",
    TimeAggregation.LAST: "last",
}


class Observation(NamedTuple):
    """What one rule saw: its description, the metric value (None = no data), whether it fired."""

    rule: str
    value: float | None
    triggered: bool


@dataclass
class Decision:
    new_capacity: int
    direction: Direction
    reason: str
    profile: str
    observations: list[Observation] = field(default_factory=list)
    # Target-tracking recommendation history to pass into the next evaluate() (empty for rules).
    history: tuple[Recommendation, ...] = ()


# ----------------------------------------------------------------------------------- formatting
def _num(value: float) -> str:
    if abs(value) >= 1e15:
        return f"{value:.3e}"
    return f"{round(value, 2):g}" if abs(value) < 1e6 else str(round(value))


def _iso(td: timedelta) -> str:
    return str(isodate.duration_isoformat(td))


def describe_trigger(trigger: MetricTrigger, value: float | None = None) -> str:
    """``avg Percentage CPU > 70 over PT2M``; with a value: ``avg Percentage CPU 87.2 > 70 over PT2M``."""
    head = f"{_AGG_WORD[trigger.time_aggregation]} {trigger.display_name}"
    cond = f"{_OP_SYMBOL[trigger.operator]} {_num(trigger.threshold)} over {_iso(trigger.time_window)}"
    if value is None:
        return f"{head} {cond}"
    if not compare(trigger.operator, value, trigger.threshold):
        cond = "not " + cond
    return f"{head} {_num(value)} {cond}"


def _describe_rule(rule: Rule) -> str:
    a = rule.scale_action
    verbs = {ScaleDirection.INCREASE: "scale out", ScaleDirection.DECREASE: "scale in"}
    verb = verbs.get(a.direction, "observe")
    if a.direction is ScaleDirection.NONE:
        return f"{verb} when {describe_trigger(rule.metric_trigger)}"
    amount = {
        ScaleType.CHANGE_COUNT: f"by {a.value}",
        ScaleType.PERCENT_CHANGE_COUNT: f"by {a.value}%",
        ScaleType.EXACT_COUNT: f"to {a.value}",
    }[a.kind]
    return f"{verb} {amount} when {describe_trigger(rule.metric_trigger)}"


def _observed_text(rule: Rule, value: float | None) -> str:
    if value is None:
        t = rule.metric_trigger
        return f"{_AGG_WORD[t.time_aggregation]} {t.display_name}: no data over {_iso(t.time_window)}"
    return describe_trigger(rule.metric_trigger, value)


# ------------------------------------------------------------------------------------ profiles
def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def latest_recurrence_start(recurrence: Recurrence, now: datetime) -> datetime:
    """The most recent start of a weekly recurrence at or before ``now`` (UTC-aware result)."""
    now_utc = _utc(now)
    sched = recurrence.schedule
    tz = sched.tz
    today = now_utc.astimezone(tz).date()
    best: datetime | None = None
    # Today back to the same weekday last week always contains a start at or before now.
    for back in range(8):
        day = today - timedelta(days=back)
        if WEEKDAYS[day.weekday()] not in sched.days:
            continue
        for hour in sched.hours:
            for minute in sched.minutes:
                local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
                start = local.astimezone(UTC)  # compare in UTC: wall-time order breaks at DST
                if start <= now_utc and (best is None or start > best):
                    best = start
    if best is None:  # unreachable with validated schedules (non-empty days/hours/minutes)
        raise InvalidSpec("recurrence schedule has no start time")
    return best


def select_profile(setting: AutoscaleSetting, now: datetime) -> Profile:
    """The profile in force at ``now``: fixedDate, else latest-started recurrence, else default."""
    now_utc = _utc(now)
    for p in setting.profiles:
        if p.fixed_date is not None and p.fixed_date.start_at <= now_utc < p.fixed_date.end_at:
            return p
    best: tuple[datetime, Profile] | None = None
    for p in setting.profiles:
        if p.recurrence is not None:
            start = latest_recurrence_start(p.recurrence, now_utc)
            if best is None or start > best[0]:
                best = (start, p)
    if best is not None:
        return best[1]
    for p in setting.profiles:
        if p.is_default:
            return p
    raise InvalidSpec("no autoscale profile applies and there is no default profile")


# -------------------------------------------------------------------------------------- rules
def compare(operator: ComparisonOperator, value: float, threshold: float) -> bool:
    """Azure's comparison operators."""
    match operator:
        case ComparisonOperator.GREATER_THAN:
            return value > threshold
        case ComparisonOperator.GREATER_THAN_OR_EQUAL:
            return value >= threshold
        case ComparisonOperator.LESS_THAN:
            return value < threshold
        case ComparisonOperator.LESS_THAN_OR_EQUAL:
            return value <= threshold
        case ComparisonOperator.EQUALS:
            return value == threshold
        case ComparisonOperator.NOT_EQUALS:
            return value != threshold
    raise InvalidSpec(f"operator {operator!r} is unknown")


def apply_action(action: ScaleAction, current: int) -> int:
    """Capacity after ``action`` from ``current``, before clamping (never below 0)."""
    if action.direction is ScaleDirection.NONE:
        return current
    if action.kind is ScaleType.EXACT_COUNT:
        return action.value
    if action.kind is ScaleType.PERCENT_CHANGE_COUNT:
        delta = math.ceil(round(current * action.value / 100, 9))
        if action.value > 0:
            delta = max(1, delta)
    else:
        delta = action.value
    if action.direction is ScaleDirection.INCREASE:
        return current + delta
    return max(0, current - delta)


def _cooldown_left(rule: Rule, now: datetime, last_at: datetime | None) -> timedelta:
    if last_at is None:
        return timedelta(0)
    left = _utc(last_at) + rule.scale_action.cooldown - now
    return max(left, timedelta(0))


def _projection_flaps(out_rules: Sequence[tuple[Rule, float | None]], current: int, new: int) -> tuple[bool, str]:
    """Would scaling in to ``new`` make a scale-out rule fire? (Azure's flapping estimate.)"""
    for rule, value in out_rules:
        if value is None:
            continue
        t = rule.metric_trigger
        if is_load_proportional(t):
            projected = math.inf if new == 0 and value > 0 else (0.0 if new == 0 else value * current / new)
        else:
            projected = value
        if compare(t.operator, projected, t.threshold):
            return True, (
                f"{_AGG_WORD[t.time_aggregation]} {t.display_name} would be {_num(projected)} "
                f"{_OP_SYMBOL[t.operator]} {_num(t.threshold)} at {new}"
            )
    return False, ""


def _fmt_when(at: datetime) -> str:
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate(
    setting: AutoscaleSetting,
    *,
    current_capacity: int,
    now: datetime,
    query: QueryFn,
    last_scale_action_at: datetime | None = None,
    last_direction: Direction | None = None,
    history: Sequence[Recommendation] = (),
) -> Decision:
    """One autoscale evaluation: which capacity the set should have now, and why (one line).

    ``query`` runs one PromQL expression and returns its single value or None. ``history`` is
    the target-tracking history from the previous Decision (ignored for rule profiles).
    """
    if isinstance(current_capacity, bool) or not isinstance(current_capacity, int) or current_capacity < 0:
        raise InvalidSpec(f"current capacity {current_capacity!r} must be a non-negative integer")
    now = _utc(now)
    cur = current_capacity
    profile = select_profile(setting, now)
    tag = f"(profile {profile.name})"
    cap = profile.capacity

    def decide(new: int, why: str, obs: list[Observation], hist: Sequence[Recommendation] = ()) -> Decision:
        direction: Direction = "out" if new > cur else "in" if new < cur else "none"
        return Decision(new, direction, f"{why} {tag}", profile.name, obs, tuple(hist))

    if not setting.enabled:
        return decide(cur, f"no change at {cur}: autoscale setting is disabled", [])
    if cur < cap.minimum:
        why = f"scale out {cur}->{cap.minimum}: capacity is below the profile minimum {cap.minimum}"
        return decide(cap.minimum, why, [])
    if cur > cap.maximum:
        why = f"scale in {cur}->{cap.maximum}: capacity is above the profile maximum {cap.maximum}"
        return decide(cap.maximum, why, [])

    tt = profile.target_tracking
    if tt is not None:
        value = finite(query(build_query(tt, setting.scale_set)))
        label = f"{_AGG_WORD[tt.time_aggregation]} {tt.display_name}"
        res = recommend(
            current=cur,
            metric=value,
            target=tt.target,
            minimum=cap.minimum,
            maximum=cap.maximum,
            now=now,
            history=history,
            tolerance=tt.tolerance,
            scale_down_window=tt.scale_down_stabilization_window,
            scale_up_window=tt.scale_up_stabilization_window,
            metric_label=label,
        )
        obs = [Observation(f"target tracking {label} at {_num(tt.target)}", value, res.desired != cur)]
        verb = "scale out" if res.desired > cur else "scale in" if res.desired < cur else "no change at"
        move = f"{cur}->{res.desired}" if res.desired != cur else f"{cur}"
        return decide(res.desired, f"{verb} {move}: target tracking {res.reason}", obs, res.history)

    if not profile.rules:
        new = cap.default
        if new == cur:
            return decide(cur, f"no change at {cur}: profile has no rules; at its default {new}", [])
        verb = "scale out" if new > cur else "scale in"
        return decide(new, f"{verb} {cur}->{new}: profile has no rules; using its default {new}", [])

    # Query every rule once.
    results: list[tuple[Rule, float | None, bool]] = []
    for rule in profile.rules:
        value = finite(query(build_query(rule.metric_trigger, setting.scale_set)))
        t = rule.metric_trigger
        fired = value is not None and compare(t.operator, value, t.threshold)
        results.append((rule, value, fired))
    obs = [Observation(_describe_rule(r), v, f) for r, v, f in results]

    if all(v is None for _, v, _ in results) and cur < cap.default:
        return decide(cap.default, f"scale out {cur}->{cap.default}: no metric data; using the profile default", obs)

    # Scale out: any rule.
    out_fired = [(r, v) for r, v, f in results if f and r.scale_action.direction is ScaleDirection.INCREASE]
    if out_fired:
        ready = [(r, v) for r, v in out_fired if _cooldown_left(r, now, last_scale_action_at) == timedelta(0)]
        if not ready:
            left = min(_cooldown_left(r, now, last_scale_action_at) for r, _ in out_fired)
            assert last_scale_action_at is not None
            after = f" after scale {last_direction}" if last_direction in ("out", "in") else ""
            return decide(
                cur,
                f"no change at {cur}: {_observed_text(*out_fired[0])} but in cooldown for {_iso(left)} "
                f"(last scale action{after} at {_fmt_when(last_scale_action_at)})",
                obs,
            )
        target, rule, value = max(
            ((min(cap.maximum, apply_action(r.scale_action, cur)), r, v) for r, v in ready),
            key=lambda t: t[0],
        )
        if target <= cur:
            why = f"no change at {cur}: {_observed_text(rule, value)} but at the maximum {cap.maximum}"
            return decide(cur, why, obs)
        return decide(target, f"scale out {cur}->{target}: {_observed_text(rule, value)}", obs)

    # Scale in: all rules.
    in_rules = [(r, v, f) for r, v, f in results if r.scale_action.direction is ScaleDirection.DECREASE]
    if not in_rules:
        return decide(cur, f"no change at {cur}: {_summary(results)}", obs)
    if not all(f for _, _, f in in_rules):
        return decide(cur, f"no change at {cur}: {_summary(results)}", obs)
    cooling = [r for r, _, _ in in_rules if _cooldown_left(r, now, last_scale_action_at) > timedelta(0)]
    if cooling:
        left = max(_cooldown_left(r, now, last_scale_action_at) for r in cooling)
        assert last_scale_action_at is not None
        after = f" after scale {last_direction}" if last_direction in ("out", "in") else ""
        return decide(
            cur,
            f"no change at {cur}: scale-in rules triggered but in cooldown for {_iso(left)} "
            f"(last scale action{after} at {_fmt_when(last_scale_action_at)})",
            obs,
        )
    target = max(max(cap.minimum, apply_action(r.scale_action, cur)) for r, _, _ in in_rules)
    cond = "; ".join(_observed_text(r, v) for r, v, _ in in_rules)
    if target >= cur:
        return decide(cur, f"no change at {cur}: {cond} but at the minimum {cap.minimum}", obs)

    out_rules = [(r, v) for r, v, _ in results if r.scale_action.direction is ScaleDirection.INCREASE]
    first_flap = ""
    for new in range(target, cur):
        flaps, why = _projection_flaps(out_rules, cur, new)
        if not flaps:
            if new == target:
                return decide(new, f"scale in {cur}->{new}: {cond}", obs)
            why = f"scale in {cur}->{new}: {cond}; reduced from {cur}->{target} to avoid flapping"
            return decide(new, f"{why} ({first_flap})", obs)
        first_flap = first_flap or why
    return decide(cur, f"no change at {cur}: scale in skipped to avoid flapping: {first_flap}", obs)


def _summary(results: Sequence[tuple[Rule, float | None, bool]]) -> str:
    return "; ".join(_observed_text(r, v) for r, v, _ in results)
