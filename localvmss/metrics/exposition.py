"""The exporter's /metrics page: prometheus_client's exposition formats, with the per-instance
families written without prometheus_client's work per sample.

prometheus_client's encoders check and escape every label name and value of every sample and
build a ``Sample`` and a label dict for each (about 11 µs a sample; 12 series an instance made
a page of 2,000 instances take 270-470 ms). The exporter's per-instance families are
``SeriesFamily``: their names are checked once, when made (legacy Prometheus names, which every
escaping scheme but ``dots`` and ``values`` writes as they are); their samples are (label set,
value) pairs; and the text of a label set (``{fault_domain="0",host="h1",...}``) is a pure
function of its values, kept in a ``LabelSet`` (``SeriesFamily.label_set``, or the collector's
own per instance) so that an instance's labels are escaped once, not at every scrape.
Everything else (the daemon's own metrics, process_* and python_*) is written by
prometheus_client itself, in the registry's order; so is the whole page for a scraper that asks
for the ``dots`` or ``values`` escaping or for some names only (``name[]``). The page is byte for
byte what prometheus_client writes for the same families (tests/unit/test_exposition.py compares
them).

Values are formatted at every scrape from what the collectors read then; only label text is
kept between scrapes. Called by ``exporter.start_exporter``'s HTTP server and by bench/control_plane.py.
"""

from __future__ import annotations

import functools
import gzip
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.exposition import ThreadingWSGIServer, choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# Prometheus's legacy character sets: such names need no escaping or quoting.
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Escaping schemes (Prometheus's content negotiation) that write legacy names as they are;
# ``dots`` and ``values`` rewrite every name.
UNDERSCORES = "underscores"
_VERBATIM = (UNDERSCORES, "allow-utf-8")
_OPENMETRICS = "application/openmetrics-text"
_EOF = b"# EOF\n"
# Label names of every SeriesFamily made, one tuple each (few: one per kind of family).
_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
# Label sets kept by ``SeriesFamily.label_set`` (about 5 an instance: its own and 4 of health):
# 10,000 instances fit; beyond, the least recently used are made again when needed.
LABEL_SETS = 1 << 16


class LabelSet:
    """One series' label values and their text as every exposition format writes it
    (``{name="value",...}`` sorted by name), escaped once: made by ``SeriesFamily.label_set``
    (kept between scrapes), or by a collector that keeps its own per instance."""

    __slots__ = ("names", "values", "text")

    def __init__(self, names: tuple[str, ...], values: tuple[str, ...]) -> None:
        if len(names) != len(values):
            raise ValueError(f"{len(values)} label values for the {len(names)} labels {names}")
        self.names = names
        self.values = values
        pairs = ",".join(f'{name}="{_escape_value(value)}"' for name, value in sorted(zip(names, values, strict=True)))
        self.text = f"{{{pairs}}}" if pairs else ""


class SeriesFamily(Metric):
    """A counter or gauge family with labels: what prometheus_client's ``CounterMetricFamily``
    and ``GaugeMetricFamily`` make (same names, same samples), holding a LabelSet and a value
    a sample instead of a ``Sample`` and a dict each. ``samples`` builds prometheus_client's samples
    when something other than ``render`` reads them (its own encoders, its parser's tests).

    Raises ValueError for a name or label name outside Prometheus's legacy character set.
    """

    def __init__(self, name: str, documentation: str, kind: Literal["counter", "gauge"], labels: Sequence[str]) -> None:
        if kind == "counter" and name.endswith("_total"):
            name = name[: -len("_total")]  # as CounterMetricFamily: the family is named without it
        super().__init__(name, documentation, kind)
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} needs escaping; a SeriesFamily takes legacy names only")
        for label in labels:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"label name {label!r} of {name} needs escaping or is reserved")
        self.label_names = _NAMES.setdefault(tuple(labels), tuple(labels))  # one tuple: label sets compare by identity
        self.sample_name = f"{name}_total" if kind == "counter" else name
        # The samples as two lists of the same length (no tuple a sample: what a scrape
        # allocates is what the garbage collector walks). Families of the same label names may
        # share one ``label_sets`` list (``share_label_sets``).
        self.label_sets: list[LabelSet] = []
        self.values: list[float] = []

    def label_set(self, values: tuple[str, ...]) -> LabelSet:
        """The LabelSet of ``values`` (in the order of the family's label names); the same
        object for the same labels while it is among the LABEL_SETS last used."""
        return _label_set(self.label_names, values)

    def add(self, values: tuple[str, ...], value: float) -> None:
        """One sample: ``values`` in the order of the family's label names."""
        self.label_sets.append(self.label_set(values))
        self.values.append(value)

    def extend(self, label_sets: Sequence[LabelSet], values: Sequence[float]) -> None:
        """Many samples at once, each a LabelSet of this family's label names and its value
        (raises ValueError for one made for other names, or lengths that differ)."""
        names = self.label_names
        if len(label_sets) != len(values):
            raise ValueError(f"{len(label_sets)} label sets for {len(values)} values added to {self.name}")
        for labels in label_sets:
            if labels.names is not names and labels.names != names:
                raise ValueError(f"a label set of {labels.names} added to {self.name} (labels {names})")
        self.label_sets.extend(label_sets)
        self.values.extend(values)

    def share_label_sets(self, other: SeriesFamily) -> None:
        """Take ``other``'s label-set list as this family's own (the same series, other values):
        a sample then costs one list append per family, not two."""
        if other.label_names is not self.label_names or self.label_sets:
            raise ValueError(f"{self.name} cannot share the label sets of {other.name}")
        self.label_sets = other.label_sets

    @property
    def series(self) -> list[tuple[LabelSet, float]]:
        """(label set, value) of every sample."""
        return list(zip(self.label_sets, self.values, strict=True))

    @property  # type: ignore[override]  # Metric's is a plain list attribute
    def samples(self) -> list[Sample]:
        names = self.label_names
        return [
            Sample(self.sample_name, dict(zip(names, labels.values, strict=True)), value)
            for labels, value in zip(self.label_sets, self.values, strict=True)
        ]

    @samples.setter
    def samples(self, samples: list[Sample]) -> None:
        # Metric.__init__ sets an empty list; samples come through add().
        if samples:
            raise TypeError("a SeriesFamily takes its samples through add()")


