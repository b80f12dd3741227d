"""The trust store the daemon's outgoing HTTPS clients use (autoscale webhooks, Prometheus).

httpx loads the CA bundle afresh for every client it makes (26 ms each, most of the cost of
making an Autoscaler); the bundle is the same for all of them, so it is loaded once per process.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_tls_context() -> ssl.SSLContext:
    """httpx's default verification context (certifi's roots, SSL_CERT_FILE/SSL_CERT_DIR when
    set), made once; an SSLContext may be shared by clients and threads."""
    return httpx.create_ssl_context()
