"""Autoscale settings shaped like Azure's ``Microsoft.Insights/autoscaleSettings`` JSON.

Field names are camelCase on the wire (``populate_by_name`` also allows the snake_case names),
values are validated on the way in, and ``parse_autoscale_setting`` turns any problem into one
``InvalidSpec`` line naming the field path, e.g.
``profiles[0].rules[1].metricTrigger.timeWindow: 'PT5' is not an ISO-8601 duration such as PT5M``.

Where we differ from Azure, on purpose:

* Durations (timeGrain, timeWindow) may be as short as PT15S (Azure: PT1M) so tests need not
  wait minutes; they may be at most PT12H as in Azure. Cooldowns are PT0S..P7D (Azure: PT1M..).
* timeGrain, statistic, timeWindow, timeAggregation, scaleAction value and cooldown have
  defaults (PT1M, Average, PT5M, Average, 1, PT5M); Azure requires them.
* ``metricTrigger.query`` (raw PromQL, ``$scale_set`` substituted) and ``targetTracking``
  (a Kubernetes-HPA-style target per profile) are ours.
* ``targetResourceName`` names the scale set; Azure's ``targetResourceUri`` is accepted and its
  last path segment used when the name is missing.
* Enum values and metric names match case-insensitively and are stored in Azure's spelling.
* ``notifications``: webhooks are delivered with Azure's payload; email is refused (no mail
  transport), see ``notifications.py``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import isodate
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_pascal

from localvmss.autoscale.metrics_catalog import CATALOG, canonical_metric_name
from localvmss.autoscale.notifications import Notification, WebhookNotification
from localvmss.errors import InvalidSpec
from localvmss.model import UNIFORM_MAX_CAPACITY, validate_name

__all__ = [
    "AutoscaleSetting",
    "Capacity",
    "ComparisonOperator",
    "Dimension",
    "DimensionOperator",
    "FixedDate",
    "MetricSource",
    "MetricTrigger",
    "Profile",
    "Recurrence",
    "RecurrenceSchedule",
    "Rule",
    "ScaleAction",
    "ScaleDirection",
    "ScaleType",
    "Statistic",
    "TargetTracking",
    "TimeAggregation",
    "WINDOWS_TIME_ZONES",
    "WEEKDAYS",
    "parse_autoscale_setting",
    "resolve_time_zone",
]

MAX_PROFILES = 20  # Azure's limits per setting / per profile
MAX_RULES = 10


# ------------------------------------------------------------------------------------------ enums
class Statistic(StrEnum):
    AVERAGE = "Average"
    MIN = "Min"
    MAX = "Max"
    SUM = "Sum"
    COUNT = "Count"


class TimeAggregation(StrEnum):
    AVERAGE = "Average"
    MINIMUM = "Minimum"
    MAXIMUM = "Maximum"
    TOTAL = "Total"
    COUNT = "Count"
    LAST = "Last"


class ComparisonOperator(StrEnum):
    EQUALS = "Equals"
    NOT_EQUALS = "NotEquals"
    GREATER_THAN = "GreaterThan"
    GREATER_THAN_OR_EQUAL = "GreaterThanOrEqual"
    LESS_THAN = "LessThan"
    LESS_THAN_OR_EQUAL = "LessThanOrEqual"


class ScaleDirection(StrEnum):
    NONE = "None"
    INCREASE = "Increase"
    DECREASE = "Decrease"


class ScaleType(StrEnum):
    CHANGE_COUNT = "ChangeCount"
    PERCENT_CHANGE_COUNT = "PercentChangeCount"
    EXACT_COUNT = "ExactCount"


class DimensionOperator(StrEnum):
    EQUALS = "Equals"
    NOT_EQUALS = "NotEquals"


WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

E = TypeVar("E", bound=StrEnum)


def _enum(cls: type[E], what: str) -> Callable[[Any], E]:
    """Case-insensitive enum parsing with an error that lists the allowed values."""

    def parse(value: Any) -> E:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.strip().lower():
                    return member
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"{what} {value!r} is not one of {allowed}")

    return parse


StatisticField = Annotated[Statistic, BeforeValidator(_enum(Statistic, "statistic"))]
TimeAggregationField = Annotated[TimeAggregation, BeforeValidator(_enum(TimeAggregation, "timeAggregation"))]
OperatorField = Annotated[ComparisonOperator, BeforeValidator(_enum(ComparisonOperator, "operator"))]
DirectionField = Annotated[ScaleDirection, BeforeValidator(_enum(ScaleDirection, "direction"))]
ScaleTypeField = Annotated[ScaleType, BeforeValidator(_enum(ScaleType, "type"))]
DimensionOperatorField = Annotated[DimensionOperator, BeforeValidator(_enum(DimensionOperator, "Operator"))]


# -------------------------------------------------------------------------------------- durations
def _iso(value: timedelta) -> str:
    return str(isodate.duration_isoformat(value))


def _duration(low: timedelta, high: timedelta) -> Callable[[Any], timedelta]:
    """Parse an ISO-8601 duration (``PT5M``) of fixed length within [low, high]."""

    def parse(value: Any) -> timedelta:
        if isinstance(value, timedelta):
            td = value
        elif isinstance(value, str):
            try:
                parsed = isodate.parse_duration(value.strip())
            except (isodate.ISO8601Error, ValueError, TypeError):
                raise ValueError(f"{value!r} is not an ISO-8601 duration such as PT5M") from None
            if not isinstance(parsed, timedelta):
                raise ValueError(f"{value!r} uses months or years; use days, hours, minutes or seconds")
            td = parsed
        else:
            raise ValueError(f"{value!r} is not an ISO-8601 duration string such as PT5M")
        if not low <= td <= high:
            raise ValueError(f"{_iso(td)} must be from {_iso(low)} to {_iso(high)}")
        return td

    return parse


_AS_ISO = PlainSerializer(_iso, return_type=str)
# Azure allows PT1M..PT12H for grains and windows; PT15S is our floor so tests run quickly.
GrainDuration = Annotated[timedelta, BeforeValidator(_duration(timedelta(seconds=15), timedelta(hours=12))), _AS_ISO]
WindowDuration = GrainDuration
CooldownDuration = Annotated[timedelta, BeforeValidator(_duration(timedelta(0), timedelta(days=7))), _AS_ISO]
StabilizationDuration = Annotated[timedelta, BeforeValidator(_duration(timedelta(0), timedelta(hours=1))), _AS_ISO]


# ------------------------------------------------------------------------------------- time zones
# Windows time zone names Azure uses -> IANA (CLDR windowsZones, territory "001").
WINDOWS_TIME_ZONES: dict[str, str] = {
    "UTC": "Etc/UTC",
    "Coordinated Universal Time": "Etc/UTC",
    "Dateline Standard Time": "Etc/GMT+12",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Alaskan Standard Time": "America/Anchorage",
    "Pacific Standard Time": "America/Los_Angeles",
    "US Mountain Standard Time": "America/Phoenix",
    "Mountain Standard Time": "America/Denver",
    "Central Standard Time": "America/Chicago",
    "Central Standard Time (Mexico)": "America/Mexico_City",
    "Canada Central Standard Time": "America/Regina",
    "SA Pacific Standard Time": "America/Bogota",
    "Eastern Standard Time": "America/New_York",
    "US Eastern Standard Time": "America/Indiana/Indianapolis",
    "Venezuela Standard Time": "America/Caracas",
    "Atlantic Standard Time": "America/Halifax",
    "Newfoundland Standard Time": "America/St_Johns",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Argentina/Buenos_Aires",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "Romance Standard Time": "Europe/Paris",
    "W. Central Africa Standard Time": "Africa/Lagos",
    "E. Europe Standard Time": "Europe/Chisinau",
    "GTB Standard Time": "Europe/Bucharest",
    "FLE Standard Time": "Europe/Kyiv",
    "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem",
    "Egypt Standard Time": "Africa/Cairo",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Russian Standard Time": "Europe/Moscow",
    "Arab Standard Time": "Asia/Riyadh",
    "E. Africa Standard Time": "Africa/Nairobi",
    "Iran Standard Time": "Asia/Tehran",
    "Arabian Standard Time": "Asia/Dubai",
    "Pakistan Standard Time": "Asia/Karachi",
    "India Standard Time": "Asia/Kolkata",
    "Sri Lanka Standard Time": "Asia/Colombo",
    "Nepal Standard Time": "Asia/Kathmandu",
    "Bangladesh Standard Time": "Asia/Dhaka",
    "SE Asia Standard Time": "Asia/Bangkok",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Taipei Standard Time": "Asia/Taipei",
    "W. Australia Standard Time": "Australia/Perth",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "Cen. Australia Standard Time": "Australia/Adelaide",
    "E. Australia Standard Time": "Australia/Brisbane",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
}
_WINDOWS_LOWER = {k.lower(): v for k, v in WINDOWS_TIME_ZONES.items()}


def resolve_time_zone(name: str) -> ZoneInfo:
    """A Windows time zone name (as Azure uses) or an IANA name -> ZoneInfo, else ValueError."""
    if isinstance(name, str) and name.strip():
        key = _WINDOWS_LOWER.get(name.strip().lower(), name.strip())
        try:
            return ZoneInfo(key)
        except (ValueError, KeyError, OSError):
            pass
    raise ValueError(
        f"timeZone {name!r} is unknown; use an IANA name such as Europe/Amsterdam or a Windows name "
        f"such as 'W. Europe Standard Time'"
    )


def _check_time_zone(name: str) -> str:
    resolve_time_zone(name)
    return name


TimeZoneName = Annotated[str, AfterValidator(_check_time_zone)]


# ---------------------------------------------------------------------------------------- helpers
def _count(what: str, high: int = UNIFORM_MAX_CAPACITY) -> Callable[[Any], int]:
    """Azure sends counts as strings ("2"); accept those and ints, store ints within 0..high."""

    def parse(value: Any) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
            number = int(value.strip())
        if number is None or not 0 <= number <= high:
            raise ValueError(f"{what} {value!r} must be an integer from 0 to {high}")
        return number

    return parse


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", validate_assignment=False
    )


# ------------------------------------------------------------------------------------------ model
class Capacity(_Model):
    minimum: Annotated[int, BeforeValidator(_count("minimum"))]
    maximum: Annotated[int, BeforeValidator(_count("maximum"))]
    default: Annotated[int, BeforeValidator(_count("default"))]

    @model_validator(mode="after")
    def _ordered(self) -> Capacity:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is greater than maximum {self.maximum}")
        if not self.minimum <= self.default <= self.maximum:
            raise ValueError(f"default {self.default} is outside [minimum {self.minimum}, maximum {self.maximum}]")
        return self

    def clamp(self, value: int) -> int:
        return max(self.minimum, min(self.maximum, value))


class Dimension(_Model):
    """Azure's ScaleRuleMetricDimension (PascalCase on the wire): filters instances by label."""

    model_config = ConfigDict(alias_generator=to_pascal, populate_by_name=True, extra="forbid")

    dimension_name: str
    operator: DimensionOperatorField = DimensionOperator.EQUALS
    values: list[str] = Field(min_length=1)


