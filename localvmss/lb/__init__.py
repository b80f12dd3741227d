"""Layer-4 load balancing of scale sets with one HAProxy (see haproxy.py for the design)."""

from localvmss.lb.haproxy import LoadBalancer, ServerState
from localvmss.lb.runtime import HAProxyError, HAProxyUnavailable
from localvmss.lb.spec import (
    HealthProbe,
    LbRule,
    LoadBalancerSpec,
    Member,
    NatPool,
    from_json,
    parse_lb_rule,
    parse_nat_pool,
    parse_probe,
    to_json,
    validate,
)

__all__ = [
    "HAProxyError",
    "HAProxyUnavailable",
    "HealthProbe",
    "LbRule",
    "LoadBalancer",
    "LoadBalancerSpec",
    "Member",
    "NatPool",
    "ServerState",
    "from_json",
    "parse_lb_rule",
    "parse_nat_pool",
    "parse_probe",
    "to_json",
    "validate",
]
