"""Durations as the autoscale options write them: az's shorthand (``30s``, ``5m``, ``1h30m``,
``2d``) or ISO-8601 (``PT5M``), and back to ISO-8601 as Azure stores them.

Pure; used by the ``--condition`` grammar (``localvmss.cli.condition``) and the autoscale
commands' other options. Each problem is one ``InvalidSpec`` line saying what was expected.
"""

from __future__ import annotations

import re
from datetime import timedelta

import isodate

from localvmss.errors import InvalidSpec

DURATION_SHAPE = "a number with a unit such as 30s, 5m, 1h or 1h30m (or ISO-8601 such as PT5M)"

# Used with fullmatch and ASCII digits: "$" also matches before a newline, \d also takes "٥".
_SHORT_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?", re.IGNORECASE)


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """``30s``, ``5m``, ``1h30m``, ``2d``, ``1d2h3m4s`` (az's shorthand) or ISO-8601 ``PT5M``."""
    value = text.strip() if isinstance(text, str) else ""
    if not value:
        raise InvalidSpec(f"{what} is empty; expected {DURATION_SHAPE}")
    if value[0] in "pP":
        try:
            if not any(ch.isdigit() for ch in value):
                raise ValueError(value)
            parsed = isodate.parse_duration(value.upper())
        except (isodate.ISO8601Error, ValueError, TypeError):
            raise InvalidSpec(f"{what} {text!r} is not a duration; expected {DURATION_SHAPE}") from None
        if not isinstance(parsed, timedelta):
            raise InvalidSpec(f"{what} {text!r} uses months or years; use days, hours, minutes or seconds")
        if parsed < timedelta(0):
            raise InvalidSpec(f"{what} {text!r} is negative")
        return parsed
    match = _SHORT_DURATION.fullmatch(value)
    if not match or not any(match.groups()):
        hint = f" (minutes? write {value}m)" if value.isdigit() else ""
        raise InvalidSpec(f"{what} {text!r} is not a duration{hint}; expected {DURATION_SHAPE}")
    d, h, m, s = (int(g or 0) for g in match.groups())
    return timedelta(days=d, hours=h, minutes=m, seconds=s)


def iso_duration(value: timedelta) -> str:
    """ISO-8601 as Azure writes it: PT5M, PT1H30M, P1D, PT0S."""
    if value < timedelta(0):
        raise InvalidSpec(f"duration {value} is negative")
    micros = value // timedelta(microseconds=1)
    seconds, micros = divmod(micros, 1_000_000)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    sec_text = f"{secs}.{micros:06d}".rstrip("0") if micros else str(secs)
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    clock += f"{sec_text}S" if secs or micros else ""
    out = "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")
    return "PT0S" if out == "P" else out
