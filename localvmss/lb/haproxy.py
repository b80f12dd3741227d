"""HAProxy as the scale sets' layer-4 load balancer: one supervised master-worker process.

Why one HAProxy for every scale set, not one per set: one process to supervise and restart, one
admin socket to drive, one place where port conflicts between sets are checked (every set binds
in the same port space), and a reload passes every set's listening sockets to the new worker at
once, so no set ever loses a connection to another set's change.

How changes reach HAProxy:
- members that come and go, and their ready/drain/maintenance state, go through the runtime API
  (``add server``, ``set server ... state``, ``del server``): no reload;
- new or changed frontends, probes and NAT listeners need a new configuration: the file is
  rewritten and the master is asked to reload, which hands the listening sockets to the new
  worker (seamless: no refused connection) while the old worker finishes its connections;
- every member is always written into the configuration file too, because servers that exist
  only at runtime are lost on a reload or restart; the server-state file carries health and
  admin states across a reload, and a re-sync after every start or reload sets them exactly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from localvmss.children import cmdline
from localvmss.errors import InvalidSpec, LocalVMSSError, NotFound
from localvmss.lb.config import (
    ADMIN_SOCKET,
    CONFIG_FILE,
    MASTER_SOCKET,
    SERVER_STATE_FILE,
    UNIX_PATH_MAX,
    SetState,
    atomic_write,
    backend_name,
    expected_proxies,
    instance_of_server,
    render_config,
    server_args,
    server_name,
    write_config,
)
from localvmss.lb.runtime import (
    AdminState,
    HAProxyError,
    HAProxyUnavailable,
    MasterClient,
    RuntimeClient,
    ServerRow,
)
from localvmss.lb.spec import (
    LoadBalancerSpec,
    Member,
    from_json,
    member_from_json,
    member_to_json,
    to_json,
    validate,
    validate_members,
)
from localvmss.model import validate_name

STATE_FILE = "lb-state.json"
PID_FILE = "haproxy.pid"
LOG_FILE = "haproxy.log"
LOG_MAX_BYTES = 1 << 20

_LOG_PREFIX = re.compile(r"^\[ALERT\]\s*\(\d+\)\s*:\s*(config\s*:\s*)?")
_GENERIC_ALERTS = (
    "Some protocols failed",
    "Fatal errors",
    "Error(s) found",
    "exit-on-failure",
)

# Worst first: a set's instance shows the worst status over the set's backends.
_STATUS_ORDER = ("MAINT", "DRAIN", "DOWN", "UP")

__all__ = ["LoadBalancer", "Member", "ServerState"]


@dataclass(frozen=True)
class ServerState:
    """One instance as HAProxy sees it, over every backend of its set.

    ``status`` is UP, DOWN, MAINT or DRAIN (the worst over the backends); ``check_status`` is
    HAProxy's last check result (L7OK, L4CON, L7STS, ...); ``current_sessions`` sums the
    backends; ``backends`` keeps HAProxy's own status text per backend.
    """

    instance_id: int
    status: str
    check_status: str
    current_sessions: int
    backends: dict[str, str]


def normalize_status(raw: str) -> str:
    """HAProxy's stat status ('UP 1/2', 'MAINT (via)', 'no check', 'NOLB') -> our four words."""
    word = raw.strip().split(" ")[0].upper() if raw.strip() else "DOWN"
    if word in ("NO", "UP"):  # "no check": always up; "UP 1/2": up, failing checks
        return "UP"
    if word == "NOLB":
        return "DRAIN"
    if word in _STATUS_ORDER:
        return word
    return "DOWN"


def _proc_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return data.rsplit(")", 1)[-1].split()[0] if ")" in data else None


# How long remove() lets a member's open connections finish after drain() already waited.
REMOVE_DRAIN_S = 10.0


