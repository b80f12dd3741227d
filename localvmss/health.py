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

import errno
import json
import os
import re
import selectors
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from localvmss.spec import HealthProbeModel

ProbeState = Literal["healthy", "unhealthy", "unknown"]
MAX_BODY_BYTES = 4096  # a health answer is small; a larger body is read no further
MAX_HEAD_BYTES = 16 * 1024
MAX_OPEN_PROBES = 64  # sockets open at once in one probe_many (the pool it replaced had 8 threads)


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
    return probe_many([(ip, probe)], timeout_s)[0]


def probe_many(
    targets: Sequence[tuple[str, HealthProbeModel]],
    timeout_s: float = 2.0,
    max_open: int = MAX_OPEN_PROBES,
    on_result: Callable[[int, ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Probe every ``(ip, probe)`` at once from the calling thread (non-blocking sockets, one
    selector, at most ``max_open`` at a time); the results in the order asked. Each step
    (connect, send, every read) has ``timeout_s``, as a blocking socket's timeout would. Never
    raises: a probe that cannot even be made is ``unknown`` and says why. ``on_result(index,
    result)`` is told each result as soon as it is known, so a caller can act on a guest that
    answered without waiting for the probe of one still booting to time out. (The health
    monitor used to probe through a pool of 8 threads with http.client: 0.6-1 ms of daemon CPU
    per probe, and 8 threads; issue 16.)"""
    probes = [_Probe(ip, model, timeout_s) for ip, model in targets]
    index = {id(probe): i for i, probe in enumerate(probes)}

    def known(probe: _Probe) -> None:
        if on_result is not None and probe.result is not None:
            on_result(index[id(probe)], probe.result)

    pending = iter(probes)
    with selectors.DefaultSelector() as selector:
        while True:
            # At most max_open sockets at once (file descriptors are finite; a large set's
            # probes go through a window), each timed from its own start.
            while len(selector.get_map()) < max_open:
                probe = next(pending, None)
                if probe is None:
                    break
                if probe.start():
                    selector.register(probe.sock, selectors.EVENT_WRITE, probe)  # type: ignore[arg-type]
                else:
                    known(probe)
            if not selector.get_map():
                break
            waiting: list[_Probe] = [key.data for key in selector.get_map().values()]
            timeout = max(0.0, min(p.deadline for p in waiting) - time.monotonic())
            for key, _events in selector.select(timeout):
                probe = key.data
                wants = probe.ready()
                if wants == 0:
                    selector.unregister(key.fileobj)
                    probe.close()
                    known(probe)
                elif wants != key.events:
                    selector.modify(key.fileobj, wants, probe)
            now = time.monotonic()
            for probe in waiting:
                if probe.result is None and probe.deadline <= now:
                    selector.unregister(probe.sock)  # type: ignore[arg-type]
                    probe.close(ProbeResult("unknown", f"{probe.model.protocol} {probe.model.port}: timed out"))
                    known(probe)
    return [p.result or ProbeResult("unknown", "probe could not be made") for p in probes]


class _Probe:
    """One probe's non-blocking exchange: connect, then for http send the request and read the
    answer. ``ready`` is called when the socket is ready and says what to wait for next."""

    def __init__(self, ip: str, model: HealthProbeModel, timeout_s: float) -> None:
        self.ip = ip
        self.model = model
        self.timeout_s = timeout_s
        self.deadline = 0.0  # start() sets it
        self.sock: socket.socket | None = None
        self.connected = False
        self.request = b""  # what is still to send
        self.data = b""  # the answer so far
        self.result: ProbeResult | None = None

    def start(self) -> bool:
        """Begin connecting; False when the result is known already (it could not start)."""
        model = self.model
        self.deadline = time.monotonic() + self.timeout_s
        try:
            if model.protocol == "http":
                self.request = http_request(self.ip, model.port, model.path)
            self.sock = socket.socket(socket.AF_INET6 if ":" in self.ip else socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setblocking(False)
            err = self.sock.connect_ex((self.ip, model.port))
        except (OSError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            self.result = ProbeResult("unknown", f"probe could not be made: {type(exc).__name__}: {exc}")
        else:
            if err in (0, errno.EINPROGRESS):
                return True
            self._failed(err)
        self.close()
        return False

    def ready(self) -> int:
        """One step; the selector events to wait for next, 0 once the result is known."""
        assert self.sock is not None
        try:
            if not self.connected:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    return self._failed(err)
                self.connected = True
                self.deadline = time.monotonic() + self.timeout_s
                if self.model.protocol == "tcp":
                    self.result = ProbeResult("healthy", f"tcp {self.model.port} open")
                    return 0
            if self.request:
                self.request = self.request[self.sock.send(self.request) :]
                self.deadline = time.monotonic() + self.timeout_s
                return selectors.EVENT_WRITE if self.request else selectors.EVENT_READ
            chunk = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return selectors.EVENT_WRITE if not self.connected or self.request else selectors.EVENT_READ
        except OSError as exc:
            return self._failed(exc.errno or 0, str(exc))
        self.data += chunk
        self.deadline = time.monotonic() + self.timeout_s
        answer = read_answer(self.data, closed=not chunk)
        if answer is None:
            return selectors.EVENT_READ
        path = self.model.path
        if isinstance(answer, str):
            self.result = ProbeResult("unknown", f"http {path}: {answer}")
            return 0
        status, body = answer
        state = state_of_http(status, body)
        said = " (the body says Unhealthy)" if state == "unhealthy" and 200 <= status < 300 else ""
        self.result = ProbeResult(state, f"http {path} -> {status}{said}")
        return 0

    def _failed(self, err: int, text: str = "") -> int:
        why = os.strerror(err) if err else text
        self.result = ProbeResult("unknown", f"{self.model.protocol} {self.model.port}: {why}")
        return 0

    def close(self, result: ProbeResult | None = None) -> None:
        """Close the socket (unregistered from the selector first), with ``result`` unless one
        is known already."""
        if self.result is None and result is not None:
            self.result = result
        if self.sock is not None:
            self.sock.close()


def http_request(ip: str, port: int, path: str) -> bytes:
    """The probe's request: HTTP/1.1 as http.client sent it, with ``Connection: close`` so the
    answer ends with the connection. UnicodeEncodeError for a path that is not ASCII."""
    host = f"[{ip}]" if ":" in ip else ip
    if any(c in path for c in " \r\n"):
        raise ValueError(f"the probe path {path[:60]!r} holds a space or line break")
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: localvmss-health\r\n"
        "Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


_STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3})(?: [^\r\n]*)?")


def read_answer(data: bytes, closed: bool) -> tuple[int, bytes] | str | None:
    """An HTTP answer read so far: (status, up to MAX_BODY_BYTES of its body) once decided,
    None while more is needed, or what is wrong with it (the name http.client gave it). The body
    ends at its Content-Length, at the end of a chunked body, at ``MAX_BODY_BYTES`` or when the
    server closes (``closed``)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if not closed and len(data) <= MAX_HEAD_BYTES:
            return None
        if not data:
            return "RemoteDisconnected"
        first = data.split(b"\r\n", 1)[0]
        if len(data) > MAX_HEAD_BYTES:
            return "LineTooLong" if b"\r\n" not in data else "HTTPException"
        return "BadStatusLine" if not _STATUS_LINE.fullmatch(first) else "IncompleteRead"
    lines = data[:end].split(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        return "BadStatusLine"
    status = int(status_line.group(1))
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = data[end + 4 :]
    if not 200 <= status < 300:
        return status, b""  # the body does not decide
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        decoded, done = _dechunk(body)
        if done or closed or len(decoded) >= MAX_BODY_BYTES:
            return status, decoded[:MAX_BODY_BYTES]
        return None
    length = headers.get(b"content-length")
    if length is not None and length.isdigit() and len(body) >= int(length):
        return status, body[: min(int(length), MAX_BODY_BYTES)]
    if closed or len(body) >= MAX_BODY_BYTES:
        return status, body[:MAX_BODY_BYTES]
    return None


def _dechunk(body: bytes) -> tuple[bytes, bool]:
    """A chunked body decoded as far as it has come, and whether its last chunk was read."""
    out = b""
    at = 0
    while True:
        eol = body.find(b"\r\n", at)
        if eol < 0:
            return out, False
        try:
            size = int(body[at:eol].split(b";")[0].strip() or b"x", 16)
        except ValueError:
            return out, True  # malformed: what came so far decides
        if size == 0:
            return out, True
        out += body[eol + 2 : eol + 2 + size]
        if len(body) < eol + 2 + size + 2:
            return out, False
        at = eol + 2 + size + 2
