"""Talking to Prometheus (HTTP API client) and running a private Prometheus (child process).

The autoscaler decides on real CPU/memory numbers, so every failure here is reported as one of
the project's error kinds with what we were doing: an unreachable Prometheus is a
``TemporaryError`` (the reconciler retries), a PromQL expression Prometheus refuses to parse is an
``InvalidSpec`` carrying Prometheus's own message (so a bad autoscale rule is refused up front).

The HTTP goes through the standard library (``urllib.request``), not httpx: the daemon's
Prometheus is its own child on loopback, spoken to in plain HTTP, and httpx with its TLS context
would stay resident in the daemon for that alone (about 3 MiB). An ``https://`` ``prometheus_url``
is verified with the same trust store as before (``localvmss.trust``, loaded only then).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import psutil

from localvmss import __version__
from localvmss.children import cmdline
from localvmss.errors import InvalidSpec, LocalVMSSError, TemporaryError
from localvmss.metrics.file_sd import write_file_sd

log = logging.getLogger(__name__)

Labels = dict[str, str]
InstantSample = tuple[Labels, float]
RangeSeries = tuple[Labels, list[tuple[float, float]]]

DAEMON_JOB = "localvmss"
GUEST_JOB = "localvmss-guest"
GUEST_METRICS_PATH = "/cgi-bin/metrics"
RULES_FILE = "localvmss-rules.yml"
# Where the recording and alerting rules are shipped: a checkout's prometheus/ folder, then the
# installed layouts' share/localvmss/prometheus/ (the first file found wins).
RULES_SEARCH_PATH = (
    Path(__file__).resolve().parents[2] / "prometheus",
    Path(sys.prefix) / "share" / "localvmss" / "prometheus",
    Path("/usr/local/share/localvmss/prometheus"),
    Path("/usr/share/localvmss/prometheus"),
)


def shipped_rules() -> list[Path]:
    """The shipped rule file (``prometheus/localvmss-rules.yml``), or none when it is missing."""
    for folder in RULES_SEARCH_PATH:
        candidate = folder / RULES_FILE
        if candidate.is_file():
            return [candidate]
    log.warning(
        "no %s found in %s: Prometheus runs without localvmss's rules",
        RULES_FILE,
        ", ".join(str(p) for p in RULES_SEARCH_PATH),
    )
    return []


class PrometheusEvaluationError(TemporaryError):
    """Prometheus parsed the expression but could not evaluate it now (422 execution error,
    timeout, overload); the expression itself is valid and a later try may work."""


def _timestamp(value: datetime) -> float:
    """Unix seconds; a naive datetime is taken as UTC (the daemon keeps time in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _number(text: Any) -> float:
    # Prometheus sends sample values as strings: "1.5", "NaN", "+Inf", "-Inf".
    return float(text)


USER_AGENT = f"localvmss/{__version__}"


def _opener(base_url: str) -> urllib.request.OpenerDirector:
    """An opener for ``base_url``: plain HTTP as is; HTTPS verified with the daemon's trust store
    (certifi's roots, as httpx verified them), imported only for an https URL."""
    if base_url.lower().startswith("https:"):
        from localvmss.trust import client_tls_context

        return urllib.request.build_opener(urllib.request.HTTPSHandler(context=client_tls_context()))
    return urllib.request.build_opener()


def _exchange(
    opener: urllib.request.OpenerDirector, request: urllib.request.Request, timeout: float
) -> tuple[int, bytes]:
    """(status, body) of one request. An HTTP error status is an answer here, not an exception
    (Prometheus explains a refused query in the JSON body of its 400/422/503); what cannot be
    answered raises ``OSError`` (``urllib.error.URLError``, ``TimeoutError``) or
    ``http.client.HTTPException``."""
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as answer:
        with answer:
            return answer.code, answer.read()


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, TimeoutError)
    )


