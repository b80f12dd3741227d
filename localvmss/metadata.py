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

A scheduled-events answer also says how soon to ask again (``X-Localvmss-Poll-After``, whole
seconds; not Azure's, other clients ignore it): ``POLL_FAST_S`` while the instance's set sends
terminate notices or the instance has an event, else ``POLL_IDLE_S``, since nothing can be
scheduled for it. Ten guests polling every second were most of an idle daemon's CPU (issue 16);
the guest agent (images/guest) sleeps what it is told.

A scheduled-events GET may also wait for a change (``X-Localvmss-Wait-Incarnation: N``, the
DocumentIncarnation the guest saw last; not Azure's either): while the document's incarnation is
still N the answer is held up to ``MAX_WAIT_S``, and given as soon as a reconcile pass or an
acknowledgement changed it (``MetadataServer.recheck``). A guest so learns of a terminate notice
at once while asking every ~10 s instead of every second.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
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
POLL_HEADER = "X-Localvmss-Poll-After"
POLL_FAST_S = 1  # notices are sent for the set, or one is pending: it is acknowledged within ~1 s
POLL_IDLE_S = 10  # nothing can be scheduled for the instance (a profile enabled later: <= 10 s)
WAIT_HEADER = "X-Localvmss-Wait-Incarnation"
# Under the metadata proxy's 10 s for an answer (UPSTREAM_TIMEOUT_S): a proxy started by an older
# daemon keeps running after an upgrade, and is adopted.
MAX_WAIT_S = 8.0
MAX_HEAD = 16 * 1024  # as the proxy accepts from a guest
MAX_BODY = 64 * 1024
READ_TIMEOUT_S = 10.0  # for a whole request on one connection
WRITE_TIMEOUT_S = 2.0


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


class MetadataService:
    """Answers one request: (status, JSON body). Tests call ``handle`` directly or over the socket."""

    def __init__(self, store: Store, wake: Callable[[], None], clock: Callable[[], float]) -> None:
        self.store = store
        self.wake = wake
        self.clock = clock

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        status, doc, _extra = self.handle_with_headers(method, target, headers, body)
        return status, doc

    def handle_with_headers(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """``handle``, plus the headers the answer carries beyond the usual (``POLL_HEADER``)."""
        lower = {k.lower(): v for k, v in headers.items()}
        if lower.get("metadata", "").strip().lower() != "true":
            return 400, {"error": "Bad request. Required metadata header not specified"}, {}
        ip = lower.get("x-forwarded-for", "").split(",")[0].strip()
        host = lower.get(HOST_HEADER.lower(), "").strip()
        try:
            inst = self.store.instance_by_address(host, ip)
        except NotFound:
            error = f"no instance of localvmss has address {ip or '(none)'} on host {host or '(none)'}"
            return 404, {"error": error}, {}
        path = urlsplit(target).path.rstrip("/")
        if path == "/metadata/instance" and method == "GET":
            return 200, self.instance_document(inst), {}
        if path == "/metadata/instance/compute" and method == "GET":
            return 200, self.instance_document(inst)["compute"], {}
        if path == "/metadata/scheduledevents" and method == "GET":
            events = self.store.scheduled_events(inst.scale_set, inst.instance_id)
            return 200, events_document(events), {POLL_HEADER: str(self.poll_after(inst, events))}
        if path == "/metadata/scheduledevents" and method == "POST":
            status, doc = self.start_requests(inst, body)
            return status, doc, {}
        if path in ("/metadata/instance", "/metadata/instance/compute", "/metadata/scheduledevents"):
            return 405, {"error": f"method {method} is not allowed on {path}"}, {}
        return 404, {"error": f"no metadata at {path}"}, {}

    def unchanged(self, method: str, target: str, headers: dict[str, str]) -> bool:
        """True if this is a scheduled-events GET that asks to wait (``WAIT_HEADER``) and its
        document's incarnation is still the one named: the answer may be held. Anything else
        (another request, a malformed or missing header, an unknown guest) is answered now."""
        if method != "GET" or urlsplit(target).path.rstrip("/") != "/metadata/scheduledevents":
            return False
        lower = {k.lower(): v for k, v in headers.items()}
        seen = lower.get(WAIT_HEADER.lower(), "").strip()
        if not seen.isdigit() or len(seen) > 9 or lower.get("metadata", "").strip().lower() != "true":
            return False
        ip = lower.get("x-forwarded-for", "").split(",")[0].strip()
        try:
            inst = self.store.instance_by_address(lower.get(HOST_HEADER.lower(), "").strip(), ip)
        except NotFound:
            return False
        events = self.store.scheduled_events(inst.scale_set, inst.instance_id)
        return bool(events_document(events)["DocumentIncarnation"] == int(seen))

    def poll_after(self, inst: InstanceRow, events: list[ScheduledEventRow]) -> int:
        """Seconds until the guest should ask for its scheduled events again."""
        if events:
            return POLL_FAST_S
        try:
            spec = self.store.scale_set(inst.scale_set).spec
        except NotFound:  # its set is being deleted: nothing more will be scheduled
            return POLL_IDLE_S
        return POLL_FAST_S if spec.terminate_notification.enable else POLL_IDLE_S

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


@dataclass(frozen=True)
class Request:
    """One HTTP request as the proxy sends it: method, target, headers, body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class BadRequest(ValueError):
    """A request that is answered with ``status`` and closed (malformed, too large)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def read_request(data: bytes) -> Request | None:
    """The request at the start of ``data``, or None while it is incomplete (more to read);
    BadRequest for one that cannot be served. The proxy sends a whole HTTP/1.0 request with a
    Content-Length when it has a body, and one request per connection."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_HEAD:
            raise BadRequest(431, "request head too large")
        return None
    if end > MAX_HEAD:
        raise BadRequest(431, "request head too large")
    lines = data[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[0] or not parts[1]:
        raise BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise BadRequest(400, "malformed header")
        headers[name.strip()] = value.strip()
    lower = {k.lower(): v for k, v in headers.items()}
    if "transfer-encoding" in lower:
        raise BadRequest(400, "chunked bodies are not supported")
    try:
        length = int(lower.get("content-length") or 0)
    except ValueError:
        raise BadRequest(400, "malformed Content-Length") from None
    if length < 0:
        raise BadRequest(400, "malformed Content-Length")
    if length > MAX_BODY:
        raise BadRequest(413, "request body too large")
    body = data[end + 4 : end + 4 + length]
    if len(body) < length:
        return None
    return Request(parts[0], parts[1], headers, body)


def http_answer(status: int, doc: dict[str, Any], extra: dict[str, str] | None = None) -> bytes:
    """The whole HTTP/1.0 answer: JSON, its length, ``extra`` headers, and the connection closes
    after it."""
    data = json.dumps(doc, separators=(",", ":")).encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    more = "".join(f"{name}: {value}\r\n" for name, value in (extra or {}).items())
    head = (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(data)}\r\n{more}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + data


def answer(service: MetadataService, request: Request) -> tuple[int, dict[str, Any], dict[str, str]]:
    """What the service answers to one request (status, document, extra headers); any failure
    is an answer, never an exception."""
    if request.method not in ("GET", "POST"):
        if request.method in ("PUT", "DELETE"):
            return 405, {"error": "method not allowed"}, {}
        return 501, {"error": f"unsupported method {request.method[:20]!r}"}, {}
    try:
        return service.handle_with_headers(request.method, request.target, request.headers, request.body)
    except LocalVMSSError as exc:
        return 503, {"error": exc.message}, {}
    except Exception:  # one bad request must not stop the service
        log.exception("metadata request %s %s failed", request.method, request.target[:200])
        return 500, {"error": "internal error"}, {}


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float  # for the whole request, or for its answer while it is held
    data: bytes = b""
    held: Request | None = None  # a whole request whose answer waits for a change


class MetadataServer:
    """The unix-socket HTTP server the proxies forward to (mode 0600: root's proxies only).

    One thread and a selector: a guest's request is small and its answer a few SQLite reads,
    so every connection is read as it comes and answered in that thread, with no thread per
    request (issue 16: a socketserver thread per request and http.server's parsing were three
    quarters of each request's cost, with 10 guests polling about once a second). A connection
    that sends no whole request within ``READ_TIMEOUT_S`` is closed."""

    def __init__(self, path: Path, service: MetadataService) -> None:
        self.path = path
        self.service = service
        self._listener: socket.socket | None = None
        self._waker: tuple[socket.socket, socket.socket] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._waker = socket.socketpair()
        self._thread = threading.Thread(
            target=self._serve, args=(listener, self._waker[0]), name="metadata", daemon=True
        )
        self._thread.start()

    def recheck(self) -> None:
        """Held requests are looked at again (from any thread; a reconcile pass has ended and
        may have scheduled an event)."""
        waker = self._waker
        if waker is not None:
            try:
                waker[1].send(b"r")
            except OSError:  # stopped meanwhile, or a wake-up is pending already (buffer full)
                pass

    def stop(self) -> None:
        if self._thread is not None and self._waker is not None:
            self._waker[1].send(b"x")
            self._thread.join(10)
            for end in self._waker:
                end.close()
        if self._listener is not None:
            self._listener.close()
        self._listener = self._waker = self._thread = None
        self.path.unlink(missing_ok=True)

    def _serve(self, listener: socket.socket, waker: socket.socket) -> None:
        conns: dict[int, _Connection] = {}
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            selector.register(waker, selectors.EVENT_READ)
            while True:
                timeout = max(0.0, min(c.deadline for c in conns.values()) - time.monotonic()) if conns else None
                recheck = False
                for key, _events in selector.select(timeout):
                    if key.fileobj is waker:
                        if b"x" in waker.recv(4096):
                            for conn in conns.values():
                                conn.sock.close()
                            return
                        recheck = True
                    elif key.fileobj is listener:
                        self._accept(listener, selector, conns)
                    elif key.fd in conns:  # not closed by an earlier event of this round
                        recheck |= self._read(conns[key.fd], selector, conns)
                now = time.monotonic()
                for conn in list(conns.values()):
                    if conn.held is not None and (conn.deadline <= now or recheck):
                        self._answer_held(conn, selector, conns)
                    elif conn.deadline <= now:
                        self._close(conn, selector, conns)

    def _accept(self, listener: socket.socket, selector: selectors.BaseSelector, conns: dict[int, _Connection]) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: the proxy's request waits or gets its 503
                log.warning("metadata: cannot accept a connection: %s", exc.strerror or exc)
                return
            sock.setblocking(False)
            conn = _Connection(sock, time.monotonic() + READ_TIMEOUT_S)
            conns[sock.fileno()] = conn
            selector.register(sock, selectors.EVENT_READ)

    def _read(self, conn: _Connection, selector: selectors.BaseSelector, conns: dict[int, _Connection]) -> bool:
        """Read what came; answer a whole request now or hold it. True after a POST was
        answered (an acknowledgement changes documents: held requests are looked at again)."""
        try:
            chunk = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            chunk = b""
        if not chunk:  # the proxy went away (before a whole request, or while its answer is held)
            self._close(conn, selector, conns)
            return False
        if conn.held is not None:
            return False  # one request per connection: anything after it is not read
        conn.data += chunk
        try:
            request = read_request(conn.data)
        except BadRequest as exc:
            self._finish(conn, http_answer(exc.status, {"error": exc.message}), selector, conns)
            return False
        if request is None:
            return False
        if self._unchanged(request):
            conn.held = request
            conn.deadline = time.monotonic() + MAX_WAIT_S
            return False
        self._respond(conn, request, selector, conns)
        return request.method == "POST"

    def _unchanged(self, request: Request) -> bool:
        try:
            return self.service.unchanged(request.method, request.target, request.headers)
        except Exception:  # noqa: BLE001 - then it is answered at once, as any other request
            log.exception("metadata: looking at a held request failed")
            return False

    def _answer_held(self, conn: _Connection, selector: selectors.BaseSelector, conns: dict[int, _Connection]) -> None:
        """A held request whose time is up or whose document may have changed: answered unless
        it is unchanged and has time left."""
        assert conn.held is not None
        if conn.deadline > time.monotonic() and self._unchanged(conn.held):
            return
        self._respond(conn, conn.held, selector, conns)

    def _respond(
        self, conn: _Connection, request: Request, selector: selectors.BaseSelector, conns: dict[int, _Connection]
    ) -> None:
        status, doc, extra = answer(self.service, request)
        log.debug("metadata: %s %s -> %d", request.method, request.target[:200], status)
        self._finish(conn, http_answer(status, doc, extra), selector, conns)

    def _finish(
        self, conn: _Connection, data: bytes, selector: selectors.BaseSelector, conns: dict[int, _Connection]
    ) -> None:
        """Send the answer (a few hundred bytes: the socket buffer takes it at once; a proxy that
        does not read gets ``WRITE_TIMEOUT_S``) and close."""
        try:
            conn.sock.settimeout(WRITE_TIMEOUT_S)
            conn.sock.sendall(data)
        except OSError:
            pass
        self._close(conn, selector, conns)

    @staticmethod
    def _close(conn: _Connection, selector: selectors.BaseSelector, conns: dict[int, _Connection]) -> None:
        conns.pop(conn.sock.fileno(), None)
        selector.unregister(conn.sock)
        conn.sock.close()
