"""``localvmss autoscale ...``: autoscale settings the ``az monitor autoscale`` way.

Every command reads the scale set's Azure-shaped setting (``GET /scaleSets/{name}/autoscale``),
changes it and writes it back whole (``PUT``). The small languages of the options are az's:

* ``--condition "<METRIC NAME> <OP> <THRESHOLD> <AGG> <WINDOW> [where DIM ==|!= V [or V ...] [and ...]]"``,
  parsed from the right so the metric name may contain spaces: ``"Percentage CPU > 70 avg 5m"``;
* ``--scale out N | in N | out N% | in N% | to N`` (``to N`` is ``out to N``; ``in to N`` too);
* ``--timegrain "avg 1m"``, ``--cooldown`` in minutes, durations such as 30s, 5m, 1h30m or PT5M;
* ``--recurrence week mon tue ...`` with ``--start HH:MM [--end HH:MM] --timezone TZ``;
* ``--add-action webhook URL [KEY=VALUE ...]`` / ``--remove-action webhook URL`` (``--action`` on
  create): Azure's notification webhooks (email is refused: there is no mail transport).

The parsers are plain functions (unit-tested as tables); each problem is one ``InvalidSpec`` line
saying what was expected, so the command exits with code 2 before any request is made. The
``--condition`` grammar is ``localvmss.cli.condition`` and durations are ``localvmss.cli.durations``
(both re-exported here); the rest are below.

``localvmss.cli.main`` registers the ``autoscale`` group (also as ``monitor autoscale``); this
module does not import ``main``.

Which setting a command acts on is named as az names it (``Target``): by its scale set,
``--resource NAME`` or a resource id (``/subscriptions/.../virtualMachineScaleSets/NAME``, whose
resource group wins over ``-g``), or by the setting's own name, ``--autoscale-name`` for rules
and profiles and ``-n/--name`` for the setting itself. The daemon keeps one setting per set and
stores its ``name`` (az's default: the set's name); a name that is not a set's is found by reading
the sets' settings (of ``-g`` only, when given). ``-g`` is sent as ``?resourceGroup=``.

Schedules follow az and the Azure portal: a weekly profile runs until the next weekly profile
starts, so ``profile create --recurrence`` also adds a companion profile named
``{"name": "default", "for": "<profile>"}`` that starts at ``--end`` (default 23:59) and restores
the default profile. Companions are copies of the default profile; this CLI keeps them in step
when the default profile's capacity, rules or target tracking change.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import click

from localvmss.cli.client import api_path
from localvmss.cli.condition import AGGREGATION_WORDS, AGGREGATIONS, OPERATOR_SYMBOLS, OPERATORS, parse_condition
from localvmss.cli.context import Ctx, pass_ctx
from localvmss.cli.durations import iso_duration, parse_duration
from localvmss.cli.output import Columns, emit, err_console
from localvmss.errors import Conflict, InvalidSpec, NotFound

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_PROFILE",
    "OPERATORS",
    "STATISTICS",
    "add_webhook",
    "build_rule",
    "companion_for",
    "companion_name",
    "iso_duration",
    "join_greedy",
    "parse_clock",
    "parse_condition",
    "parse_cooldown",
    "parse_duration",
    "parse_fixed_time",
    "parse_moment",
    "parse_recurrence",
    "parse_scale",
    "parse_timegrain",
    "parse_webhook_action",
    "recurring_profiles",
    "remove_webhook",
    "sync_companions",
]

DEFAULT_PROFILE = "default"

# az's map of --timegrain statistics (azure/cli/command_modules/monitor/util.py), plus Azure's spellings.
STATISTICS = {"avg": "Average", "min": "Min", "max": "Max", "sum": "Sum", "count": "Count"}
_STAT_BY_NAME = {**STATISTICS, **{v.lower(): v for v in STATISTICS.values()}}

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

SCALE_SHAPE = "'out N', 'in N', 'out N%', 'in N%', 'to N', 'out to N' or 'in to N'"


# =========================================================================== pure parsers
# ------------------------------------------------------------------- cooldown and time grain
def parse_cooldown(text: str) -> str:
    """``--cooldown``: minutes like az (``5``, ``0.5``) or a duration (``30s``, ``PT2M``) -> ISO."""
    value = str(text).strip()
    try:
        minutes = float(value)
    except ValueError:
        return iso_duration(parse_duration(value, "--cooldown"))
    if not math.isfinite(minutes) or minutes < 0:
        raise InvalidSpec(f"--cooldown {text!r} must be a non-negative number of minutes")
    return iso_duration(timedelta(seconds=round(minutes * 60)))


def parse_timegrain(text: str) -> tuple[str, str]:
    """``--timegrain "avg 1m"`` -> (statistic, ISO grain); a bare duration means ``avg``."""
    words = str(text).split()
    shape = "expected '<STATISTIC> <GRAIN>' such as 'avg 1m', statistic one of " + ", ".join(STATISTICS)
    if len(words) == 1:
        words = ["avg", words[0]]
    if len(words) != 2:
        raise InvalidSpec(f"--timegrain {text!r}: {shape}")
    statistic = _STAT_BY_NAME.get(words[0].lower())
    if statistic is None:
        raise InvalidSpec(f"--timegrain {text!r}: statistic {words[0]!r} is unknown; {shape}")
    grain = parse_duration(words[1], "--timegrain grain")
    if grain <= timedelta(0):
        raise InvalidSpec(f"--timegrain {text!r}: the grain must be longer than 0")
    return statistic, iso_duration(grain)


# ---------------------------------------------------------------------------------- scale
def parse_scale(text: str) -> dict[str, Any]:
    """``--scale out 2`` -> {"direction": "Increase", "type": "ChangeCount", "value": 2} (no cooldown)."""
    raw = str(text)
    words = raw.lower().split()
    if len(words) >= 2 and words[-1] == "%":  # "out 50 %"
        words = [*words[:-2], words[-2] + "%"]
    if words[:1] == ["to"]:
        words = ["out", *words]
    if len(words) == 3 and words[1] == "to" and words[0] in ("out", "in"):
        direction, kind, amount = words[0], "ExactCount", words[2]
    elif len(words) == 2 and words[0] in ("out", "in"):
        direction, amount = words
        kind = "PercentChangeCount" if amount.endswith("%") else "ChangeCount"
        amount = amount.removesuffix("%")
    else:
        raise InvalidSpec(f"--scale {raw!r}: expected {SCALE_SHAPE}")
    if kind == "ExactCount" and amount.endswith("%"):
        raise InvalidSpec(f"--scale {raw!r}: 'to' takes an instance count, not a percentage")
    if not re.fullmatch(r"[0-9]+", amount):
        raise InvalidSpec(f"--scale {raw!r}: {amount!r} is not a whole number; expected {SCALE_SHAPE}")
    value = int(amount)
    if kind == "ExactCount" and direction == "out" and value < 1:
        raise InvalidSpec(f"--scale {raw!r}: scaling out to {value} never happens; did you mean 'in to {value}'?")
    if kind != "ExactCount" and value < 1:
        raise InvalidSpec(f"--scale {raw!r}: scaling by {value} does nothing; give at least 1")
    return {"direction": "Increase" if direction == "out" else "Decrease", "type": kind, "value": value}


# ------------------------------------------------------------------------- notifications
ACTION_SHAPE = "'webhook URL [KEY=VALUE ...]'"


def parse_webhook_action(text: str, flag: str = "--add-action") -> tuple[str, dict[str, str]]:
    """``--add-action webhook https://h/x team=web`` -> (URL, {"team": "web"}), as az takes it."""
    from localvmss.autoscale.notifications import check_service_uri

    words = str(text).split()
    kind = words[0].lower() if words else ""
    if kind == "email":
        raise InvalidSpec(
            f"{flag} email: email notifications are not supported (localvmss has no mail transport); "
            f"use {flag} webhook URL"
        )
    if kind != "webhook" or len(words) < 2:
        raise InvalidSpec(f"{flag} {text!r}: expected {ACTION_SHAPE}")
    try:
        uri = check_service_uri(words[1])
    except ValueError as exc:
        raise InvalidSpec(f"{flag}: {exc}") from None
    properties: dict[str, str] = {}
    for word in words[2:]:
        key, eq, value = word.partition("=")
        if not eq or not key:
            raise InvalidSpec(f"{flag} {text!r}: {word!r} is not KEY=VALUE; expected {ACTION_SHAPE}")
        properties[key] = value
    return uri, properties


