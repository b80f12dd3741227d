"""The reconciler's view of the load balancer, mapped onto the supervised HAProxy.

An instance joins rotation once it has been healthy since its last (re)start and nothing is
about to take it down (deletion, reimage, restart, power-off); everything else is a member that
receives no new connections. From then on HAProxy's own health checks take a failing instance
out of rotation and put it back: the daemon's probe does not second-guess them, so a probe that
times out under load never empties a backend. Removal always drains first.
"""

from __future__ import annotations

from localvmss import children, lifecycle
from localvmss.config import DaemonConfig
from localvmss.lb.haproxy import LoadBalancer, ServerState
from localvmss.lb.spec import Member, from_json, to_json
from localvmss.model import OrchestrationMode
from localvmss.spec import ScaleSetSpec
from localvmss.store import InstanceRow, Store


class HAProxyBalancer:
    def __init__(self, cfg: DaemonConfig, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.lb = LoadBalancer(cfg.state_dir / "haproxy", cfg.haproxy_binary, cfg.haproxy_stats_port)

    def start(self) -> None:
        self.lb.start()
        children.record(self.cfg.state_dir, "haproxy", self.lb.master_pid)

    def stop(self) -> None:
        self.lb.stop()

    def ensure_running(self) -> bool:
        restarted = self.lb.ensure_running()
        # Any path may have restarted it (a sync that found it dead, too): record who runs now.
        children.record(self.cfg.state_dir, "haproxy", self.lb.master_pid)
        self.lb.save_server_state()
        return restarted

    def reload(self) -> None:
        self.lb.reload()

    def validate(self, set_name: str, spec: ScaleSetSpec, capacity: int) -> dict[str, object]:
        """Parse and check the set's LB model against HAProxy's current ports; InvalidSpec if bad."""
        lb_spec = from_json(spec.load_balancer)
        # A Flexible set's NAT pool must still number every VM it already holds.
        held = len(self.store.instances(set_name))
        need = capacity if spec.mode is OrchestrationMode.UNIFORM else max(capacity, held)
        return to_json(self.lb.check_spec(set_name, lb_spec, max_capacity=max(need, 1)))

    def sync(self, scale_set: str, spec: ScaleSetSpec, instances: list[InstanceRow]) -> None:
        members = [Member(i.instance_id, i.ip, ready=lifecycle.in_rotation(i), nat_port=i.nat_port) for i in instances]
        self.lb.apply(scale_set, from_json(spec.load_balancer), members)

    def drain(self, scale_set: str, instance_id: int, timeout_s: float) -> None:
        self.lb.drain(scale_set, instance_id, timeout_s)

    def drain_and_remove(self, scale_set: str, instance_id: int, timeout_s: float) -> None:
        self.lb.drain(scale_set, instance_id, timeout_s)
        self.lb.remove(scale_set, instance_id)

    def remove_set(self, scale_set: str) -> None:
        self.lb.remove_set(scale_set)

    def server_states(self, scale_set: str) -> dict[int, ServerState]:
        """HAProxy's view of each member now (status, current sessions): what ``watch`` shows."""
        return self.lb.server_states(scale_set)