def _why(exc: BaseException) -> str:
    """What went wrong, without urllib's ``<urlopen error ...>`` wrapping."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


# What a request that got no answer raises (URLError and TimeoutError are OSErrors).
_NO_ANSWER = (OSError, HTTPException)


class PrometheusClient:
    """A small, typed client for the Prometheus HTTP API (``/api/v1/query``, ``query_range``).

    ``opener`` is what sends the requests (a ``urllib.request.OpenerDirector``; by default one
    for ``base_url``'s scheme); tests may pass their own.
    """

    def __init__(
        self, base_url: str, timeout: float = 10.0, opener: urllib.request.OpenerDirector | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._opener = opener if opener is not None else _opener(self.base_url)

    def close(self) -> None:
        """Nothing is held between requests (each is its own connection); kept for ``with``."""

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------------

    def _request(self, path: str, form: Mapping[str, str] | None = None) -> urllib.request.Request:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if form is None:
            return urllib.request.Request(self.base_url + path, headers=headers, method="GET")
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return urllib.request.Request(
            self.base_url + path, data=urlencode(form).encode("ascii"), headers=headers, method="POST"
        )

    def _api(self, path: str, form: Mapping[str, str], doing: str) -> Any:
        """POST a form to the API (no URL length limit on long expressions) and return ``data``."""
        try:
            status, content = _exchange(self._opener, self._request(path, form), self.timeout)
        except _NO_ANSWER as exc:
            if _timed_out(exc):
                raise TemporaryError(
                    f"Prometheus at {self.base_url} did not answer within {self.timeout:g}s while {doing}"
                ) from exc
            raise TemporaryError(f"Prometheus at {self.base_url} unreachable while {doing}: {_why(exc)}") from exc
        try:
            body = json.loads(content)
        except ValueError:
            text = content.decode("utf-8", "replace")
            raise TemporaryError(
                f"Prometheus at {self.base_url} answered HTTP {status} without JSON while {doing}: {text[:200]!r}"
            ) from None
        if not isinstance(body, dict):
            raise TemporaryError(f"Prometheus at {self.base_url} sent an unexpected answer while {doing}")
        if body.get("status") == "success":
            for warning in body.get("warnings") or []:
                log.warning("Prometheus warning while %s: %s", doing, warning)
            return body.get("data")
        error_type = str(body.get("errorType", ""))
        error = str(body.get("error", f"HTTP {status}"))
        if error_type == "bad_data" or status == 400:
            # 'invalid parameter "query": 1:10: parse error: ...' -> '1:10: parse error: ...'
            error = error.removeprefix('invalid parameter "query": ')
            raise InvalidSpec(f"PromQL rejected by Prometheus: {error}")
        # "execution" (422), "timeout"/"canceled" (503), "internal"...: the expression parsed; the
        # evaluation failed on this data or this load, so a later try may work.
        raise PrometheusEvaluationError(f"Prometheus failed while {doing}: {error_type or 'error'}: {error}")

    @staticmethod
    def _instant_result(data: Any, expr: str) -> list[InstantSample]:
        result_type = data.get("resultType")
        result = data.get("result")
        if result_type == "vector":
            return [(dict(item.get("metric", {})), _number(item["value"][1])) for item in result]
        if result_type == "scalar":
            return [({}, _number(result[1]))]
        raise InvalidSpec(f"PromQL expression {expr!r} returns a {result_type}, not an instant vector or scalar")

    # -- API ------------------------------------------------------------------------------------

    def query(self, expr: str, at: datetime | None = None) -> list[InstantSample]:
        """Evaluate ``expr`` at ``at`` (default: now) -> [(labels, value)]."""
        form = {"query": expr}
        if at is not None:
            form["time"] = repr(_timestamp(at))
        data = self._api("/api/v1/query", form, f"evaluating {expr!r}")
        return self._instant_result(data, expr)

    def query_scalar(self, expr: str, at: datetime | None = None) -> float | None:
        """One number, or None when there is no data (empty vector or NaN) -- "unknown", which the
        autoscaler must not confuse with 0. More than one series is a rule error."""
        samples = self.query(expr, at)
        if not samples:
            return None
        if len(samples) > 1:
            raise InvalidSpec(
                f"PromQL expression {expr!r} returned {len(samples)} series where one number was "
                "expected; aggregate it (e.g. avg(...))"
            )
        value = samples[0][1]
        return None if math.isnan(value) else value

    def query_range(self, expr: str, start: datetime, end: datetime, step_seconds: float) -> list[RangeSeries]:
        """Evaluate ``expr`` over [start, end] every ``step_seconds`` -> [(labels, [(unix_ts, value)])]."""
        if step_seconds <= 0:
            raise InvalidSpec(f"query step must be positive, got {step_seconds}")
        if end < start:
            raise InvalidSpec("query range end is before its start")
        form = {
            "query": expr,
            "start": repr(_timestamp(start)),
            "end": repr(_timestamp(end)),
            "step": repr(float(step_seconds)),
        }
        data = self._api("/api/v1/query_range", form, f"evaluating {expr!r} over a range")
        if data.get("resultType") != "matrix":
            raise TemporaryError(f"Prometheus returned a {data.get('resultType')} for a range query")
        return [
            (dict(item.get("metric", {})), [(float(ts), _number(v)) for ts, v in item.get("values", [])])
            for item in data.get("result", [])
        ]

    def validate(self, expr: str) -> None:
        """Have Prometheus parse ``expr``; raises ``InvalidSpec("PromQL rejected by Prometheus: ...")``.

        An instant query is the parse check Prometheus 2.x offers everywhere. Evaluation failures
        that are not parse errors (422 execution, timeouts) mean the expression itself is valid.
        """
        if not expr.strip():
            raise InvalidSpec("PromQL rejected by Prometheus: empty expression")
        try:
            self._api("/api/v1/query", {"query": expr}, f"validating {expr!r}")
        except PrometheusEvaluationError as exc:
            log.debug("validate: %r parsed but failed to evaluate: %s", expr, exc.message)

    def ready(self) -> bool:
        """True when Prometheus answers /-/ready with 200 (TSDB loaded, serving queries)."""
        try:
            status, _ = _exchange(self._opener, self._request("/-/ready"), self.timeout)
        except _NO_ANSWER:
            return False
        return status == 200

    def reload(self, config_path: Path) -> None:
        """Have Prometheus re-read ``config_path`` (``POST /-/reload``; needs
        ``--web.enable-lifecycle``). Unreachable: ``TemporaryError``; a configuration Prometheus
        refuses: ``LocalVMSSError`` with Prometheus's own words."""
        request = self._request("/-/reload", {})
        try:
            status, content = _exchange(self._opener, request, self.timeout)
        except _NO_ANSWER as exc:
            raise TemporaryError(f"Prometheus at {self.base_url} unreachable while reloading: {_why(exc)}") from exc
        if status != 200:
            text = content.decode("utf-8", "replace").strip()
            raise LocalVMSSError(f"Prometheus refused the new configuration {config_path}: {text}")


# ---------------------------------------------------------------------------------------------
# A private Prometheus server


def _duration(seconds: float) -> str:
    """Prometheus duration syntax ("2s", "500ms")."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise InvalidSpec(f"duration must be positive, got {seconds}")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def _listening_port(pid: int) -> int | None:
    """The TCP port ``pid`` listens on (a Prometheus started on port 0 names none)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    ports = sorted(c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN)
    return ports[0] if ports else None


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port):
        raise InvalidSpec(f"listen address {listen!r} is not host:port")
    return host, int(port)