def add_webhook(setting: dict[str, Any], uri: str, properties: dict[str, str]) -> None:
    """Add (or replace, same URL) a webhook in the setting's Scale notification."""
    notifications = setting.get("notifications") or []
    setting["notifications"] = notifications
    scale = next((n for n in notifications if str(n.get("operation", "Scale")).lower() == "scale"), None)
    if scale is None:
        scale = {"operation": "Scale", "webhooks": []}
        notifications.append(scale)
    hooks = [h for h in scale.get("webhooks") or [] if h.get("serviceUri") != uri]
    scale["webhooks"] = [*hooks, {"serviceUri": uri, "properties": properties}]


def remove_webhook(setting: dict[str, Any], uri: str) -> None:
    """Remove the webhook with this URL; InvalidSpec listing the ones there are if none has it."""
    known = [h.get("serviceUri") for n in setting.get("notifications") or [] for h in n.get("webhooks") or []]
    if uri not in known:
        listed = ", ".join(str(k) for k in known) or "none"
        raise InvalidSpec(f"--remove-action webhook {uri}: no such webhook; the setting has: {listed}")
    for n in setting.get("notifications") or []:
        n["webhooks"] = [h for h in n.get("webhooks") or [] if h.get("serviceUri") != uri]


def build_rule(
    condition: str,
    scale: str,
    cooldown: str = "5",
    timegrain: str = "avg 1m",
    query: str | None = None,
) -> dict[str, Any]:
    """An Azure-shaped rule from the az-style options, validated as the daemon will validate it."""
    trigger = parse_condition(condition, query)
    statistic, grain = parse_timegrain(timegrain)
    trigger = {
        **{k: trigger[k] for k in ("metricName", "metricNamespace", "query") if k in trigger},
        "timeGrain": grain,
        "statistic": statistic,
        **{k: v for k, v in trigger.items() if k not in ("metricName", "metricNamespace", "query")},
    }
    rule = {
        "metricTrigger": trigger,
        "scaleAction": {**parse_scale(scale), "cooldown": parse_cooldown(cooldown)},
    }
    _validate_part("Rule", rule)
    return rule


def _validate_part(model: str, data: dict[str, Any], what: str = "rule") -> None:
    """Check one rule/target with the settings model; first problem as one InvalidSpec line."""
    from pydantic import ValidationError

    from localvmss.autoscale import settings

    cls = getattr(settings, model)
    try:
        cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidSpec(f"{what}{' ' + where if where else ''}: {msg}") from None


# ------------------------------------------------------------------------------- schedules
_DAY_BY_NAME = {**{d.lower(): d for d in WEEKDAYS}, **{d[:3].lower(): d for d in WEEKDAYS}}
_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::00)?")


def parse_recurrence(text: str) -> list[str]:
    """``week mon tue`` (also full names, commas) -> ["Monday", "Tuesday"] in week order."""
    raw = str(text)
    words = raw.replace(",", " ").split()
    shape = "expected 'week DAY [DAY ...]' such as 'week mon tue wed thu fri' (Azure recurrences are weekly)"
    if not words or words[0].lower() not in ("week", "weekly"):
        raise InvalidSpec(f"--recurrence {raw!r}: {shape}")
    if len(words) == 1:
        raise InvalidSpec(f"--recurrence {raw!r}: no days given; {shape}")
    days = set()
    for word in words[1:]:
        day = _DAY_BY_NAME.get(word.lower())
        if day is None:
            raise InvalidSpec(f"--recurrence {raw!r}: {word!r} is not a day (mon tue wed thu fri sat sun); {shape}")
        days.add(day)
    return [d for d in WEEKDAYS if d in days]


def parse_clock(text: str, what: str = "--start") -> tuple[int, int]:
    """``HH:MM`` (24 h) -> (hour, minute)."""
    match = _CLOCK.fullmatch(str(text).strip())
    if match:
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour <= 23 and minute <= 59:
            return hour, minute
    raise InvalidSpec(f"{what} {text!r} is not a time of day; expected HH:MM such as 08:00 or 17:30")


def parse_fixed_time(text: str, what: str = "--start") -> str:
    """A fixed-date bound: ISO date or date-time (no offset = wall time in --timezone) -> ISO."""
    try:
        value = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise InvalidSpec(
            f"{what} {text!r} is not a date or date-time; expected ISO-8601 such as 2026-11-27 or 2026-11-27T08:00"
        ) from None
    return value.isoformat()


_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(\S+))?", re.IGNORECASE)


def parse_moment(text: str, now: datetime | None = None, what: str = "--start") -> datetime:
    """``now``, ``now-1h``, ``now+30m`` or ISO-8601 (no offset = UTC) -> an aware datetime."""
    raw = str(text).strip()
    match = _RELATIVE.fullmatch(raw)
    if match:
        base = now or datetime.now(UTC)
        if not match.group(1):
            return base
        delta = parse_duration(match.group(2), what)
        return base - delta if match.group(1) == "-" else base + delta
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidSpec(
            f"{what} {text!r} is not a time; expected ISO-8601 (2026-11-21T10:00:00Z), 'now' or 'now-2h'"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------- default companions
def companion_name(default_name: str, for_profile: str) -> str:
    """The portal's and az's name for a weekly profile's end: ``{"name": "default", "for": "P"}``."""
    return json.dumps({"name": default_name, "for": for_profile})


def companion_for(profile_name: str) -> str | None:
    """The weekly profile a companion ends, or None when ``profile_name`` is an ordinary name."""
    if not profile_name.startswith("{"):
        return None
    try:
        data = json.loads(profile_name)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("for"), str):
        return str(data["for"])
    return None