class MetricSource(_Model):
    """Where a number comes from: a catalogue metric or a raw PromQL query, and how it is aggregated."""

    metric_name: str | None = None
    metric_namespace: str | None = None
    metric_resource_uri: str | None = None  # Azure field; ignored, the metric is the target set's
    metric_resource_location: str | None = None  # Azure field; ignored
    query: str | None = None
    time_grain: GrainDuration = timedelta(minutes=1)
    statistic: StatisticField = Statistic.AVERAGE
    time_window: WindowDuration = timedelta(minutes=5)
    time_aggregation: TimeAggregationField = TimeAggregation.AVERAGE
    dimensions: list[Dimension] | None = None

    @model_validator(mode="after")
    def _source(self) -> MetricSource:
        if self.query is not None:
            if not self.query.strip():
                raise ValueError("query must not be empty")
            if self.dimensions:
                raise ValueError("dimensions apply to catalogue metrics, not to a raw query")
        elif self.metric_name is None:
            raise ValueError(f"needs a metricName ({', '.join(CATALOG)}) or a query")
        else:
            self.metric_name = canonical_metric_name(self.metric_name)
            allowed = CATALOG[self.metric_name].dimensions
            for d in self.dimensions or ():
                if d.dimension_name not in allowed:
                    raise ValueError(
                        f"dimension {d.dimension_name!r} is not available for {self.metric_name!r}; "
                        f"available: {', '.join(sorted(allowed))}"
                    )
        if self.time_window < self.time_grain:
            raise ValueError(f"timeWindow {_iso(self.time_window)} is shorter than timeGrain {_iso(self.time_grain)}")
        return self

    @property
    def display_name(self) -> str:
        """How reasons name the metric: the metric name, or 'query' for an unnamed raw query."""
        return self.metric_name or "query"