class LoadBalancer:
    """The one HAProxy of the daemon, and the desired state of every set on it.

    All public methods are thread-safe. Desired state lives in ``<run_dir>/lb-state.json`` and
    in the rendered ``haproxy.cfg``, so a new daemon (or a restarted HAProxy) starts from it.
    """

    def __init__(
        self,
        run_dir: Path | str,
        haproxy_binary: str = "haproxy",
        stats_port: int = 9480,
        *,
        stats_address: str = "127.0.0.1",
        namespace: str | None = None,
        start_timeout_s: float = 15.0,
        socket_timeout_s: float = 5.0,
    ) -> None:
        self.run_dir = Path(run_dir).absolute()
        self.haproxy_binary = haproxy_binary
        self.stats_port = stats_port
        self.stats_address = stats_address
        self.namespace = namespace
        self.start_timeout_s = start_timeout_s
        self.config_path = self.run_dir / CONFIG_FILE
        self.admin_socket = self.run_dir / ADMIN_SOCKET
        self.master_socket = self.run_dir / MASTER_SOCKET
        self.server_state_path = self.run_dir / SERVER_STATE_FILE
        self.state_path = self.run_dir / STATE_FILE
        self.pid_path = self.run_dir / PID_FILE
        self.log_path = self.run_dir / LOG_FILE
        for sock in (self.admin_socket, self.master_socket):
            if len(str(sock)) > UNIX_PATH_MAX or "," in str(sock):
                raise InvalidSpec(
                    f"run directory {self.run_dir} is unusable for HAProxy's sockets (too long or has ',')"
                )
        self.admin = RuntimeClient(self.admin_socket, timeout_s=socket_timeout_s)
        self.master = MasterClient(self.master_socket, timeout_s=socket_timeout_s)
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._known_workers: set[int] = set()  # last seen, to reap them if the master dies
        self._sets: dict[str, SetState] = self._load_state()

    # ---- desired state on disk -------------------------------------------------------------
    def _load_state(self) -> dict[str, SetState]:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise HAProxyError(f"reading load balancer state {self.state_path}: {exc}") from None
        sets = {}
        for name, item in (data.get("sets") or {}).items():
            spec = from_json(item["spec"])
            members = tuple(member_from_json(m) for m in item.get("members", []))
            sets[name] = SetState(spec, members, frozenset(item.get("draining", [])))
        return sets

    def _save_state(self) -> None:
        data: dict[str, Any] = {
            "sets": {
                name: {
                    "spec": to_json(st.spec),
                    "members": [member_to_json(m) for m in st.members],
                    "draining": sorted(st.draining),
                }
                for name, st in sorted(self._sets.items())
            }
        }
        atomic_write(self.state_path, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def _render(self) -> str:
        return render_config(
            self._sets,
            run_dir=self.run_dir,
            stats_port=self.stats_port,
            stats_address=self.stats_address,
            namespace=self.namespace,
        )

    def _write_config(self) -> bool:
        """Render, check and write the config; True if the file changed."""
        text = self._render()
        try:
            if self.config_path.read_text() == text:
                return False
        except FileNotFoundError:
            pass
        write_config(self.config_path, text, haproxy_binary=self.haproxy_binary)
        return True

    # ---- queries ---------------------------------------------------------------------------
    def sets(self) -> dict[str, SetState]:
        with self._lock:
            return dict(self._sets)

    def members(self, set_name: str) -> tuple[Member, ...]:
        with self._lock:
            st = self._sets.get(set_name)
            return st.members if st else ()

    def ports_in_use(self, exclude_set: str | None = None) -> set[int]:
        """Ports bound by the stats listener and by every set but ``exclude_set``."""
        with self._lock:
            ports = {self.stats_port}
            for name, st in self._sets.items():
                if name != exclude_set:
                    ports |= st.spec.frontend_ports()
            return ports

    def check_spec(self, set_name: str, spec: LoadBalancerSpec, *, max_capacity: int) -> LoadBalancerSpec:
        """validate() against the other sets' ports: what the API calls before accepting a set."""
        validate_name(set_name, "scale set name")
        return validate(spec, max_capacity=max_capacity, other_sets_ports=self.ports_in_use(set_name))

    # ---- process ---------------------------------------------------------------------------
    def _is_ours(self, pid: int) -> bool:
        return str(self.config_path) in cmdline(pid)

    def _alive(self, pid: int | None) -> bool:
        if pid is None or pid <= 0:
            return False
        if self._proc is not None and self._proc.pid == pid:
            self._proc.poll()  # reap our child if it died, else /proc shows a zombie
        state = _proc_state(pid)
        return state is not None and state not in ("Z", "X") and self._is_ours(pid)

    @property
    def master_pid(self) -> int | None:
        """The master's pid if it runs (ours, from this object or a previous daemon's pid file)."""
        if self._proc is not None and self._alive(self._proc.pid):
            return self._proc.pid
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if self._alive(pid) else None

    def worker_pids(self) -> list[int]:
        """Current workers according to the master (empty if it does not answer)."""
        try:
            workers = self.master.show_proc().workers
        except LocalVMSSError:
            return []
        self._known_workers |= set(workers)
        return workers

    def _serving(self) -> bool:
        """Master alive, a current worker, and that worker answering the admin socket."""
        if self.master_pid is None:
            return False
        try:
            workers = self.master.show_proc().workers
            return bool(workers) and self.admin.ping() in workers
        except LocalVMSSError:
            return False

    def is_running(self) -> bool:
        with self._lock:
            return self._serving()

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_reason(self, since: int = 0) -> str:
        """HAProxy's own specific complaints logged after byte ``since``, on one line."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "no HAProxy log"
        alerts = []
        for line in lines:
            if not line.startswith("[ALERT]"):
                continue
            text = _LOG_PREFIX.sub("", line).strip()
            if not any(g in text for g in _GENERIC_ALERTS):
                alerts.append(text)
        return "; ".join(alerts[:3]) or " | ".join(ln.strip() for ln in lines[-3:]) or "no reason logged"

    def _spawn(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        if self._log_size() > LOG_MAX_BYTES:
            self.log_path.rename(self.log_path.with_suffix(".log.1"))
        since = self._log_size()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    self.haproxy_binary,
                    "-W",
                    "-S",
                    f"{self.master_socket},mode,600",
                    "-f",
                    str(self.config_path),
                    "-p",
                    str(self.pid_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                start_new_session=True,  # our signals (Ctrl-C of the daemon) are not HAProxy's
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                status = self._proc.returncode
                raise HAProxyError(f"HAProxy exited with status {status} while starting: {self._log_reason(since)}")
            if self._serving():
                return
            time.sleep(0.05)
        self._terminate()
        raise HAProxyError(f"HAProxy did not answer on {self.admin_socket} within {self.start_timeout_s} s")

    def start(self) -> None:
        """Start HAProxy (or adopt the one a previous daemon left) and set every server's state."""
        with self._lock:
            if self._serving():
                if self._write_config():
                    self._reload_locked()
                else:
                    self._converge(list(self._sets))
                return
            self._terminate()
            self._spawn()
            self._converge(list(self._sets))

    def _processes_with_our_config(self) -> set[int]:
        found = set()
        needle = str(self.config_path).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if needle in fh.read():
                        found.add(int(entry))
            except OSError:
                continue
        return found

    def _terminate(self, timeout_s: float = 5.0) -> None:
        """Stop our master and its workers by pid: TERM, then KILL after ``timeout_s``."""
        pid = self.master_pid
        if pid:
            self.worker_pids()
        # Every process running our configuration is ours: a worker orphaned by a killed master
        # would otherwise keep its SO_REUSEPORT listeners and share (then drop) connections.
        workers = set(self._known_workers) | self._processes_with_our_config()
        self._known_workers = set()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout_s
        pending = {p for p in workers | ({pid} if pid else set()) if self._alive(p)}
        while pending and time.monotonic() < deadline:
            time.sleep(0.05)
            pending = {p for p in pending if self._alive(p)}
        for p in pending:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
            self._proc = None
        try:
            self.pid_path.unlink()
        except FileNotFoundError:
            pass

    def stop(self) -> None:
        """Stop HAProxy; desired state stays on disk for the next start()."""
        with self._lock:
            self._terminate()

    def ensure_running(self) -> bool:
        """Restart HAProxy from its config (which holds every member) if it died; True if it did.

        A master that lives but does not serve (no worker, socket silent) gets a few seconds to
        finish a reload, then is stopped and started again.
        """
        with self._lock:
            if self._serving():
                return False
            deadline = time.monotonic() + 3.0
            while self.master_pid is not None and time.monotonic() < deadline:
                time.sleep(0.1)
                if self._serving():
                    return False
            self._terminate()
            self._spawn()
            self._converge(list(self._sets))
            return True

    def save_server_state(self) -> None:
        """Refresh the server-state file, so a reload started outside the daemon (an operator's
        master-CLI ``reload`` or SIGUSR2) restores current server states, not stale ones."""
        with self._lock:
            if self._serving():
                atomic_write(self.server_state_path, self.admin.command("show servers state"))

    def reload(self) -> None:
        """Seamless reload through the master CLI; raises HAProxyError if the new config failed."""
        with self._lock:
            self._write_config()
            self._reload_locked()

    def _reload_locked(self) -> None:
        if not self._serving():
            self._terminate()
            self._spawn()
            self._converge(list(self._sets))
            return
        before = self.master.show_proc()
        since = self._log_size()
        # Health and admin state of every server survive the reload through this file.
        atomic_write(self.server_state_path, self.admin.command("show servers state"))
        self.master.reload()
        deadline = time.monotonic() + self.start_timeout_s
        new_workers: list[int] = []
        while time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                info = self.master.show_proc()
            except HAProxyUnavailable:
                continue
            if info.failed_reloads > before.failed_reloads:
                raise HAProxyError(
                    f"HAProxy reload failed, still running the old configuration: {self._log_reason(since)}"
                )
            new_workers = [w for w in info.workers if w not in before.workers]
            if info.reloads > before.reloads and new_workers:
                break
        else:
            raise HAProxyError(
                f"HAProxy reload did not finish within {self.start_timeout_s} s: {self._log_reason(since)}"
            )
        while time.monotonic() < deadline:
            try:
                if self.admin.ping() in new_workers:
                    break
            except HAProxyUnavailable:
                pass
            time.sleep(0.05)
        else:
            raise HAProxyError(f"the new HAProxy worker did not answer on {self.admin_socket}")
        self._converge(list(self._sets))

    # ---- runtime convergence ---------------------------------------------------------------
    def _delete_server(self, backend: str, server: str, admin_state: AdminState) -> None:
        """Maintenance, close what is left, delete: the order ``del server`` requires.

        Always forced maintenance, even for a server that looks in maintenance: a server
        ``disabled`` in the configuration is only in *config* maintenance (CMAINT), which
        ``del server`` does not accept (HAProxy 2.6 checks SRV_ADMF_MAINT = FMAINT|IMAINT|RMAINT).
        """
        del admin_state
        self.admin.set_state(backend, server, "maint")
        deadline = time.monotonic() + 3.0
        while True:
            if self.admin.server_sessions(backend, server):
                self.admin.shutdown_sessions(backend, server)
            try:
                self.admin.del_server(backend, server)
                return
            except HAProxyError:
                # Sessions still closing (or a check in flight); it clears within milliseconds.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _converge(self, set_names: list[str]) -> None:
        """Make the running servers of these sets exactly the desired members, in the desired state."""
        if not set_names:
            return
        by_backend: dict[str, dict[str, ServerRow]] = {}
        for row in self.admin.servers():
            by_backend.setdefault(row.backend, {})[row.server] = row
        for set_name in set_names:
            st = self._sets.get(set_name)
            if st is None:
                continue
            desired = {server_name(m.instance_id): m for m in st.members}
            for port in st.spec.backend_ports():
                be = backend_name(set_name, port)
                if be not in by_backend and not st.members:
                    continue  # an empty backend has no rows in "show servers state"
                actual = by_backend.get(be, {})
                for name, gone in actual.items():
                    if name not in desired:
                        self._delete_server(be, name, gone.admin_state)
                for name, m in desired.items():
                    want = st.admin_state(m)
                    cur = actual.get(name)
                    if cur is None:
                        if self.namespace:
                            raise HAProxyError(
                                f"server {be}/{name} is missing and servers in a network namespace "
                                "cannot be added at runtime; a reload is needed"
                            )
                        self.admin.add_server(be, name, server_args(st.spec, port, m, dynamic=True))
                        self.admin.enable_health(be, name)
                        if want != "maint":
                            self.admin.set_state(be, name, want)
                        continue
                    if cur.address != m.address or cur.port != port:
                        self.admin.set_addr(be, name, m.address, port)
                    if cur.admin_state != want:
                        self.admin.set_state(be, name, want)

    def _running_proxies(self) -> set[str]:
        return {row.get("pxname", "") for row in self.admin.show_stat()}

    def _needs_reload(self, set_name: str, old: SetState | None, new: SetState | None) -> bool:
        if old is None or new is None or old.spec != new.spec or old.nat_map() != new.nat_map():
            return True
        if self.namespace:
            old_addrs = {(m.instance_id, m.address) for m in old.members}
            if any((m.instance_id, m.address) not in old_addrs for m in new.members):
                return True
        if not self._serving():
            return True
        # A config that never reached the running process (a crash between write and reload).
        return not expected_proxies(set_name, new) <= self._running_proxies()

    def _commit(self, set_name: str, new: SetState | None) -> None:
        """Persist the new desired state of one set and bring HAProxy to it.

        A failed check or reload restores the previous state and config, so the file on disk is
        always one the running HAProxy accepted.
        """
        old = self._sets.get(set_name)
        reload = self._needs_reload(set_name, old, new)
        previous = dict(self._sets)
        if new is None:
            self._sets.pop(set_name, None)
        else:
            self._sets[set_name] = new
        try:
            self._write_config()
            if reload:
                self._reload_locked()
        except LocalVMSSError:
            self._sets = previous
            try:
                self._write_config()
            except LocalVMSSError:
                pass
            raise
        self._save_state()
        if not reload:
            self._converge([set_name])

    # ---- the scale-set interface -----------------------------------------------------------
    def apply(self, set_name: str, spec: LoadBalancerSpec, members: list[Member]) -> None:
        """Converge HAProxy to exactly these members of the set, with these rules.

        New members go in through the runtime API (no reload); new frontends, probes or NAT
        listeners need a seamless reload. A member drained with drain() stays drained while it
        stays ready; once the caller reports it not ready (restart, reimage) and then ready
        again, it takes traffic again.
        """
        validate_name(set_name, "scale set name")
        with self._lock:
            validate(spec, max_capacity=0, other_sets_ports=self.ports_in_use(set_name))
            wanted = validate_members(spec, members)
            old = self._sets.get(set_name)
            draining: frozenset[int] = frozenset()
            if old is not None:
                still = {m.instance_id for m in wanted if m.ready}
                draining = frozenset(
                    i for i in old.draining if i in still and (om := old.member(i)) is not None and om.ready
                )
            new = SetState(spec, wanted, draining)
            mine = expected_proxies(set_name, new)
            for other, st in self._sets.items():
                if other != set_name and mine & expected_proxies(other, st):
                    clash = sorted(mine & expected_proxies(other, st))[0]
                    raise InvalidSpec(f"HAProxy section {clash} of set {set_name} collides with set {other}")
            if old == new and self._serving():
                self._converge([set_name])  # re-assert runtime state only
                return
            self._commit(set_name, new)

    def remove_set(self, set_name: str) -> None:
        """Remove the set's frontends, backends and NAT listeners (a reload); no-op if unknown."""
        with self._lock:
            if set_name not in self._sets:
                return
            self._commit(set_name, None)

    def drain(self, set_name: str, instance_id: int, timeout_s: float) -> int:
        """Stop new connections to the instance and wait for its open ones to finish.

        Returns the connections still open when ``timeout_s`` ran out (0 = fully drained).
        Unknown sets or instances have nothing to drain: 0.
        """
        with self._lock:
            st = self._sets.get(set_name)
            member = st.member(instance_id) if st else None
            if st is None or member is None:
                return 0
            if instance_id not in st.draining:
                self._sets[set_name] = replace(st, draining=st.draining | {instance_id})
                self._write_config()
                self._save_state()
            name = server_name(instance_id)
            backends = [backend_name(set_name, p) for p in st.spec.backend_ports()]
            rows = {(r.backend, r.server): r for r in self.admin.servers()}
            for be in backends:
                row = rows.get((be, name))
                if row is not None and row.admin_state == "ready":
                    self.admin.set_state(be, name, "drain")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining = self._sessions(backends, name)
            if remaining == 0 or time.monotonic() >= deadline:
                return remaining
            time.sleep(0.1)

    def _sessions(self, backends: list[str], server: str) -> int:
        """Open connections to the server in every worker: after a reload the old worker still
        serves the connections it had, and the new worker's figures do not include them."""
        try:
            per_worker = self.master.stats_of_every_worker()
        except HAProxyUnavailable:
            per_worker = [self.admin.show_stat()]
        total = 0
        for rows in per_worker:
            for row in rows:
                if row.get("svname") == server and row.get("pxname") in backends:
                    total += int(row.get("scur") or 0)
        return total

    def remove(self, set_name: str, instance_id: int) -> None:
        """Take the instance out: maintenance, delete its servers, and its NAT listener (reload)."""
        with self._lock:
            st = self._sets.get(set_name)
            member = st.member(instance_id) if st else None
            if st is None or member is None:
                return
            name = server_name(instance_id)
            if self._serving():
                rows = {(r.backend, r.server): r for r in self.admin.servers()}
                backends = [backend_name(set_name, port) for port in st.spec.backend_ports()]
                # The worker serving now may be newer than the one drain() talked to (a reload
                # in between starts servers from the config): drain here too, and let open
                # connections finish before maintenance closes what is left.
                for be in backends:
                    row = rows.get((be, name))
                    if row is not None and row.admin_state == "ready":
                        self.admin.set_state(be, name, "drain")
                deadline = time.monotonic() + REMOVE_DRAIN_S
                while self._sessions(backends, name) and time.monotonic() < deadline:
                    time.sleep(0.1)
                for be in backends:
                    row = rows.get((be, name))
                    if row is not None:
                        self._delete_server(be, name, row.admin_state)
            new = SetState(
                st.spec,
                tuple(m for m in st.members if m.instance_id != instance_id),
                st.draining - {instance_id},
            )
            self._commit(set_name, new)

    def server_states(self, set_name: str) -> dict[int, ServerState]:
        """What HAProxy thinks of each member of the set right now."""
        with self._lock:
            st = self._sets.get(set_name)
            if st is None:
                raise NotFound(f"scale set {set_name!r} has no load balancer")
            backends = {backend_name(set_name, p) for p in st.spec.backend_ports()}
        acc: dict[int, dict[str, Any]] = {}
        for row in self.admin.show_stat():
            if row.get("pxname") not in backends or row.get("svname") in ("FRONTEND", "BACKEND"):
                continue
            iid = instance_of_server(row.get("svname", ""))
            if iid is None:
                continue
            item = acc.setdefault(iid, {"status": "UP", "check": "", "sessions": 0, "backends": {}})
            status = normalize_status(row.get("status", ""))
            if _STATUS_ORDER.index(status) < _STATUS_ORDER.index(item["status"]):
                item["status"] = status
            if not item["check"] or status != "UP":
                item["check"] = row.get("check_status", "") or item["check"]
            item["sessions"] += int(row.get("scur") or 0)
            item["backends"][row["pxname"]] = row.get("status", "")
        return {
            iid: ServerState(iid, v["status"], v["check"], v["sessions"], v["backends"])
            for iid, v in sorted(acc.items())
        }