def _is_default(profile: dict[str, Any]) -> bool:
    return not profile.get("fixedDate") and not profile.get("recurrence")


def sync_companions(setting: dict[str, Any]) -> None:
    """Make every companion carry the default profile's capacity, rules and target tracking."""
    default = next((p for p in setting.get("profiles", []) if _is_default(p)), None)
    if default is None:
        return
    for p in setting["profiles"]:
        if p is default or companion_for(p.get("name", "")) is None or not p.get("recurrence"):
            continue
        p["capacity"] = copy.deepcopy(default["capacity"])
        p["rules"] = copy.deepcopy(default.get("rules", []))
        if default.get("targetTracking"):
            p["targetTracking"] = copy.deepcopy(default["targetTracking"])
        else:
            p.pop("targetTracking", None)


def recurring_profiles(
    name: str,
    capacity: dict[str, int],
    days: Sequence[str],
    start: tuple[int, int],
    end: tuple[int, int],
    time_zone: str,
    default: dict[str, Any],
) -> list[dict[str, Any]]:
    """A weekly profile and its companion that restores ``default`` at ``end`` (next day if overnight)."""
    if end == start:
        raise InvalidSpec(f"--end {end[0]:02d}:{end[1]:02d} is the same as --start; the profile would never run")
    end_days = list(days)
    if end < start:  # overnight: 22:00 -> 06:00 ends on the following days
        following = {WEEKDAYS[(WEEKDAYS.index(d) + 1) % 7] for d in days}
        end_days = [d for d in WEEKDAYS if d in following]

    def recurrence(on: Sequence[str], at: tuple[int, int]) -> dict[str, Any]:
        return {
            "frequency": "Week",
            "schedule": {"timeZone": time_zone, "days": list(on), "hours": [at[0]], "minutes": [at[1]]},
        }

    main = {"name": name, "capacity": dict(capacity), "rules": [], "recurrence": recurrence(days, start)}
    companion: dict[str, Any] = {
        "name": companion_name(default["name"], name),
        "capacity": copy.deepcopy(default["capacity"]),
        "rules": copy.deepcopy(default.get("rules", [])),
        "recurrence": recurrence(end_days, end),
    }
    if default.get("targetTracking"):
        companion["targetTracking"] = copy.deepcopy(default["targetTracking"])
    return [main, companion]


def _capacity(count: int, minimum: int | None, maximum: int | None) -> dict[str, int]:
    """az's rule: --min-count and --max-count default to --count."""
    lo = count if minimum is None else minimum
    hi = count if maximum is None else maximum
    for flag, value in (("--count", count), ("--min-count", lo), ("--max-count", hi)):
        if value < 0:
            raise InvalidSpec(f"{flag} {value} must not be negative")
    if lo > hi:
        raise InvalidSpec(f"--min-count {lo} is greater than --max-count {hi}")
    if not lo <= count <= hi:
        raise InvalidSpec(f"--count {count} is outside --min-count {lo} .. --max-count {hi}")
    return {"minimum": lo, "maximum": hi, "default": count}


# ------------------------------------------------------------------------- click plumbing
def join_greedy(args: Sequence[str], names: Sequence[str]) -> list[str]:
    """Join the words after each option in ``names`` up to the next option into its one value,
    so ``--scale out 2`` and ``--recurrence week sat sun`` work unquoted, as in az."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        name, eq, value = arg.partition("=")
        i += 1
        if name not in names:
            out.append(arg)
            continue
        words = [value] if eq else []
        while i < len(args) and not args[i].startswith("-"):
            words.append(args[i])
            i += 1
        if not words:
            raise click.UsageError(f"option {name} needs a value")
        out.extend([name, " ".join(words)])
    return out


class GreedyCommand(click.Command):
    """A command whose ``greedy`` options take several words (see ``join_greedy``)."""

    def __init__(self, *args: Any, greedy: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.greedy = tuple(greedy)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            joined = join_greedy(args, self.greedy)
        except click.UsageError as exc:
            exc.ctx = ctx
            raise
        return super().parse_args(ctx, joined)


# ------------------------------------------------------------------- which setting (az's way)
SCALE_SET_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
_ARM_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/(?P<group>[^/]+)/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)",
    re.IGNORECASE,
)
# Any path ending in a scale set: ARM's type segment, or the short ids of localvmss's own API.
_SET_TAIL = re.compile(r".*/(?:virtualMachineScaleSets|scaleSets)/(?P<name>[^/]+)", re.IGNORECASE)
_GROUP_PART = re.compile(r"/resourceGroups/(?P<group>[^/]+)/", re.IGNORECASE)


def check_resource_type(resource_type: str | None, namespace: str | None = None) -> None:
    """``--resource-type`` (and ``--resource-namespace``) may only name scale sets: that is all
    localvmss autoscales. ``virtualMachineScaleSets`` alone means Microsoft.Compute's."""
    if resource_type is not None:
        full = resource_type.strip()
        if "/" not in full:
            full = f"{namespace or 'Microsoft.Compute'}/{full}"
        if full.lower() != SCALE_SET_TYPE.lower():
            raise InvalidSpec(
                f"--resource-type {resource_type!r}: localvmss autoscales only virtual machine scale sets "
                f"({SCALE_SET_TYPE})"
            )
    elif namespace is not None and namespace.strip().lower() != "microsoft.compute":
        raise InvalidSpec(f"--resource-namespace {namespace!r}: only Microsoft.Compute (scale sets) is autoscaled")


def parse_resource(value: str) -> tuple[str, str | None]:
    """``--resource`` -> (scale set name, resource group or None): a name, an ARM id
    (``/subscriptions/S/resourceGroups/G/providers/Microsoft.Compute/virtualMachineScaleSets/N``),
    any path ending in ``/virtualMachineScaleSets/N``, or this API's own ``/scaleSets/N``."""
    text = str(value).strip()
    if not text:
        raise InvalidSpec("--resource is empty; give the scale set's name or resource id")
    if "/" not in text:
        return text, None
    trimmed = text.rstrip("/")
    arm = _ARM_ID.fullmatch(trimmed)
    if arm:
        if f"{arm['ns']}/{arm['type']}".lower() != SCALE_SET_TYPE.lower():
            raise InvalidSpec(
                f"--resource {text!r} is a {arm['ns']}/{arm['type']}; localvmss autoscales only "
                f"virtual machine scale sets ({SCALE_SET_TYPE})"
            )
        return unquote(arm["name"]), unquote(arm["group"])
    tail = _SET_TAIL.fullmatch(trimmed)
    if tail:
        group = _GROUP_PART.search(trimmed)
        return unquote(tail["name"]), unquote(group["group"]) if group else None
    raise InvalidSpec(
        f"--resource {text!r} is neither a scale set name nor a scale set resource id "
        f"(/subscriptions/SUB/resourceGroups/GROUP/providers/{SCALE_SET_TYPE}/NAME)"
    )


