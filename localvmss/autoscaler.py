"""The autoscaler: evaluates each set's autoscale setting through Prometheus and writes only the
desired capacity (clamped, with its reason); the reconciler makes it so.

Decisions that change the capacity always reach the activity log with the numbers behind them;
decisions that change nothing are logged when their reason changes, so the log explains why a
set did not scale (cooldown, flapping, no data) without repeating itself every interval.
``simulate`` replays Prometheus's history against a (possibly edited) setting and sends nothing.

A change of capacity also goes to the setting's webhooks (Azure's payload), handed to a
``WebhookSender`` whose thread does the POSTs, so a slow receiver never delays the next set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from localvmss.autoscale.engine import Decision, evaluate
from localvmss.autoscale.metrics_catalog import build_query
from localvmss.autoscale.notifications import webhook_payload
from localvmss.autoscale.settings import AutoscaleSetting, parse_autoscale_setting
from localvmss.autoscale.target_tracking import Recommendation
from localvmss.capacity import CapacityRule
from localvmss.errors import CapacityError, InvalidSpec, LocalVMSSError, NotFound, NotSupported
from localvmss.metrics.exporter import DaemonMetrics
from localvmss.metrics.prometheus import PrometheusClient
from localvmss.model import OrchestrationMode
from localvmss.store import Store
from localvmss.webhooks import WebhookSender

log = logging.getLogger(__name__)

MAX_SIMULATION_STEPS = 5000


class Autoscaler:
    def __init__(
        self,
        store: Store,
        prometheus_url: str,
        interval_s: float,
        wake: Callable[[], None],
        capacity: CapacityRule | None = None,
        metrics: DaemonMetrics | None = None,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.store = store
        self.client = PrometheusClient(prometheus_url)
        self.interval_s = interval_s
        self.wake = wake
        self.capacity = capacity  # the same admission and NAT-pool checks as a manual scale
        self.metrics = metrics
        self.webhooks = webhooks or WebhookSender(on_result=metrics.webhook_result if metrics else None)

    # -- settings ---------------------------------------------------------------------------
    def put_setting(self, scale_set: str, data: Any) -> AutoscaleSetting:
        """Validate (including every PromQL expression, by Prometheus itself) and store."""
        row = self.store.scale_set(scale_set)
        if row.mode == OrchestrationMode.FLEXIBLE.value:
            raise NotSupported("autoscale is not supported in VM (Flexible) orchestration mode")
        if isinstance(data, dict) and "targetResourceName" not in data and "properties" not in data:
            data = {**data, "targetResourceName": scale_set}
        setting = parse_autoscale_setting(data)
        if setting.scale_set != scale_set:
            raise InvalidSpec(f"targetResourceName {setting.scale_set!r} is not the scale set {scale_set!r}")
        for expr in self.queries(setting):
            self.client.validate(expr)
        self.store.put_autoscale(scale_set, setting.model_dump(mode="json", by_alias=True, exclude_none=True))
        self.store.log_activity(scale_set, "autoscale-setting", "autoscale setting saved")
        return setting

    @staticmethod
    def queries(setting: AutoscaleSetting) -> list[str]:
        out = []
        for profile in setting.profiles:
            for rule in profile.rules:
                out.append(build_query(rule.metric_trigger, setting.scale_set))
            if profile.target_tracking is not None:
                out.append(build_query(profile.target_tracking, setting.scale_set))
        return out

    def get_setting(self, scale_set: str) -> dict[str, Any]:
        found = self.store.autoscale(scale_set)
        if found is None:
            raise NotFound(f"scale set {scale_set!r} has no autoscale setting")
        return found[0]

    # -- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            for name in self.store.autoscale_sets():
                try:
                    self.evaluate_set(name)
                except LocalVMSSError as exc:
                    log.warning("autoscale of %s: %s", name, exc.message)
                except Exception:
                    log.exception("autoscale of %s failed", name)

    def evaluate_set(self, scale_set: str, now: datetime | None = None) -> Decision | None:
        found = self.store.autoscale(scale_set)
        if found is None:
            return None
        data, last_at, state = found
        setting = parse_autoscale_setting(data)
        if not setting.enabled:
            return None
        row = self.store.scale_set(scale_set)
        if row.deleting:
            return None
        now = now or datetime.now(UTC)
        if self.metrics is not None:
            self.metrics.autoscale_evaluated(scale_set)
        decision = evaluate(
            setting,
            current_capacity=row.capacity,
            now=now,
            query=self.client.query_scalar,
            last_scale_action_at=datetime.fromtimestamp(last_at, UTC) if last_at else None,
            last_direction=state.get("last_direction"),
            history=_history_from(state.get("history", [])),
        )
        new_state = {
            "last_direction": state.get("last_direction"),
            "history": [{"at": r.at.timestamp(), "replicas": r.replicas} for r in decision.history],
            "last_reason": state.get("last_reason"),
            "limits": _limits(setting, decision.profile),
        }
        details = {
            "profile": decision.profile,
            "observations": [
                {"rule": o.rule, "value": o.value, "triggered": o.triggered} for o in decision.observations
            ],
        }
        if decision.new_capacity != row.capacity and self._refused(scale_set, row, decision, details, state, new_state):
            return decision
        if decision.new_capacity != row.capacity:
            self.store.update_scale_set(scale_set, capacity=decision.new_capacity)
            new_state.update(last_direction=decision.direction, last_reason=decision.reason)
            self.store.update_autoscale_state(scale_set, new_state, last_action_at=now.timestamp())
            self.store.log_activity(scale_set, "autoscale", decision.reason, details)
            log.info("autoscale %s: %s", scale_set, decision.reason)
            if self.metrics is not None:
                self.metrics.autoscale_action(scale_set, decision.direction)
            self._notify(setting, row.capacity, decision, now)
            self.wake()
        else:
            if decision.reason != state.get("last_reason"):
                self.store.log_activity(scale_set, "autoscale-evaluation", decision.reason, details)
                new_state["last_reason"] = decision.reason
            self.store.update_autoscale_state(scale_set, new_state)
        return decision

    def _notify(self, setting: AutoscaleSetting, old: int, decision: Decision, now: datetime) -> None:
        """Queue Azure's webhook payload to every webhook of the setting (sent by another thread)."""
        what = f"scale set {setting.scale_set}: {old}->{decision.new_capacity}"
        for hook in setting.webhooks:
            payload = webhook_payload(
                setting_name=setting.name or f"{setting.scale_set}-autoscale",
                scale_set=setting.scale_set,
                old_capacity=old,
                new_capacity=decision.new_capacity,
                at=now,
                reason=decision.reason,
                properties=hook.properties,
            )
            self.webhooks.submit(hook.service_uri, payload, what)

    def _refused(
        self,
        scale_set: str,
        row: Any,
        decision: Decision,
        details: dict[str, Any],
        state: dict[str, Any],
        new_state: dict[str, Any],
    ) -> bool:
        """A decision the hosts or the NAT pool cannot hold is logged with the numbers and not
        applied: the set stays as it was (and the next evaluation may try again)."""
        if self.capacity is None:
            return False
        try:
            spec = row.spec
            self.capacity.check(scale_set, spec, row.capacity, decision.new_capacity)
        except (CapacityError, InvalidSpec) as exc:
            reason = f"{decision.reason}; refused: {exc.message}"
            if reason != state.get("last_reason"):
                self.store.log_activity(
                    scale_set, "autoscale-refused", reason, {**details, "requested": decision.new_capacity}
                )
                log.warning("autoscale %s: %s", scale_set, reason)
            new_state["last_reason"] = reason
            self.store.update_autoscale_state(scale_set, new_state)
            return True
        return False

    # -- replay -----------------------------------------------------------------------------
    def simulate(
        self, scale_set: str, start: datetime, end: datetime, step_s: float | None = None, setting_data: Any = None
    ) -> list[dict[str, Any]]:
        """What the setting would have done between start and end, evaluated at each step."""
        if end <= start:
            raise InvalidSpec("--end must be after --start")
        data = setting_data if setting_data is not None else self.get_setting(scale_set)
        if isinstance(data, dict) and "targetResourceName" not in data and "properties" not in data:
            data = {**data, "targetResourceName": scale_set}
        setting = parse_autoscale_setting(data)
        step = timedelta(seconds=step_s or self.interval_s)
        if (end - start) / step > MAX_SIMULATION_STEPS:
            raise InvalidSpec(f"that replay needs more than {MAX_SIMULATION_STEPS} steps; give a larger --step")
        capacity = self.client.query_scalar(f'localvmss_scale_set_capacity_desired{{scale_set="{scale_set}"}}', start)
        current = int(capacity) if capacity is not None else self.store.scale_set(scale_set).capacity
        last_at: datetime | None = None
        last_dir: Any = None
        history: tuple[Recommendation, ...] = ()
        out = []
        at = start
        while at <= end:
            moment = at

            def query(expr: str, when: datetime = moment) -> float | None:
                return self.client.query_scalar(expr, when)

            decision = evaluate(
                setting,
                current_capacity=current,
                now=moment,
                query=query,
                last_scale_action_at=last_at,
                last_direction=last_dir,
                history=history,
            )
            history = decision.history
            if decision.new_capacity != current:
                out.append(
                    {"at": moment.isoformat(), "from": current, "to": decision.new_capacity, "reason": decision.reason}
                )
                current = decision.new_capacity
                last_at, last_dir = moment, decision.direction
            at += step
        return out


def _limits(setting: AutoscaleSetting, profile_name: str) -> dict[str, Any] | None:
    """The bounds of the profile in force, kept in the state for the exporter's status metrics."""
    for profile in setting.profiles:
        if profile.name == profile_name:
            cap = profile.capacity
            return {"profile": profile.name, "minimum": cap.minimum, "maximum": cap.maximum, "default": cap.default}
    return None


def _history_from(raw: list[dict[str, Any]]) -> tuple[Recommendation, ...]:
    return tuple(Recommendation(datetime.fromtimestamp(r["at"], UTC), int(r["replicas"])) for r in raw)
