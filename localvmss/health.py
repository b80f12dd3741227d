"""Application health probes of instances (HTTP path or TCP port), as Azure's Application Health
extension does with rich health states.

The daemon probes each running instance directly; the result drives readiness (Creating ->
Succeeded), load-balancer membership and automatic repair. One probe sees one of three states
(the fourth, Initializing, is the monitor's: a failing probe inside the grace period):

* healthy: a TCP connection, or an HTTP 2xx whose body does not say otherwise;
* unhealthy: an HTTP answer other than 2xx, or a 2xx whose JSON body says
  ``{"ApplicationHealthState": "Unhealthy"}`` (the value in any case);
* unknown: nothing answered (connection refused, timeout, a broken HTTP answer).
"""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Literal

from localvmss.spec import HealthProbeModel

ProbeState = Literal["healthy", "unhealthy", "unknown"]
MAX_BODY_BYTES = 4096  # a health answer is small; a larger body is read no further


@dataclass(frozen=True)
class ProbeResult:
    """What one probe saw: its state and, for people, what was seen."""

    state: ProbeState
    seen: str

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"


def state_of_http(status: int, body: bytes) -> ProbeState:
    """Rich health states over HTTP: a 2xx is decided by an ``ApplicationHealthState`` JSON body
    when there is one (Healthy / Unhealthy, any case), else it is healthy; other codes are
    unhealthy."""
    if not 200 <= status < 300:
        return "unhealthy"
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "healthy"
    if isinstance(data, dict):
        said = {str(k).lower(): v for k, v in data.items()}.get("applicationhealthstate")
        if isinstance(said, str) and said.strip().lower() == "unhealthy":
            return "unhealthy"
    return "healthy"


def probe_once(ip: str, probe: HealthProbeModel, timeout_s: float = 2.0) -> ProbeResult:
    """One probe of ``ip`` as the set's model says."""
    try:
        if probe.protocol == "tcp":
            with socket.create_connection((ip, probe.port), timeout=timeout_s):
                return ProbeResult("healthy", f"tcp {probe.port} open")
        conn = http.client.HTTPConnection(ip, probe.port, timeout=timeout_s)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "localvmss-health"})
            answer = conn.getresponse()
            body = answer.read(MAX_BODY_BYTES)
        finally:
            conn.close()
        state = state_of_http(answer.status, body)
        said = " (the body says Unhealthy)" if state == "unhealthy" and 200 <= answer.status < 300 else ""
        return ProbeResult(state, f"http {probe.path} -> {answer.status}{said}")
    except OSError as exc:
        return ProbeResult("unknown", f"{probe.protocol} {probe.port}: {exc.strerror or exc}")
    except http.client.HTTPException as exc:
        return ProbeResult("unknown", f"http {probe.path}: {type(exc).__name__}")
