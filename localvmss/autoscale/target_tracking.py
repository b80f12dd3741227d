"""Target tracking, the Kubernetes HorizontalPodAutoscaler way (pure).

* ``desired = ceil(current * metric / target)``;
* no change while ``|metric / target - 1| <= tolerance`` (HPA's default tolerance is 0.1);
* stabilisation as in the HPA controller: scale-down uses the *highest* recommendation seen
  within the scale-down window and scale-up the *lowest* within the scale-up window, so one
  quiet (or busy) sample does not move the set. The history of raw recommendations is passed
  in and the new history handed back, so the caller owns the state;
* the result is clamped to the profile's [minimum, maximum].

A set at 0 instances has no per-instance metric, so it stays at its minimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from localvmss.errors import InvalidSpec

__all__ = ["Recommendation", "TargetTrackingResult", "hpa_desired", "recommend"]


@dataclass(frozen=True)
class Recommendation:
    """One raw (unstabilised, unclamped) recommendation and when it was made."""

    at: datetime
    replicas: int


@dataclass(frozen=True)
class TargetTrackingResult:
    desired: int  # stabilised and clamped: what to scale to
    raw: int  # the HPA formula alone
    stabilized: int  # after stabilisation, before clamping
    history: tuple[Recommendation, ...]
    reason: str


def _num(value: float) -> str:
    return f"{round(value, 2):g}" if abs(value) < 1e15 else f"{value:.3e}"


def hpa_desired(current: int, metric: float, target: float, tolerance: float = 0.1) -> int:
    """The HPA formula with its tolerance band; ``current`` when within tolerance."""
    if target <= 0 or not math.isfinite(target):
        raise InvalidSpec(f"target {target!r} must be a positive number")
    if not 0 <= tolerance < 1:
        raise InvalidSpec(f"tolerance {tolerance!r} must be from 0 to below 1")
    ratio = metric / target
    # The epsilon keeps 55/50 = 1.1000000000000001 inside a 0.1 tolerance.
    if abs(ratio - 1.0) <= tolerance + 1e-9:
        return current
    # Round first so 3 * 0.7 / 0.7 style float noise does not add an instance.
    return max(0, math.ceil(round(current * ratio, 9)))


def recommend(
    *,
    current: int,
    metric: float | None,
    target: float,
    minimum: int,
    maximum: int,
    now: datetime,
    history: Sequence[Recommendation] = (),
    tolerance: float = 0.1,
    scale_down_window: timedelta = timedelta(minutes=5),
    scale_up_window: timedelta = timedelta(0),
    metric_label: str = "metric",
) -> TargetTrackingResult:
    """Next capacity for one target-tracking evaluation, and the history to keep.

    Missing data (``metric`` None or not finite) records nothing and keeps the (clamped)
    current capacity, as the HPA skips scaling when it cannot read metrics.
    """
    if minimum > maximum:
        raise InvalidSpec(f"minimum {minimum} is greater than maximum {maximum}")
    up_cutoff = now - scale_up_window
    down_cutoff = now - scale_down_window
    kept = [r for r in history if r.at > up_cutoff or r.at > down_cutoff]

    if metric is None or not math.isfinite(metric):
        desired = max(minimum, min(maximum, current))
        return TargetTrackingResult(
            desired, current, current, tuple(kept), f"no data for {metric_label}; keeping {desired}"
        )

    raw = hpa_desired(current, metric, target, tolerance)
    up = raw
    down = raw
    for r in kept:
        if r.at > up_cutoff:
            up = min(up, r.replicas)
        if r.at > down_cutoff:
            down = max(down, r.replicas)
    stabilized = current
    if stabilized < up:
        stabilized = up
    if stabilized > down:
        stabilized = down
    desired = max(minimum, min(maximum, stabilized))
    kept.append(Recommendation(now, raw))

    ratio = metric / target
    text = f"{metric_label} {_num(metric)} vs target {_num(target)}"
    text += f" (ratio {ratio:.2f}, tolerance {tolerance:g})"
    if raw == current:
        text += f" -> keep {current}"
    else:
        text += f" -> {raw}"
    if stabilized != raw:
        text += f", stabilised to {stabilized}"
    if desired != stabilized:
        text += f", clamped to {desired} by [{minimum}, {maximum}]"
    return TargetTrackingResult(desired, raw, stabilized, tuple(kept), text)
