"""Application health probes of instances (HTTP path or TCP port), as Azure's health extension does.

The daemon probes each running instance directly; the result drives readiness (Creating ->
Succeeded), load-balancer membership and automatic repair.
"""

from __future__ import annotations

import http.client
import socket

from localvmss.spec import HealthProbeModel


def probe_once(ip: str, probe: HealthProbeModel, timeout_s: float = 2.0) -> tuple[bool, str]:
    """One probe; returns (healthy, what was seen)."""
    try:
        if probe.protocol == "tcp":
            with socket.create_connection((ip, probe.port), timeout=timeout_s):
                return True, f"tcp {probe.port} open"
        conn = http.client.HTTPConnection(ip, probe.port, timeout=timeout_s)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "localvmss-health"})
            status = conn.getresponse().status
        finally:
            conn.close()
        return 200 <= status < 300, f"http {probe.path} -> {status}"
    except OSError as exc:
        return False, f"{probe.protocol} {probe.port}: {exc.strerror or exc}"
    except http.client.HTTPException as exc:
        return False, f"http {probe.path}: {type(exc).__name__}"