def _escape_value(value: str) -> str:
    """A label value as every exposition format writes it (backslash, newline, double quote)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Families(Collector):
    """Some already collected families, for one call of a prometheus_client encoder."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def _escaping(content_type: str) -> str:
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "escaping":
            return value
    return UNDERSCORES


def render(registry: Collector, accept: str | None = None) -> tuple[bytes, str]:
    """(page, content type) for a scraper's ``Accept`` header, negotiated by prometheus_client's
    own ``choose_encoder`` (text 0.0.4 without one; OpenMetrics when asked, as Prometheus does)."""
    encoder, content_type = choose_encoder(accept or "")
    if _escaping(content_type) not in _VERBATIM:
        return encoder(registry), content_type
    openmetrics = content_type.startswith(_OPENMETRICS)

    def library(families: list[Metric]) -> bytes:
        text: bytes = encoder(_Families(families))
        return text[: -len(_EOF)] if openmetrics else text

    parts: list[bytes] = []
    others: list[Metric] = []
    for family in registry.collect():
        if not isinstance(family, SeriesFamily):
            others.append(family)
            continue
        if others:
            parts.append(library(others))
            others = []
        parts.append(library([Metric(family.name, family.documentation, family.type)]))  # HELP and TYPE
        parts.append(_sample_lines(family).encode())
    if others:
        parts.append(library(others))
    if openmetrics:
        parts.append(_EOF)
    return b"".join(parts), content_type


def _sample_lines(family: SeriesFamily) -> str:
    """The family's sample lines, as both formats write a sample without timestamp or exemplar:
    ``name{labels sorted by name} value``."""
    prefix = family.sample_name
    return "".join(
        [
            f"{prefix}{labels.text} {_int_text(value) if type(value) is int else floatToGoString(value)}\n"
            for labels, value in zip(family.label_sets, family.values, strict=True)
        ]
    )


# An int's text, kept: many repeat on every scrape (0 and 1 of the one-hot health, vCPUs,
# memory sizes). Only ints: 0.0 and -0.0 are equal keys but are written differently.
_int_text = functools.lru_cache(maxsize=1 << 12)(floatToGoString)


@functools.lru_cache(maxsize=LABEL_SETS)
def _label_set(names: tuple[str, ...], values: tuple[str, ...]) -> LabelSet:
    """A pure function of the labels, so an instance's are escaped once while it lives, not at
    every scrape (values are formatted every time)."""
    return LabelSet(names, values)


def wsgi_app(registry: Collector) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """prometheus_client's ``make_wsgi_app`` (any path; OPTIONS, favicon, ``name[]``, gzip),
    with ``render`` writing the page."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        headers: list[tuple[str, str]] = [("Allow", "OPTIONS,GET")]
        status, output = "200 OK", b""
        if method == "GET" and environ.get("PATH_INFO") != "/favicon.ico":
            params = parse_qs(environ.get("QUERY_STRING", ""))
            if "name[]" in params:
                encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT") or "")
                output = encoder(registry.restricted_registry(params["name[]"]))  # type: ignore[attr-defined]
            else:
                output, content_type = render(registry, environ.get("HTTP_ACCEPT"))
            headers = [("Content-Type", content_type)]
            if gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING") or ""):
                output = gzip.compress(output)
                headers.append(("Content-Encoding", "gzip"))
        elif method == "GET":
            headers = []
        elif method != "OPTIONS":
            status = "405 Method Not Allowed"
            output = f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()
        start_response(status, headers)
        return [output]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not logged."""


def serve(registry: Collector, address: str, port: int) -> tuple[Any, threading.Thread]:
    """``wsgi_app`` on a thread-per-request server on its own daemon thread; (server, thread)."""
    # IPv4 or IPv6, whichever the address is (as prometheus_client's start_http_server does).
    family, _type, _proto, _name, sockaddr = socket.getaddrinfo(
        address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    server = make_server(str(sockaddr[0]), port, wsgi_app(registry), Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="exporter", daemon=True)
    thread.start()
    return server, thread
