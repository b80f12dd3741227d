"""A bounded load generator on loopback: one new TCP connection per request, a few threads,
stops by itself after ``max_seconds`` or when told. Counts what it sent and what failed."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (unix time, what)


class Load:
    def __init__(self, port: int, threads: int = 3, max_seconds: float = 600.0, address: str = "127.0.0.1") -> None:
        self.port = port
        self.address = address
        self.threads = threads
        self.max_seconds = max_seconds
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _one(self) -> None:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=10)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read().decode().strip()
            ok, what = resp.status == 200, body if resp.status == 200 else f"HTTP {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            ok, what = False, type(exc).__name__
        finally:
            conn.close()
        with self._lock:
            self.result.sent += 1
            if ok:
                self.result.answers[what] += 1
            else:
                self.result.failed += 1
                self.result.errors[what] += 1
                self.result.failures.append((time.time(), what))

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self._one()
            time.sleep(0.02)

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(15)