class MetricTrigger(MetricSource):
    operator: OperatorField
    threshold: float = Field(allow_inf_nan=False)


class ScaleAction(_Model):
    direction: DirectionField
    kind: ScaleTypeField = Field(ScaleType.CHANGE_COUNT, alias="type")
    value: Annotated[int, BeforeValidator(_count("value"))] = 1
    cooldown: CooldownDuration = timedelta(minutes=5)


class Rule(_Model):
    metric_trigger: MetricTrigger
    scale_action: ScaleAction


class FixedDate(_Model):
    """A one-off window; naive start/end are wall times in ``timeZone``."""

    time_zone: TimeZoneName = "UTC"
    start: datetime
    end: datetime

    @property
    def tz(self) -> tzinfo:
        return resolve_time_zone(self.time_zone)

    def _aware(self, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=self.tz)

    @property
    def start_at(self) -> datetime:
        return self._aware(self.start)

    @property
    def end_at(self) -> datetime:
        return self._aware(self.end)

    @model_validator(mode="after")
    def _ordered(self) -> FixedDate:
        if self.end_at <= self.start_at:
            raise ValueError(f"end {self.end.isoformat()} is not after start {self.start.isoformat()}")
        return self


def _days(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    out = []
    for day in value:
        match = [d for d in WEEKDAYS if isinstance(day, str) and d.lower() == day.strip().lower()]
        if not match:
            raise ValueError(f"day {day!r} is not one of {', '.join(WEEKDAYS)}")
        out.append(match[0])
    return out


class RecurrenceSchedule(_Model):
    time_zone: TimeZoneName
    days: Annotated[list[str], BeforeValidator(_days)] = Field(min_length=1)
    hours: list[Annotated[int, Field(ge=0, le=23, strict=True)]] = Field(min_length=1)
    minutes: list[Annotated[int, Field(ge=0, le=59, strict=True)]] = Field(min_length=1)

    @property
    def tz(self) -> tzinfo:
        return resolve_time_zone(self.time_zone)


class Recurrence(_Model):
    frequency: str = "Week"
    schedule: RecurrenceSchedule

    @field_validator("frequency")
    @classmethod
    def _weekly(cls, value: str) -> str:
        if value.strip().lower() != "week":
            raise ValueError(f"frequency {value!r} is not supported; Azure recurrences are weekly: Week")
        return "Week"


class TargetTracking(MetricSource):
    """Ours, not Azure's: keep the per-instance metric near ``target`` like a Kubernetes HPA."""

    time_window: WindowDuration = timedelta(minutes=2)
    target: float = Field(gt=0, allow_inf_nan=False)
    tolerance: float = Field(0.1, ge=0, lt=1, allow_inf_nan=False)
    scale_down_stabilization_window: StabilizationDuration = timedelta(minutes=5)
    scale_up_stabilization_window: StabilizationDuration = timedelta(0)


class Profile(_Model):
    name: str = Field(min_length=1, max_length=256)
    capacity: Capacity
    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    fixed_date: FixedDate | None = None
    recurrence: Recurrence | None = None
    target_tracking: TargetTracking | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Profile:
        if self.fixed_date is not None and self.recurrence is not None:
            raise ValueError(f"profile {self.name!r} has both fixedDate and recurrence; use one")
        if self.rules and self.target_tracking is not None:
            raise ValueError(f"profile {self.name!r} has both rules and targetTracking; use one")
        return self

    @property
    def is_default(self) -> bool:
        """The regular profile: neither a fixed date nor a recurrence."""
        return self.fixed_date is None and self.recurrence is None


class AutoscaleSetting(_Model):
    enabled: bool = True
    profiles: list[Profile] = Field(min_length=1, max_length=MAX_PROFILES)
    target_resource_name: str | None = None
    # Azure fields accepted and ignored.
    name: str | None = None
    target_resource_uri: str | None = None
    target_resource_location: str | None = None
    predictive_autoscale_policy: dict[str, Any] | None = None
    # Delivered as webhooks on every capacity change, or refused here (see notifications.py).
    notifications: list[Notification] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AutoscaleSetting:
        if self.target_resource_name is None and self.target_resource_uri:
            self.target_resource_name = self.target_resource_uri.rstrip("/").rsplit("/", 1)[-1]
        if self.target_resource_name is None:
            raise ValueError("targetResourceName (the scale set's name) is required")
        try:
            validate_name(self.target_resource_name, "targetResourceName")
        except InvalidSpec as exc:
            raise ValueError(exc.message) from None
        names = [p.name for p in self.profiles]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"profile names must be unique; repeated: {', '.join(dupes)}")
        defaults = [p.name for p in self.profiles if p.is_default]
        if len(defaults) > 1:
            raise ValueError(f"only one profile may have neither fixedDate nor recurrence; found {', '.join(defaults)}")
        if not defaults and not any(p.recurrence for p in self.profiles):
            raise ValueError("needs a default profile (one with neither fixedDate nor recurrence)")
        return self

    @property
    def scale_set(self) -> str:
        assert self.target_resource_name is not None  # guaranteed by validation
        return self.target_resource_name

    @property
    def webhooks(self) -> list[WebhookNotification]:
        """Every webhook of every notification, in order."""
        return [hook for n in self.notifications or () for hook in n.webhooks]


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in {"lax-or-strict", "json-or-python"}:
            continue  # pydantic internals in union/validator locations
        else:
            out += f".{part}" if out else part
    return out


def _message(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def parse_autoscale_setting(data: dict[str, Any]) -> AutoscaleSetting:
    """Validate Azure-shaped JSON into an AutoscaleSetting, or raise one-line InvalidSpec.

    The full Azure resource (``{"location": ..., "properties": {...}}``) is accepted too.
    """
    if not isinstance(data, dict):
        raise InvalidSpec(f"autoscale setting must be a JSON object, not {type(data).__name__}")
    if "profiles" not in data and isinstance(data.get("properties"), dict):
        data = data["properties"]
    try:
        return AutoscaleSetting.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        where = _path(tuple(first["loc"]))
        text = f"autoscale setting{' ' + where if where else ''}: {_message(first['msg'])}"
        if len(errors) > 1:
            text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise InvalidSpec(text) from None


def finite(value: float | None) -> float | None:
    """None for missing, NaN or infinite metric values: they trigger nothing."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
