"""Delivering autoscale webhooks: POSTs on a thread of their own, with retries and backoff.

Kept out of the pure ``autoscale/`` package because it does I/O. The autoscaler hands each capacity change's
payloads to ``WebhookSender.submit`` and goes on at once, so a slow or dead receiver never stalls
autoscaling. Every delivery ends in exactly one counted result, and the ones that fail are
logged at WARNING with the receiver's answer:

* ``success``: the receiver answered 2xx;
* ``failure``: every attempt failed (connection refused, timeout, non-2xx);
* ``dropped``: the queue was full (a receiver so slow that ``MAX_PENDING`` deliveries piled up).

URLs are logged without their query string: Azure's webhook authentication puts a token there.

httpx (and the trust store's TLS context) is imported when the first delivery is made, not with
this module: most daemons never send a webhook, and it would stay resident (about 3 MiB) for none.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from localvmss import __version__

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

RESULTS = ("success", "failure", "dropped")
MAX_PENDING = 1000
ResultHook = Callable[[str], None]


def redacted(url: str) -> str:
    """``url`` without user info, query or fragment (where webhook secrets live)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Delivery:
    url: str
    payload: dict[str, Any]
    what: str  # for logs: "scale set web: Scale Out 1->2"


class WebhookSender:
    """A queue of deliveries and one worker thread that POSTs them as JSON.

    ``attempts`` tries per delivery, waiting ``backoff_s * 2**n`` between them (capped at
    ``max_backoff_s``); each try waits at most ``timeout_s``. ``transport`` lets tests route
    requests without a network; ``on_result`` counts results (the daemon's metric).
    """

    def __init__(
        self,
        *,
        timeout_s: float = 5.0,
        attempts: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        on_result: ResultHook | None = None,
        transport: httpx.BaseTransport | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_result = on_result
        self._queue: queue.Queue[Delivery | None] = queue.Queue(max_pending)
        self._transport = transport
        self._client: httpx.Client | None = None  # made by the worker for its first delivery
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="autoscale-webhooks", daemon=True)
        self._thread.start()

    # -- producer side ---------------------------------------------------------------------------
    def submit(self, url: str, payload: dict[str, Any], what: str) -> None:
        """Queue one delivery; never blocks (a full queue counts and logs a ``dropped``)."""
        with self._idle:
            self._busy += 1
        try:
            self._queue.put_nowait(Delivery(url, payload, what))
        except queue.Full:
            log.warning(
                "autoscale webhook to %s for %s dropped: %d deliveries pending",
                redacted(url),
                what,
                self._queue.qsize(),
            )
            self._finish("dropped")

    def wait_idle(self, timeout: float) -> bool:
        """True once every submitted delivery has a result (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the deliveries in hand (bounded by ``timeout``); later ones are not sent."""
        self._stop.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
        if self._client is not None and not self._thread.is_alive():
            self._client.close()

    # -- worker side -----------------------------------------------------------------------------
    def _finish(self, result: str) -> None:
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                log.exception("counting a webhook result failed")
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._stop.is_set():
                log.warning(
                    "autoscale webhook to %s for %s not sent: the daemon is stopping", redacted(item.url), item.what
                )
                self._finish("failure")
                continue
            try:
                self._finish(self._deliver(item))
            except Exception:  # a bug here must not kill the thread and strand the queue
                log.exception("autoscale webhook to %s failed", redacted(item.url))
                self._finish("failure")

    def _http(self) -> httpx.Client:
        """The worker's client, made on first use (only the worker thread calls this)."""
        if self._client is None:
            import httpx

            from localvmss.trust import client_tls_context

            self._client = httpx.Client(
                timeout=self.timeout_s,
                transport=self._transport,
                verify=client_tls_context(),
                headers={"User-Agent": f"localvmss/{__version__} autoscale-webhook"},
                follow_redirects=False,
            )
        return self._client

    def _attempt(self, item: Delivery) -> str | None:
        """None on success, else what went wrong."""
        import httpx  # already loaded by _http's first call: a dictionary look-up

        try:
            response = self._http().post(item.url, json=item.payload)
        except httpx.TimeoutException:
            return f"no answer within {self.timeout_s:g}s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code} {response.text[:200]!r}"

    def _deliver(self, item: Delivery) -> str:
        problem = ""
        for attempt in range(self.attempts):
            failed = self._attempt(item)
            if failed is None:
                log.info("autoscale webhook to %s for %s delivered", redacted(item.url), item.what)
                return "success"
            problem = failed
            if attempt + 1 < self.attempts:
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                log.debug("autoscale webhook to %s: %s; retrying in %gs", redacted(item.url), failed, delay)
                if self._stop.wait(delay):
                    break
        log.warning(
            "autoscale webhook to %s for %s failed after %d attempt(s): %s",
            redacted(item.url),
            item.what,
            self.attempts,
            problem,
        )
        return "failure"