def check_setting_name(name: str, flag: str = "--name") -> str:
    """An autoscale setting's name, as Azure allows it: 1-260 characters, no / \\ ? # % & < > * : +."""
    if not name or len(name) > 260 or any(ch in name for ch in "/\\?#%&<>*:+") or not name.isprintable():
        raise InvalidSpec(
            f"{flag} {name!r}: an autoscale setting name has 1 to 260 printable characters "
            "and none of / \\ ? # % & < > * : +"
        )
    return name


class Target:
    """The autoscale setting a command acts on, named the az way: by the scale set it scales
    (``--resource``, a name or resource id) or by the setting's own name (``--autoscale-name`` for
    rules and profiles, ``--name``/``-n`` for the setting). A setting's name defaults to its scale
    set's, as in az; a setting named otherwise is found among the sets (of ``-g`` when given)."""

    def __init__(
        self,
        resource: str | None,
        name: str | None,
        group: str | None,
        name_flag: str = "--name",
        resource_type: str | None = None,
        namespace: str | None = None,
    ) -> None:
        check_resource_type(resource_type, namespace)
        self.name_flag = name_flag
        self.name = check_setting_name(name, name_flag) if name is not None else None
        self.scale_set: str | None = None
        self.group = group
        if resource is not None:
            self.scale_set, id_group = parse_resource(resource)
            self.group = id_group or group  # as az: a full id carries its own group
        self.found: dict[str, Any] | None = None  # the setting, when finding it already read it

    def require(self) -> None:
        """InvalidSpec (before any request) unless the setting is named one way or the other."""
        if self.scale_set is None and self.name is None:
            raise InvalidSpec(f"give {self.name_flag} NAME (the autoscale setting) or --resource SCALE_SET")

    def query(self) -> str:
        return f"?resourceGroup={quote(self.group, safe='')}" if self.group else ""

    def label(self) -> str:
        return repr(self.name) if self.scale_set is None else f"of scale set {self.scale_set!r}"