_LISTENING = re.compile(r'msg="Listening on" address=(\S+)')


class PrometheusServer:
    """A Prometheus child process with a generated configuration, owned by the daemon.

    Jobs: ``localvmss`` (static; the daemon's exporter), one file_sd job per entry of
    ``file_sd_paths`` (``localvmss-guest`` scrapes ``/cgi-bin/metrics``), and ``extra_static``
    jobs such as HAProxy's own /metrics. ``listen`` may use port 0: the real port is read from
    Prometheus's log, so parallel servers never race for a port; a restart reuses that port.

    ``rule_files`` (default: the shipped ``localvmss-rules.yml``) are copied into ``data_dir/rules``
    with each configuration write, so the configuration names files inside the state directory
    (a package upgrade or a moved checkout changes nothing underneath a running Prometheus) and a
    reload picks up new rules.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        listen: str = "127.0.0.1:0",
        scrape_interval_s: float = 5.0,
        exporter_targets: Sequence[str] = (),
        file_sd_paths: Mapping[str, str | os.PathLike[str]] | None = None,
        extra_static: Mapping[str, Sequence[str]] | None = None,
        binary: str = "prometheus",
        evaluation_interval_s: float | None = None,
        retention: str = "15d",
        start_timeout_s: float = 30.0,
        rule_files: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host, self._requested_port = _split_listen(listen)
        self.scrape_interval_s = scrape_interval_s
        self.evaluation_interval_s = evaluation_interval_s or scrape_interval_s
        self.exporter_targets = list(exporter_targets)
        self.file_sd_paths = {job: Path(p) for job, p in (file_sd_paths or {}).items()}
        self.extra_static = {job: list(targets) for job, targets in (extra_static or {}).items()}
        self.binary = binary
        self.retention = retention
        self.start_timeout_s = start_timeout_s
        self.rule_sources = [Path(p) for p in (shipped_rules() if rule_files is None else rule_files)]
        self.config_path = self.data_dir / "prometheus.yml"
        self.log_path = self.data_dir / "prometheus.log"
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._adopted: int | None = None  # a Prometheus a previous daemon started
        self._log: IO[bytes] | None = None
        self._lock = threading.RLock()

    # -- configuration --------------------------------------------------------------------------

    def render_config(self) -> dict[str, Any]:
        """The configuration as data (written as JSON, which is valid YAML for Prometheus)."""
        interval = _duration(self.scrape_interval_s)
        scrape_configs: list[dict[str, Any]] = [
            {"job_name": DAEMON_JOB, "static_configs": [{"targets": self.exporter_targets}]}
        ]
        for job, path in sorted(self.file_sd_paths.items()):
            scrape_configs.append(
                {
                    "job_name": job,
                    "metrics_path": GUEST_METRICS_PATH if job == GUEST_JOB else "/metrics",
                    # inotify picks up changes at once; the refresh is only a fallback.
                    "file_sd_configs": [{"files": [str(path.resolve())], "refresh_interval": "30s"}],
                }
            )
        for job, targets in sorted(self.extra_static.items()):
            if job == DAEMON_JOB or job in self.file_sd_paths:
                raise InvalidSpec(f"scrape job name {job!r} is used twice")
            scrape_configs.append({"job_name": job, "static_configs": [{"targets": targets}]})
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": _duration(min(self.scrape_interval_s, 10.0)),
                "evaluation_interval": _duration(self.evaluation_interval_s),
            },
            "scrape_configs": scrape_configs,
        }
        if self.rule_sources:
            config["rule_files"] = [str(p) for p in self.rule_paths]
        return config

    @property
    def rule_paths(self) -> list[Path]:
        """Where the configuration finds the rule files: copies under ``data_dir/rules``."""
        return [self.data_dir / "rules" / f"{i:02d}-{p.name}" for i, p in enumerate(self.rule_sources)]

    def _copy_rules(self) -> None:
        for source, target in zip(self.rule_sources, self.rule_paths, strict=True):
            try:
                text = source.read_bytes()
            except OSError as exc:
                raise LocalVMSSError(f"cannot read Prometheus rule file {source}: {exc.strerror}") from None
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(text)
            os.replace(tmp, target)

    def write_config(self) -> Path:
        """Write prometheus.yml atomically (a reload must never see half a file)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._copy_rules()  # before the configuration that names them
        text = "# Generated by localvmss; edits are overwritten.\n" + json.dumps(self.render_config(), indent=2)
        tmp = self.config_path.with_name(f".{self.config_path.name}.tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, self.config_path)
        # A file_sd file that does not exist yet is created empty, so Prometheus starts watching it.
        for path in self.file_sd_paths.values():
            if not path.exists():
                write_file_sd(path, [])
        return self.config_path

    def check_config(self, promtool: str = "promtool") -> None:
        """Run ``promtool check config`` on the written file; raises with promtool's message."""
        self.write_config()
        try:
            done = subprocess.run(
                [promtool, "check", "config", str(self.config_path)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except FileNotFoundError:
            raise LocalVMSSError(f"promtool binary {promtool!r} not found") from None
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip().replace("\n", " | ")
            raise LocalVMSSError(f"promtool rejected {self.config_path}: {output}")

    # -- process --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise TemporaryError("Prometheus is not running (no port yet)")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        return self._adopted

    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._adopted is not None and str(self.config_path) in cmdline(self._adopted)

    def adopt(self, pid: int) -> bool:
        """Take over a Prometheus a previous daemon started with this configuration (it kept
        scraping while no daemon ran); True if it runs, is ours and answers."""
        with self._lock:
            command = cmdline(pid)
            if str(self.config_path) not in command:
                return False
            match = re.search(r"--web\.listen-address=(\S+)", command)
            if match is None:
                return False
            port = _split_listen(match.group(1))[1] or _listening_port(pid)
            if not port:
                return False
            self.port = port
            self._adopted = pid
            with PrometheusClient(self.url, timeout=2.0) as probe:
                if not probe.ready():
                    self._adopted = None
                    return False
            log.info("adopted prometheus pid %d on port %d", pid, self.port)
            self.reload()  # the configuration may have changed while no daemon ran
            return True

    def client(self, timeout: float = 10.0) -> PrometheusClient:
        return PrometheusClient(self.url, timeout=timeout)

    def _log_tail(self, offset: int, lines: int = 5) -> str:
        text = self._read_log(offset)
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail) or "(empty log)"

    def _spawn(self, port: int) -> int:
        """Start the process on ``port`` (0 = any), wait for /-/ready, return the bound port."""
        if shutil.which(self.binary) is None:
            raise LocalVMSSError(f"prometheus binary {self.binary!r} not found; install Prometheus")
        self.write_config()
        (self.data_dir / "tsdb").mkdir(parents=True, exist_ok=True)
        if self._log is None:
            self._log = open(self.log_path, "ab")  # kept open for the child's lifetime
        offset = self._log.tell()
        args = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={self.host}:{port}",
            "--web.enable-lifecycle",
        ]
        # Own session/process group: a Ctrl-C in the daemon's terminal does not hit Prometheus,
        # and the daemon stops it deliberately (flushing the TSDB) instead.
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            start_new_session=True,
        )
        log.info("started prometheus pid %d (log %s)", self._proc.pid, self.log_path)
        deadline = time.monotonic() + self.start_timeout_s
        bound = port or None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise TemporaryError(f"prometheus exited with status {code} while starting: {self._log_tail(offset)}")
            if bound is None:
                match = _LISTENING.search(self._read_log(offset))
                if match:
                    bound = _split_listen(match.group(1))[1]
            if bound is not None:
                self.port = bound
                with PrometheusClient(self.url, timeout=1.0) as probe:
                    if probe.ready():
                        return bound
            time.sleep(0.1)
        self._terminate()
        raise TemporaryError(
            f"prometheus did not become ready within {self.start_timeout_s:g}s: {self._log_tail(offset)}"
        )

    def _read_log(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def start(self) -> None:
        """Start Prometheus and wait until it is ready; a no-op when it already runs."""
        with self._lock:
            if self.running():
                return
            preferred = self.port if self.port is not None else self._requested_port
            try:
                self.port = self._spawn(preferred)
            except TemporaryError:
                if preferred == 0 or self._requested_port != 0:
                    raise
                # The old port was taken while we were down: any port will do.
                log.warning("prometheus could not get port %d back; using a new one", preferred)
                self.port = self._spawn(0)

    def ensure_running(self) -> bool:
        """Restart Prometheus if it died; True when a restart happened."""
        with self._lock:
            if self.running():
                return False
            if self._proc is not None:
                log.warning("prometheus pid %d exited with %s; restarting", self._proc.pid, self._proc.returncode)
                self._proc = None
            self._adopted = None
            self.start()
            return True

    def reload(self) -> None:
        """Rewrite the configuration (targets may have changed) and have Prometheus re-read it."""
        with self._lock:
            self.write_config()
            if not self.running():
                return
            self.client().reload(self.config_path)

    def _terminate(self, timeout: float = 10.0) -> None:
        if self._proc is None and self._adopted is not None:
            pid, self._adopted = self._adopted, None
            if str(self.config_path) in cmdline(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and str(self.config_path) in cmdline(pid):
                    time.sleep(0.1)
                if str(self.config_path) in cmdline(pid):
                    os.kill(pid, signal.SIGKILL)
            return
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("prometheus pid %d ignored SIGTERM for %gs; killing it", proc.pid, timeout)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        self._proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Prometheus flushes its TSDB head), then SIGKILL after ``timeout`` seconds."""
        with self._lock:
            self._terminate(timeout)
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
