"""The instance metadata service, the daemon's side: what a guest reads at its gateway.

Guests never reach the daemon: a proxy (``localvmss.metadata_proxy``) listens on each guest
network's gateway address, inside the host's network namespace, and forwards every request to
the unix socket served here (``<state_dir>/metadata.sock``, root only), naming the guest's
address (``X-Forwarded-For``, set by the proxy, never passed on from the guest) and the host
(``X-Localvmss-Host``). The instance is the one holding that address on that host, so a guest
only ever sees its own identity and its own events. Served, in Azure IMDS shapes:

- ``GET /metadata/instance``: ``compute`` with name, computer name, scale set, instance id,
  model version, zone, fault and update domain;
- ``GET /metadata/scheduledevents``: ``DocumentIncarnation`` and ``Events`` (Terminate notices);
- ``POST /metadata/scheduledevents`` with ``{"StartRequests": [{"EventId": ...}]}``: acknowledge.

Every request needs the header ``Metadata: true`` (400 otherwise, as Azure answers); the
``api-version`` query parameter is accepted and ignored.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from localvmss import terminate
from localvmss.errors import LocalVMSSError, NotFound
from localvmss.provision import computer_name
from localvmss.store import InstanceRow, ScheduledEventRow, Store

log = logging.getLogger(__name__)

SOCKET_NAME = "metadata.sock"
HOST_HEADER = "X-Localvmss-Host"
MAX_BODY = 64 * 1024


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


class MetadataService:
    """Answers one request: (status, JSON body). Tests call ``handle`` directly or over the socket."""

    def __init__(self, store: Store, wake: Callable[[], None], clock: Callable[[], float]) -> None:
        self.store = store
        self.wake = wake
        self.clock = clock

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        lower = {k.lower(): v for k, v in headers.items()}
        if lower.get("metadata", "").strip().lower() != "true":
            return 400, {"error": "Bad request. Required metadata header not specified"}
        ip = lower.get("x-forwarded-for", "").split(",")[0].strip()
        host = lower.get(HOST_HEADER.lower(), "").strip()
        try:
            inst = self.store.instance_by_address(host, ip)
        except NotFound:
            return 404, {"error": f"no instance of localvmss has address {ip or '(none)'} on host {host or '(none)'}"}
        path = urlsplit(target).path.rstrip("/")
        if path == "/metadata/instance" and method == "GET":
            return 200, self.instance_document(inst)
        if path == "/metadata/instance/compute" and method == "GET":
            return 200, self.instance_document(inst)["compute"]
        if path == "/metadata/scheduledevents" and method == "GET":
            return 200, self.events_document(inst)
        if path == "/metadata/scheduledevents" and method == "POST":
            return self.start_requests(inst, body)
        if path in ("/metadata/instance", "/metadata/instance/compute", "/metadata/scheduledevents"):
            return 405, {"error": f"method {method} is not allowed on {path}"}
        return 404, {"error": f"no metadata at {path}"}

    def instance_document(self, inst: InstanceRow) -> dict[str, Any]:
        row = self.store.scale_set(inst.scale_set)
        name = inst.vm_name or f"{inst.scale_set}_{inst.instance_id}"
        return {
            "compute": {
                "name": name,
                "osProfile": {"computerName": computer_name(row.spec, inst)},
                "vmScaleSetName": inst.scale_set,
                "instanceId": str(inst.instance_id),
                "resourceId": f"/scaleSets/{inst.scale_set}/virtualMachines/{inst.instance_id}",
                "modelVersion": str(inst.model_version),
                "latestModelVersion": str(row.model_version),
                "zone": inst.zone or "",
                "platformFaultDomain": str(inst.fault_domain),
                "platformUpdateDomain": str(inst.update_domain),
                "vmSize": row.spec.vm_size,
                "location": "local",
                "host": inst.host,
            }
        }

    def events_document(self, inst: InstanceRow) -> dict[str, Any]:
        events = self.store.scheduled_events(inst.scale_set, inst.instance_id)
        return events_document(events)

    def start_requests(self, inst: InstanceRow, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            data = json.loads(body or b"{}")
            ids = [str(r["EventId"]) for r in data["StartRequests"]]
        except (ValueError, KeyError, TypeError):
            return 400, {"error": 'the body must be {"StartRequests": [{"EventId": "..."}]}'}
        done = self.store.acknowledge_events(inst.scale_set, inst.instance_id, ids, self.clock())
        if done:
            log.info("instance %s acknowledged scheduled events %s", inst.domain_name, done)
            self.wake()
        return 200, {"acknowledged": done}


def events_document(events: list[ScheduledEventRow]) -> dict[str, Any]:
    """Azure's Scheduled Events document. DocumentIncarnation changes whenever an event is added
    or acknowledged (1 per event, 1 more once acknowledged), and 0 means no events."""
    return {
        "DocumentIncarnation": sum(1 + (e.acknowledged_at is not None) for e in events),
        "Events": [
            {
                "EventId": e.event_id,
                "EventStatus": "Started" if e.acknowledged_at is not None else "Scheduled",
                "EventType": e.event_type,
                "ResourceType": "VirtualMachine",
                "Resources": [e.resource],
                "NotBefore": terminate.rfc1123(e.not_before),
                "Description": "The virtual machine is being deleted.",
                "EventSource": "Platform",
                "DurationInSeconds": -1,
            }
            for e in events
        ],
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._answer(413, {"error": "request body too large"})
            return
        body = self.rfile.read(length) if length else b""
        try:
            status, doc = self.server.service.handle(self.command, self.path, dict(self.headers.items()), body)
        except LocalVMSSError as exc:
            status, doc = 503, {"error": exc.message}
        except Exception:  # one bad request must not stop the service
            log.exception("metadata request %s %s failed", self.command, self.path)
            status, doc = 500, {"error": "internal error"}
        self._answer(status, doc)

    do_GET = _serve
    do_POST = _serve

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(405, {"error": "method not allowed"})

    do_DELETE = do_PUT

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("metadata: " + format, *args)

    def address_string(self) -> str:
        return "metadata-proxy"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, service: MetadataService) -> None:
        self.service = service
        super().__init__(path, _Handler)


class MetadataServer:
    """The unix-socket HTTP server the proxies forward to (mode 0600: root's proxies only)."""

    def __init__(self, path: Path, service: MetadataService) -> None:
        self.path = path
        self.service = service
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self._server = _Server(str(self.path), self.service)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metadata", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.path.unlink(missing_ok=True)