def target_options(name_flag: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--resource``, ``--resource-group/-g``, ``--resource-type``, ``--resource-namespace`` and the
    setting's name (``name_flag``), turned into the command's ``which: Target`` argument."""
    name_decls = ("-n", "--name") if name_flag == "--name" else (name_flag,)

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(**kwargs: Any) -> Any:
            target = Target(
                kwargs.pop("resource"),
                kwargs.pop("setting_name"),
                kwargs.pop("resource_group"),
                name_flag,
                kwargs.pop("resource_type"),
                kwargs.pop("resource_namespace"),
            )
            target.require()
            return f(which=target, **kwargs)

        for option in reversed(
            [
                click.option(
                    "--resource",
                    help="the scale set: its name or resource id (/subscriptions/.../virtualMachineScaleSets/NAME)",
                ),
                click.option(
                    *name_decls, "setting_name", help="the autoscale setting's name (default: its scale set's)"
                ),
                click.option("-g", "--resource-group", help="resource group of the scale set"),
                click.option("--resource-type", help=f"{SCALE_SET_TYPE} (the only kind autoscaled here)"),
                click.option(
                    "--resource-namespace", help="Microsoft.Compute, with --resource-type virtualMachineScaleSets"
                ),
            ]
        ):
            wrapper = option(wrapper)
        return wrapper

    return decorate


profile_option = click.option(
    "--profile-name",
    help="profile to change; default: the default profile (no date, no recurrence)",
)


# ====================================================================== daemon read/write
def _path(name: str) -> str:
    return api_path("scaleSets", name, "autoscale")


def _named(setting: dict[str, Any], name: str, scale_set: str) -> bool:
    return str(setting.get("name") or scale_set).lower() == name.lower()


def _settings_named(c: Ctx, name: str, group: str | None, skip: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Every (scale set, setting) whose setting is called ``name`` (case-insensitive, as ARM)."""
    listing = c.client.get(api_path("scaleSets") + (f"?resourceGroup={quote(group, safe='')}" if group else ""))
    found = []
    for s in listing.get("value", []):
        set_name = str(s.get("name"))
        in_group = s.get("resourceGroup")
        if set_name == skip or (group and in_group and str(in_group).lower() != group.lower()):
            continue
        try:
            setting = dict(c.client.get(_path(set_name)))
        except NotFound:
            continue
        if _named(setting, name, set_name):
            found.append((set_name, setting))
    return found


def _scale_set(c: Ctx, t: Target) -> str:
    """The scale set whose setting ``t`` names (NotFound / Conflict when none or several)."""
    if t.scale_set is not None:
        return t.scale_set
    assert t.name is not None  # Target.require
    try:
        direct = dict(c.client.get(_path(t.name) + t.query()))
    except NotFound:
        direct = None
    if direct is not None and _named(direct, t.name, t.name):
        t.scale_set, t.found = t.name, direct
        return t.name
    matches = _settings_named(c, t.name, t.group, skip=t.name)
    where = f" in resource group {t.group!r}" if t.group else ""
    if not matches:
        raise NotFound(
            f"no autoscale setting named {t.name!r}{where}; create one with "
            f"'localvmss autoscale create --resource SCALE_SET --name {t.name} --count N'"
        )
    if len(matches) > 1:
        raise Conflict(
            f"the autoscale settings of scale sets {', '.join(m[0] for m in matches)} are all named "
            f"{t.name!r}; give --resource SCALE_SET"
        )
    t.scale_set, t.found = matches[0]
    return t.scale_set


def _get(c: Ctx, t: Target) -> dict[str, Any]:
    name = _scale_set(c, t)
    if t.found is not None:
        return copy.deepcopy(t.found)
    try:
        setting = dict(c.client.get(_path(name) + t.query()))
    except NotFound as exc:
        if "autoscale" in exc.message:
            raise NotFound(
                f"{exc.message}; create one with 'localvmss autoscale create --resource {name} --count N'"
            ) from None
        raise
    if t.name is not None and not _named(setting, t.name, name):
        raise NotFound(f"the autoscale setting of scale set {name!r} is named {setting.get('name')!r}, not {t.name!r}")
    t.found = setting
    return copy.deepcopy(setting)


def _put(c: Ctx, t: Target, setting: dict[str, Any]) -> dict[str, Any]:
    from localvmss.autoscale.settings import parse_autoscale_setting

    name = _scale_set(c, t)
    setting.setdefault("targetResourceName", name)
    parse_autoscale_setting(setting)  # the daemon's own checks, before anything is sent
    result = dict(c.client.put(_path(name) + t.query(), setting))
    t.found = result
    return copy.deepcopy(result)


def _find_profile(setting: dict[str, Any], name: str | None) -> dict[str, Any]:
    profiles: list[dict[str, Any]] = setting.get("profiles", [])
    if name is None:
        for p in profiles:
            if _is_default(p):
                return p
        raise NotFound(
            "the autoscale setting has no default profile (one with neither date nor recurrence); give --profile-name"
        )
    for match in (lambda p: p["name"] == name, lambda p: p["name"].lower() == name.lower()):
        found = [p for p in profiles if match(p)]
        if len(found) == 1:
            return found[0]
    raise NotFound(f"no profile {name!r}; profiles: {', '.join(repr(p['name']) for p in profiles)}")


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


# ================================================================================= output
def _trigger_text(t: dict[str, Any]) -> str:
    name = t.get("metricName") or "query"
    text = f"{AGGREGATION_WORDS.get(t.get('timeAggregation', 'Average'), 'avg')} {name}"
    dims = [
        f"{d.get('DimensionName')} {'!=' if d.get('Operator') == 'NotEquals' else '=='} "
        + " or ".join(map(str, d.get("Values", [])))
        for d in t.get("dimensions") or []
    ]
    return f"{text} where {' and '.join(dims)}" if dims else text


def _mode(profile: dict[str, Any]) -> str:
    tt = profile.get("targetTracking")
    if tt:
        return f"target tracking: {_trigger_text(tt)} at {_number(tt.get('target'))}"
    rules = profile.get("rules") or []
    return f"{len(rules)} rule{'s' if len(rules) != 1 else ''}" if rules else "no rules (stays at default)"


def _schedule(profile: dict[str, Any]) -> str:
    fd = profile.get("fixedDate")
    if fd:
        return f"{fd.get('start')} .. {fd.get('end')} {fd.get('timeZone', 'UTC')}"
    rec = profile.get("recurrence")
    if rec:
        s = rec.get("schedule", {})
        days = " ".join(d[:3] for d in s.get("days", []))
        times = ", ".join(f"{h:02d}:{m:02d}" for h in s.get("hours", []) for m in s.get("minutes", []))
        return f"weekly {days} from {times} {s.get('timeZone', '')}".rstrip()
    return "default (always, unless another profile applies)"


def _kind(profile: dict[str, Any]) -> str:
    if companion_for(profile.get("name", "")) is not None and profile.get("recurrence"):
        return "default (end of weekly)"
    return "fixed date" if profile.get("fixedDate") else "weekly" if profile.get("recurrence") else "default"


SETTING_COLUMNS: Columns = [
    ("Name", lambda s: s.get("name") or s.get("targetResourceName")),
    ("Resource", lambda s: s.get("targetResourceName")),
    ("Enabled", lambda s: s.get("enabled", True)),
    ("Profiles", lambda s: len(s.get("profiles", []))),
    ("Min", lambda s: _default_of(s).get("capacity", {}).get("minimum")),
    ("Max", lambda s: _default_of(s).get("capacity", {}).get("maximum")),
    ("Default", lambda s: _default_of(s).get("capacity", {}).get("default")),
    ("Scaling", lambda s: _mode(_default_of(s)) if _default_of(s) else ""),
    ("Webhooks", lambda s: sum(len(n.get("webhooks") or []) for n in s.get("notifications") or [])),
]

PROFILE_COLUMNS: Columns = [
    ("Name", lambda p: p["name"]),
    ("Kind", _kind),
    ("Min", lambda p: p["capacity"]["minimum"]),
    ("Max", lambda p: p["capacity"]["maximum"]),
    ("Default", lambda p: p["capacity"]["default"]),
    ("Scaling", _mode),
    ("Schedule", _schedule),
]

RULE_COLUMNS: Columns = [
    ("Index", lambda r: r["index"]),
    ("Metric", lambda r: _trigger_text(r["metricTrigger"])),
    ("Operator", lambda r: OPERATOR_SYMBOLS.get(r["metricTrigger"]["operator"], r["metricTrigger"]["operator"])),
    ("Threshold", lambda r: _number(r["metricTrigger"]["threshold"])),
    ("Window", lambda r: r["metricTrigger"].get("timeWindow")),
    ("Direction", lambda r: r["scaleAction"]["direction"]),
    ("Type", lambda r: r["scaleAction"].get("type")),
    ("Value", lambda r: r["scaleAction"].get("value")),
    ("Cooldown", lambda r: r["scaleAction"].get("cooldown")),
]

SIMULATION_COLUMNS: Columns = [
    ("At", lambda s: s["at"]),
    ("From", lambda s: s["from"]),
    ("To", lambda s: s["to"]),
    ("Reason", lambda s: s["reason"]),
]


def _number(value: Any) -> Any:
    """70.0 -> 70 for tables."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _default_of(setting: dict[str, Any]) -> dict[str, Any]:
    return next((p for p in setting.get("profiles", []) if _is_default(p)), {})


def _indexed(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": i, **r} for i, r in enumerate(rules)]


# =============================================================================== commands
@click.group("autoscale")
def autoscale() -> None:
    """Autoscale a scale set, like 'az monitor autoscale': rules, schedules, target tracking.

    \b
    localvmss autoscale create --resource web --min-count 1 --max-count 5 --count 2
    localvmss autoscale rule create --resource web --condition "Percentage CPU > 70 avg 5m" --scale out 1
    localvmss autoscale rule create --resource web --condition "Percentage CPU < 25 avg 10m" --scale in 1
    localvmss autoscale simulate --resource web --start now-2h --end now

    az's own lines work too: a setting has a name (--name on create, default the set's), and
    rules and profiles take it as --autoscale-name; --resource may be a resource id.

    \b
    localvmss monitor autoscale create -g rg --resource web \\
        --resource-type Microsoft.Compute/virtualMachineScaleSets --name autoscale \\
        --min-count 2 --max-count 10 --count 2
    localvmss monitor autoscale rule create -g rg --autoscale-name autoscale \\
        --condition "Percentage CPU > 70 avg 5m" --scale out 3
    localvmss monitor autoscale show -g rg --name autoscale
    """


WEBHOOK_HELP = "webhook URL [KEY=VALUE ...]: POST Azure's autoscale payload there on every scale action (repeatable)"


@autoscale.command("create", cls=GreedyCommand, greedy=("--action",))
@target_options("--name")
@click.option("--count", type=int, required=True, help="default instance count (when no rule applies)")
@click.option("--min-count", type=int, help="minimum instance count; default --count")
@click.option("--max-count", type=int, help="maximum instance count; default --count")
@click.option("--disabled", is_flag=True, help="create the setting switched off")
@click.option("--action", "actions", multiple=True, metavar="webhook URL [KEY=VALUE ...]", help=WEBHOOK_HELP)
@pass_ctx
def as_create(
    c: Ctx,
    which: Target,
    count: int,
    min_count: int | None,
    max_count: int | None,
    disabled: bool,
    actions: tuple[str, ...],
) -> None:
    """Create the setting with one profile named "default" (fails if the set has one).

    --name names the setting (default: the scale set's name, as in az); rules and profiles then
    find it by --autoscale-name NAME, and show, update and delete by --name NAME.
    """
    if which.scale_set is None:
        raise InvalidSpec("give --resource SCALE_SET (its name or resource id): the scale set to autoscale")
    resource = which.scale_set
    capacity = _capacity(count, min_count, max_count)
    hooks = [parse_webhook_action(a, "--action") for a in actions]
    try:
        c.client.get(_path(resource) + which.query())
    except NotFound as exc:
        if "autoscale" not in exc.message:
            raise  # no such scale set (or resource group)
    else:
        raise Conflict(
            f"scale set {resource!r} already has an autoscale setting; change it with "
            f"'localvmss autoscale update' or remove it with 'localvmss autoscale delete'"
        )
    name = which.name or resource
    if which.name is not None:
        taken = _settings_named(c, name, which.group, skip=resource)
        if taken:
            raise Conflict(f"the autoscale setting of scale set {taken[0][0]!r} is already named {name!r}")
    setting = {
        "name": name,
        "enabled": not disabled,
        "targetResourceName": resource,
        "profiles": [{"name": DEFAULT_PROFILE, "capacity": capacity, "rules": []}],
    }
    for uri, properties in hooks:
        add_webhook(setting, uri, properties)
    result = _put(c, which, setting)
    if capacity["minimum"] != capacity["maximum"]:
        _warn(
            "the set stays at --count until you add rules: 'localvmss autoscale rule create' "
            "or 'localvmss autoscale target-tracking'"
        )
    emit(c, result, SETTING_COLUMNS)


@autoscale.command("show")
@target_options("--name")
@pass_ctx
def as_show(c: Ctx, which: Target) -> None:
    """Show the setting (the whole Azure-shaped JSON with -o json)."""
    setting = _get(c, which)
    emit(c, setting, SETTING_COLUMNS)
    if c.output == "table":
        click.echo()
        emit(c, setting.get("profiles", []), PROFILE_COLUMNS)


@autoscale.command("update", cls=GreedyCommand, greedy=("--add-action", "--remove-action"))
@target_options("--name")
@click.option("--count", type=int, help="default instance count")
@click.option("--min-count", type=int)
@click.option("--max-count", type=int)
@click.option("--enabled", type=click.BOOL, metavar="true|false", help="switch autoscale on or off")
@click.option("--add-action", "add_actions", multiple=True, metavar="webhook URL [KEY=VALUE ...]", help=WEBHOOK_HELP)
@click.option(
    "--remove-action", "remove_actions", multiple=True, metavar="webhook URL", help="remove that webhook (repeatable)"
)
@pass_ctx
def as_update(
    c: Ctx,
    which: Target,
    count: int | None,
    min_count: int | None,
    max_count: int | None,
    enabled: bool | None,
    add_actions: tuple[str, ...] = (),
    remove_actions: tuple[str, ...] = (),
) -> None:
    """Change the default profile's capacity or switch the setting on or off.

    As in az, when the default profile is fixed (min = max = count) and only --count is given,
    min and max follow it. Weekly profiles' end companions get the same capacity.
    """
    if count is None and min_count is None and max_count is None and enabled is None:
        if not add_actions and not remove_actions:
            raise InvalidSpec(
                "nothing to update; give --count, --min-count, --max-count, --enabled, --add-action or --remove-action"
            )
    added = [parse_webhook_action(a) for a in add_actions]
    removed = [parse_webhook_action(a, "--remove-action")[0] for a in remove_actions]
    for flag, value in (("--count", count), ("--min-count", min_count), ("--max-count", max_count)):
        if value is not None and value < 0:
            raise InvalidSpec(f"{flag} {value} must not be negative")
    setting = _get(c, which)
    if enabled is not None:
        setting["enabled"] = enabled
    if count is not None or min_count is not None or max_count is not None:
        profile = _find_profile(setting, None)
        cap = profile["capacity"]
        fixed = cap["minimum"] == cap["maximum"] == cap["default"]
        if count is not None and fixed and min_count is None and max_count is None:
            min_count = max_count = count
        profile["capacity"] = _capacity(
            cap["default"] if count is None else count,
            cap["minimum"] if min_count is None else min_count,
            cap["maximum"] if max_count is None else max_count,
        )
        sync_companions(setting)
    for uri in removed:
        remove_webhook(setting, uri)
    for uri, properties in added:
        add_webhook(setting, uri, properties)
    emit(c, _put(c, which, setting), SETTING_COLUMNS)


@autoscale.command("delete")
@target_options("--name")
@pass_ctx
def as_delete(c: Ctx, which: Target) -> None:
    """Delete the setting; the set keeps its current capacity."""
    setting = _get(c, which)  # by --name: also makes sure it is that setting
    name = _scale_set(c, which)
    result = c.client.delete(_path(name) + which.query())
    if c.output == "table":
        click.echo(f"autoscale setting {setting.get('name') or name!r} of scale set {name} deleted")
    else:
        emit(c, result)


# ----------------------------------------------------------------------------------- rules
@autoscale.group("rule")
def rule_group() -> None:
    """Scaling rules of a profile."""


@rule_group.command("create", cls=GreedyCommand, greedy=("--scale",))
@target_options("--autoscale-name")
@click.option(
    "--condition",
    required=True,
    metavar='"METRIC OP THRESHOLD AGG WINDOW"',
    help='e.g. "Percentage CPU > 70 avg 5m"; OP one of > >= < <= == !=; AGG one of avg min max '
    "total count last; WINDOW like 30s 5m 1h 1h30m; optional "
    '"... where instance_id == 0 or 1 and host != h2"',
)
@click.option(
    "--scale",
    required=True,
    metavar="out N|in N|out N%|in N%|to N",
    help="out/in N: change by N instances; N%: by N percent; to N: set N (a scale-out rule; "
    "'in to N' for a scale-in rule)",
)
@click.option(
    "--cooldown",
    default="5",
    show_default=True,
    help="minutes to wait after any scale action before this rule may act (or 30s, 2m ...)",
)
@click.option(
    "--timegrain",
    default="avg 1m",
    show_default=True,
    help="per-instance statistic and grain: avg|min|max|sum|count DURATION",
)
@click.option(
    "--query",
    metavar="PROMQL",
    help="use a PromQL expression instead of a catalogue metric: write 'query' (or any label) as "
    "the METRIC of --condition. The expression is run as written, with $scale_set replaced "
    "by the set's name, and must return one number; AGG and WINDOW are kept on the rule and "
    "name it, but the expression does its own aggregation",
)
@profile_option
@pass_ctx
def rule_create(
    c: Ctx,
    which: Target,
    condition: str,
    scale: str,
    cooldown: str,
    timegrain: str,
    query: str | None,
    profile_name: str | None,
) -> None:
    """Add a rule, like 'az monitor autoscale rule create'.

    \b
    --condition "Percentage CPU > 70 avg 5m" --scale out 2
    --condition "Percentage CPU < 20 avg 10m" --scale in 1 --cooldown 10
    --condition "Available Memory Bytes < 200000000 min 5m" --scale out 50%
    --condition "queue > 100 avg 2m" --scale to 6 \\
        --query 'sum(queue_depth{scale_set="$scale_set"})'

    Rules of a profile with target tracking replace it (a profile has one or the other).
    """
    new_rule = build_rule(condition, scale, cooldown, timegrain, query)
    setting = _get(c, which)
    profile = _find_profile(setting, profile_name)
    if profile.get("targetTracking"):
        _warn(f"profile {profile['name']!r} used target tracking; it now uses rules instead")
        profile.pop("targetTracking")
    profile.setdefault("rules", []).append(new_rule)
    if _is_default(profile):
        sync_companions(setting)
    _put(c, which, setting)
    directions = {r["scaleAction"]["direction"] for r in profile["rules"]}
    if "Increase" in directions and "Decrease" not in directions:
        _warn(f"profile {profile['name']!r} has rules to scale out but none to scale in")
    elif "Decrease" in directions and "Increase" not in directions:
        _warn(f"profile {profile['name']!r} has rules to scale in but none to scale out")
    emit(c, {"index": len(profile["rules"]) - 1, **new_rule}, RULE_COLUMNS)


@rule_group.command("list")
@target_options("--autoscale-name")
@profile_option
@pass_ctx
def rule_list(c: Ctx, which: Target, profile_name: str | None) -> None:
    """List a profile's rules with the index 'rule delete' takes."""
    profile = _find_profile(_get(c, which), profile_name)
    emit(c, _indexed(profile.get("rules") or []), RULE_COLUMNS)
    if c.output == "table" and profile.get("targetTracking"):
        click.echo(f"profile {profile['name']!r} uses {_mode(profile)}")


@rule_group.command("delete", cls=GreedyCommand, greedy=("--index",))
@target_options("--autoscale-name")
@click.option(
    "--index",
    "indexes",
    required=True,
    multiple=True,
    help="index from 'rule list'; several (--index 0 2), or '*' for all",
)
@profile_option
@pass_ctx
def rule_delete(c: Ctx, which: Target, indexes: tuple[str, ...], profile_name: str | None) -> None:
    """Delete rules by index."""
    wanted: set[int] = set()
    everything = False
    for text in indexes:
        for part in text.replace(",", " ").split():
            if part == "*":
                everything = True
            elif re.fullmatch(r"[0-9]+", part):
                wanted.add(int(part))
            else:
                raise InvalidSpec(f"--index {part!r} is not a rule index (0, 1, ... or *)")
    setting = _get(c, which)
    profile = _find_profile(setting, profile_name)
    rules = profile.get("rules") or []
    missing = sorted(i for i in wanted if i >= len(rules))
    if missing:
        raise NotFound(
            f"profile {profile['name']!r} has {len(rules)} rule(s), no index "
            f"{', '.join(map(str, missing))}; see 'localvmss autoscale rule list'"
        )
    profile["rules"] = [] if everything else [r for i, r in enumerate(rules) if i not in wanted]
    if _is_default(profile):
        sync_companions(setting)
    _put(c, which, setting)
    emit(c, _indexed(profile["rules"]), RULE_COLUMNS)


# -------------------------------------------------------------------------------- profiles
@autoscale.group("profile")
def profile_group() -> None:
    """Scheduled profiles: a fixed date window or a weekly recurrence."""


@profile_group.command("create", cls=GreedyCommand, greedy=("--recurrence",))
@target_options("--autoscale-name")
@click.option("-n", "--name", "name", required=True, help="profile name")
@click.option("--count", type=int, required=True, help="default instance count in this profile")
@click.option("--min-count", type=int, help="default --count")
@click.option("--max-count", type=int, help="default --count")
@click.option(
    "--recurrence",
    metavar="week DAY [DAY ...]",
    help="weekly profile on these days (mon tue wed thu fri sat sun); without it a fixed-date profile",
)
@click.option("--start", help="fixed: ISO date or date-time (2026-11-27T08:00); weekly: HH:MM (default 00:00)")
@click.option(
    "--end",
    help="fixed: ISO date or date-time; weekly: HH:MM (default 23:59), when the default profile takes over again",
)
@click.option(
    "--timezone",
    default="UTC",
    show_default=True,
    help="IANA (Europe/Amsterdam) or Windows ('W. Europe Standard Time') time zone of the times",
)
@click.option("--copy-rules", metavar="PROFILE", help="start with the rules (or target tracking) of this profile")
@pass_ctx
def profile_create(
    c: Ctx,
    which: Target,
    name: str,
    count: int,
    min_count: int | None,
    max_count: int | None,
    recurrence: str | None,
    start: str | None,
    end: str | None,
    timezone: str,
    copy_rules: str | None,
) -> None:
    """Add a fixed-date or weekly profile, like 'az monitor autoscale profile create'.

    \b
    --name black-friday --count 8 --start 2026-11-27 --end 2026-11-28 --timezone "Eastern Standard Time"
    --name office --count 4 --recurrence week mon tue wed thu fri --start 08:00 --end 18:00 \\
        --timezone Europe/Amsterdam --copy-rules default

    A weekly profile runs until the next weekly profile starts, so (as az and the portal do) a
    companion profile named {"name": "default", "for": "<name>"} is added that starts at --end
    and restores the default profile.
    """
    from localvmss.autoscale.settings import resolve_time_zone

    capacity = _capacity(count, min_count, max_count)
    try:
        resolve_time_zone(timezone)
    except ValueError as exc:
        raise InvalidSpec(f"--timezone: {exc}") from None
    if not name.strip() or len(name) > 256:
        raise InvalidSpec("--name must be 1 to 256 characters")
    days: list[str] | None = None
    if recurrence is not None:
        days = parse_recurrence(recurrence)
        start_at = parse_clock(start, "--start") if start else (0, 0)
        end_at = parse_clock(end, "--end") if end else (23, 59)
        if start_at == end_at:
            raise InvalidSpec("--end is the same as --start; the profile would never run")
    else:
        if not start or not end:
            raise InvalidSpec(
                "give --start and --end (a fixed-date profile) or --recurrence week DAY ... (a weekly profile)"
            )
        fixed = {
            "timeZone": timezone,
            "start": parse_fixed_time(start, "--start"),
            "end": parse_fixed_time(end, "--end"),
        }
        _validate_part("FixedDate", fixed, "fixed date")
    setting = _get(c, which)
    if any(p["name"] == name for p in setting.get("profiles", [])):
        raise Conflict(f"profile {name!r} exists; delete it first with 'localvmss autoscale profile delete'")
    source = _find_profile(setting, copy_rules) if copy_rules else None
    if days is not None:
        new = recurring_profiles(name, capacity, days, start_at, end_at, timezone, _find_profile(setting, None))
    else:
        new = [{"name": name, "capacity": capacity, "rules": [], "fixedDate": fixed}]
    if source is not None:
        new[0]["rules"] = copy.deepcopy(source.get("rules") or [])
        if source.get("targetTracking"):
            new[0]["targetTracking"] = copy.deepcopy(source["targetTracking"])
    setting["profiles"].extend(new)
    result = _put(c, which, setting)
    emit(c, [p for p in result.get("profiles", []) if p["name"] in {q["name"] for q in new}], PROFILE_COLUMNS)


@profile_group.command("list")
@target_options("--autoscale-name")
@pass_ctx
def profile_list(c: Ctx, which: Target) -> None:
    """List the profiles."""
    emit(c, _get(c, which).get("profiles", []), PROFILE_COLUMNS)


@profile_group.command("delete")
@target_options("--autoscale-name")
@click.option("-n", "--name", "name", required=True, help="profile name")
@pass_ctx
def profile_delete(c: Ctx, which: Target, name: str) -> None:
    """Delete a profile (and, for a weekly one, its end companion)."""
    setting = _get(c, which)
    target = _find_profile(setting, name)
    if _is_default(target):
        raise InvalidSpec(
            f"{target['name']!r} is the default profile and cannot be deleted; "
            f"'localvmss autoscale delete' removes the whole setting"
        )
    setting["profiles"] = [
        p for p in setting["profiles"] if p is not target and companion_for(p["name"]) != target["name"]
    ]
    emit(c, _put(c, which, setting).get("profiles", []), PROFILE_COLUMNS)


# --------------------------------------------------------------------------- target tracking
@autoscale.command("target-tracking")
@target_options("--autoscale-name")
@click.option("--metric", help='catalogue metric, e.g. "Percentage CPU" (or give --query)')
@click.option("--query", metavar="PROMQL", help="PromQL returning the per-instance average ($scale_set replaced)")
@click.option("--target", type=float, help="the per-instance value to keep the metric near")
@click.option(
    "--tolerance",
    type=float,
    default=0.1,
    show_default=True,
    help="no change while |metric/target - 1| <= tolerance",
)
@click.option("--window", default="2m", show_default=True, help="averaging window of the metric")
@click.option("--timegrain", default="avg 1m", show_default=True, help="per-instance statistic and grain")
@click.option(
    "--scale-down-window",
    default="5m",
    show_default=True,
    help="scale in only to the highest recommendation of this long (stabilisation)",
)
@click.option(
    "--scale-up-window",
    default="0s",
    show_default=True,
    help="scale out only to the lowest recommendation of this long",
)
@click.option("--remove", is_flag=True, help="remove target tracking (the profile then stays at its default)")
@profile_option
@pass_ctx
def target_tracking(
    c: Ctx,
    which: Target,
    metric: str | None,
    query: str | None,
    target: float | None,
    tolerance: float,
    window: str,
    timegrain: str,
    scale_down_window: str,
    scale_up_window: str,
    remove: bool,
    profile_name: str | None,
) -> None:
    """Keep a metric near a target per instance, like a Kubernetes HPA (ours, not Azure's).

    Sets the default profile's (or --profile-name's) targetTracking and REMOVES THAT PROFILE'S
    RULES: a profile scales by rules or by target tracking, not both. The capacity limits stay.

    \b
    --metric "Percentage CPU" --target 50
    --query 'avg(rate(http_requests_total{scale_set="$scale_set"}[1m]))' --target 100
    """
    tt: dict[str, Any] | None = None
    if remove:
        if metric or query or target is not None:
            raise InvalidSpec("--remove takes no --metric, --query or --target")
    else:
        if target is None:
            raise InvalidSpec("give --target (the per-instance value to keep the metric near)")
        if (metric is None) == (query is None):
            raise InvalidSpec("give either --metric NAME or --query PROMQL")
        statistic, grain = parse_timegrain(timegrain)
        tt = {
            **({"query": query.strip()} if query is not None else {}),
            **({"metricName": _canonical_metric(metric)} if metric is not None else {}),
            "timeGrain": grain,
            "statistic": statistic,
            "timeWindow": iso_duration(parse_duration(window, "--window")),
            "timeAggregation": "Average",
            "target": target,
            "tolerance": tolerance,
            "scaleDownStabilizationWindow": iso_duration(parse_duration(scale_down_window, "--scale-down-window")),
            "scaleUpStabilizationWindow": iso_duration(parse_duration(scale_up_window, "--scale-up-window")),
        }
        _validate_part("TargetTracking", tt, "target tracking")
    setting = _get(c, which)
    profile = _find_profile(setting, profile_name)
    if tt is None:
        if not profile.pop("targetTracking", None):
            raise NotFound(f"profile {profile['name']!r} has no target tracking")
    else:
        if profile.get("rules"):
            _warn(f"removed {len(profile['rules'])} rule(s) of profile {profile['name']!r}")
        profile["rules"] = []
        profile["targetTracking"] = tt
    if _is_default(profile):
        sync_companions(setting)
    result = _put(c, which, setting)
    emit(c, _find_profile(result, profile["name"]), PROFILE_COLUMNS)


def _canonical_metric(name: str) -> str:
    from localvmss.autoscale.metrics_catalog import canonical_metric_name

    try:
        return canonical_metric_name(name)
    except ValueError as exc:
        raise InvalidSpec(f"--metric: {exc}") from None


# -------------------------------------------------------------------------------- simulate
@autoscale.command("simulate")
@target_options("--autoscale-name")
@click.option("--start", required=True, help="ISO-8601 (no offset = UTC), 'now' or 'now-2h'")
@click.option("--end", default="now", show_default=True, help="ISO-8601, 'now' or 'now-30m'")
@click.option(
    "--step",
    type=click.FloatRange(min=0, min_open=True),
    help="seconds between evaluations; default the daemon's autoscale interval",
)
@click.option(
    "--setting-file",
    type=click.Path(exists=True, dir_okay=False),
    help="replay this Azure-shaped setting JSON instead of the stored one",
)
@pass_ctx
def simulate(c: Ctx, which: Target, start: str, end: str, step: float | None, setting_file: str | None) -> None:
    """Replay Prometheus's history: what the setting would have done between --start and --end."""
    now = datetime.now(UTC).replace(microsecond=0)
    start_at = parse_moment(start, now, "--start")
    end_at = parse_moment(end, now, "--end")
    if end_at <= start_at:
        raise InvalidSpec(f"--end {end_at.isoformat()} is not after --start {start_at.isoformat()}")
    body: dict[str, Any] = {"start": start_at.isoformat(), "end": end_at.isoformat()}
    if step is not None:
        body["step"] = step
    if setting_file:
        try:
            data = json.loads(Path(setting_file).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidSpec(f"--setting-file {setting_file}: not readable JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidSpec(f"--setting-file {setting_file}: must hold a JSON object (an autoscale setting)")
        body["setting"] = data
    steps = c.client.post(f"{_path(_scale_set(c, which))}/simulate{which.query()}", body)["value"]
    if c.output != "table":
        emit(c, steps)
    elif not steps:
        click.echo(f"no scaling between {start_at.isoformat()} and {end_at.isoformat()}")
    else:
        emit(c, steps, SIMULATION_COLUMNS)
