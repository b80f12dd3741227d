"""The autoscale ``--condition`` grammar, as az keeps it in ``monitor/grammar/autoscale``:

    "<METRIC NAME> <OP> <THRESHOLD> <AGG> <WINDOW> [where DIM ==|!= V [or V ...] [and ...]]"

parsed from the right so the metric name may contain spaces (``"Percentage CPU > 70 avg 5m"``),
with an optional quoted metric namespace in front. Pure: ``parse_condition`` returns the
metricTrigger fields the condition determines; ``localvmss.cli.autoscale_cmds`` adds the rest
(time grain, statistic) and validates the whole rule. Each problem is one ``InvalidSpec`` line
saying what was expected, so the command exits with code 2 before any request is made.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from localvmss.cli.durations import iso_duration, parse_duration
from localvmss.errors import InvalidSpec

# az's maps (azure/cli/command_modules/monitor/util.py), plus the Azure spellings themselves.
OPERATORS = {
    ">": "GreaterThan",
    ">=": "GreaterThanOrEqual",
    "<": "LessThan",
    "<=": "LessThanOrEqual",
    "==": "Equals",
    "!=": "NotEquals",
}
AGGREGATIONS = {
    "avg": "Average",
    "min": "Minimum",
    "max": "Maximum",
    "total": "Total",
    "count": "Count",
    "last": "Last",
}
_AGG_BY_NAME = {**AGGREGATIONS, **{v.lower(): v for v in AGGREGATIONS.values()}}
_OPS = " ".join(OPERATORS)
# The other way, for showing a stored trigger: GreaterThan -> ">", Average -> "avg".
OPERATOR_SYMBOLS = {v: k for k, v in OPERATORS.items()}
AGGREGATION_WORDS = {v: k for k, v in AGGREGATIONS.items()}

CONDITION_SHAPE = "'<METRIC NAME> <OP> <THRESHOLD> <AGG> <WINDOW>' such as 'Percentage CPU > 70 avg 5m'"

_OPERATOR_RE = re.compile(r"([<>=!]+)")


def _dimensions(text: str, words: list[str]) -> list[dict[str, Any]]:
    """az's ``where`` clause: ``DIM ==|!= V [or|, V ...] [and|, DIM ...]`` -> Azure dimensions."""
    tokens = [t for w in words for t in re.split(r"(,)", w) if t]
    shape = "expected 'where DIMENSION ==|!= VALUE [or VALUE ...] [and DIMENSION ...]'"
    out: list[dict[str, Any]] = []
    i, n = 0, len(tokens)

    def is_value(k: int) -> bool:
        return k < n and tokens[k] not in ("==", "!=", ",") and tokens[k].lower() not in ("or", "and", "where")

    while True:
        if not is_value(i) or i + 1 >= n or tokens[i + 1] not in ("==", "!="):
            raise InvalidSpec(f"condition {text!r}: bad where clause; {shape}")
        name, op = tokens[i], tokens[i + 1]
        i += 2
        if not is_value(i):
            raise InvalidSpec(f"condition {text!r}: dimension {name!r} has no value; {shape}")
        values = [tokens[i]]
        i += 1
        while i < n:
            sep = tokens[i].lower()
            if sep == "and" or (sep == "," and i + 2 < n and tokens[i + 2] in ("==", "!=")):
                i += 1
                break
            if sep in ("or", ",") and is_value(i + 1):
                values.append(tokens[i + 1])
                i += 2
                continue
            raise InvalidSpec(f"condition {text!r}: unexpected {tokens[i]!r} in the where clause; {shape}")
        out.append({"DimensionName": name, "Operator": "Equals" if op == "==" else "NotEquals", "Values": values})
        if i >= n:
            return out


def parse_condition(text: str, query: str | None = None) -> dict[str, Any]:
    """``--condition`` -> the metricTrigger fields it determines (not timeGrain/statistic).

    Without ``query`` the metric must be a catalogue metric (matched case-insensitively, stored
    in its catalogue spelling). With ``query`` (raw PromQL) the metric words are only a label for
    reasons and tables; the word ``query`` means no label.
    """
    from localvmss.autoscale.metrics_catalog import canonical_metric_name

    raw = str(text)
    body = raw.strip()
    namespace: str | None = None
    if body[:1] in ("'", '"'):
        end = body.find(body[0], 1)
        if end < 0:
            raise InvalidSpec(f"condition {raw!r}: the quoted metric namespace is not closed")
        namespace, body = body[1:end].strip(), body[end + 1 :]
    words = _OPERATOR_RE.sub(r" \1 ", body).split()
    for word in words:
        if _OPERATOR_RE.fullmatch(word) and word not in OPERATORS:
            raise InvalidSpec(f"condition {raw!r}: operator {word!r} is not one of {_OPS}; expected {CONDITION_SHAPE}")
    where = next(
        (i for i, w in enumerate(words) if w.lower() == "where" and any(v in OPERATORS for v in words[:i])),
        None,
    )
    dims = _dimensions(raw, words[where + 1 :]) if where is not None else []
    words = words[:where] if where is not None else words
    at = max((i for i, w in enumerate(words) if w in OPERATORS), default=None)
    if at is None:
        raise InvalidSpec(f"condition {raw!r}: no comparison operator ({_OPS}); expected {CONDITION_SHAPE}")
    if at == 0:
        raise InvalidSpec(f"condition {raw!r}: no metric name before {words[0]!r}; expected {CONDITION_SHAPE}")
    if len(words) - at - 1 != 3:
        raise InvalidSpec(
            f"condition {raw!r}: expected <THRESHOLD> <AGG> <WINDOW> after {words[at]!r}, got "
            f"{' '.join(words[at + 1 :])!r}; expected {CONDITION_SHAPE}"
        )
    *metric_words, op, threshold_text, agg_text, window_text = words
    try:
        threshold = float(threshold_text.removesuffix("%"))
    except ValueError:
        threshold = math.nan
    if not math.isfinite(threshold):
        raise InvalidSpec(
            f"condition {raw!r}: threshold {threshold_text!r} is not a number; expected {CONDITION_SHAPE}"
        )
    aggregation = _AGG_BY_NAME.get(agg_text.lower())
    if aggregation is None:
        raise InvalidSpec(
            f"condition {raw!r}: aggregation {agg_text!r} is not one of {', '.join(AGGREGATIONS)}; "
            f"expected {CONDITION_SHAPE}"
        )
    window = parse_duration(window_text, f"condition {raw!r}: window")
    if window <= timedelta(0):
        raise InvalidSpec(f"condition {raw!r}: the window must be longer than 0")
    metric = " ".join(metric_words)
    trigger: dict[str, Any] = {}
    if query is not None:
        if not query.strip():
            raise InvalidSpec("--query is empty; give a PromQL expression that returns one number")
        if dims:
            raise InvalidSpec(f"condition {raw!r}: a where clause filters catalogue metrics, not a --query")
        if metric.lower() != "query":
            trigger["metricName"] = metric
        trigger["query"] = query.strip()
    elif metric.lower() == "query":
        raise InvalidSpec(f"condition {raw!r} names 'query' but no --query PROMQL was given")
    else:
        try:
            trigger["metricName"] = canonical_metric_name(metric)
        except ValueError as exc:
            raise InvalidSpec(f"condition {raw!r}: {exc}") from None
    if namespace:
        trigger["metricNamespace"] = namespace
    trigger.update(
        operator=OPERATORS[op],
        threshold=int(threshold) if threshold.is_integer() else threshold,
        timeAggregation=aggregation,
        timeWindow=iso_duration(window),
    )
    if dims:
        trigger["dimensions"] = dims
    return trigger
