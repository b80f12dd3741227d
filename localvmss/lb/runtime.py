"""A small client of HAProxy's runtime API (admin socket) and master CLI, over unix sockets.

Talking to the sockets from Python keeps socat off the host's package list. Each command opens
its own connection (HAProxy's non-interactive mode answers one command and closes), so the
client holds no state and is safe to use from several threads.
"""

from __future__ import annotations

import csv
import io
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from localvmss.errors import LocalVMSSError, TemporaryError

AdminState = Literal["ready", "drain", "maint"]

# Admin state bits of "show servers state" (HAProxy 2.6 include/haproxy/server-t.h, enum srv_admin).
ADMF_FMAINT = 0x01  # forced into maintenance ("set server ... state maint")
ADMF_IMAINT = 0x02  # inherited from a tracked server
ADMF_CMAINT = 0x04  # "disabled" in the configuration: only a marker, the server may well be serving
ADMF_FDRAIN = 0x08  # forced into drain ("set server ... state drain")
ADMF_IDRAIN = 0x10  # inherited drain
ADMF_RMAINT = 0x20  # DNS resolution failed
ADMF_HMAINT = 0x40  # FQDN set from the runtime API: not a state at all
# HAProxy's own SRV_ADMF_MAINT (0x23) leaves CMAINT out: a server started "disabled" that the
# server-state file or "set server ... state ready|drain" brought back is not in maintenance
# (and takes traffic), though CMAINT stays set. Reading it as maintenance skipped its drain.
MAINT_MASK = ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT
DRAIN_MASK = ADMF_FDRAIN | ADMF_IDRAIN

# Everything we put in a command comes from our own names and addresses; this keeps a stray
# ';' or newline (the CLI's command separators) from ever reaching the socket. Used with
# fullmatch: "$" would also match before a trailing newline, the very thing to keep out.
_SAFE_WORD = re.compile(r"[A-Za-z0-9._:/@%-]+")


class HAProxyError(LocalVMSSError):
    """HAProxy refused or failed a command; the message says what we were doing and its reply."""

    code = "LoadBalancerError"


class HAProxyUnavailable(TemporaryError):
    """The admin or master socket does not answer (HAProxy stopped, starting or reloading)."""

    code = "LoadBalancerUnavailable"


def _check_words(cmd: str) -> None:
    for word in cmd.split(" "):
        if word and not _SAFE_WORD.fullmatch(word):
            raise HAProxyError(f"refusing to send unsafe word {word!r} to HAProxy's runtime API")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def unix_command(path: Path | str, cmd: str, *, timeout_s: float = 5.0, checked: bool = False) -> str:
    """Send one command line and read the reply until HAProxy closes the connection.
    ``checked``: the caller has already checked every word it did not make itself."""
    if not checked:
        _check_words(cmd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise HAProxyUnavailable(f"HAProxy socket {path} does not answer: {exc.strerror}") from None
        sock.sendall(cmd.encode() + b"\n")
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks: list[bytes] = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode("utf-8", "replace")
    except TimeoutError:
        raise HAProxyUnavailable(f"HAProxy socket {path} did not answer {cmd.split()[0]!r} in {timeout_s} s") from None
    except OSError as exc:
        raise HAProxyUnavailable(f"HAProxy socket {path} failed during {cmd.split()[0]!r}: {exc}") from None
    finally:
        sock.close()


def parse_stat_csv(text: str) -> list[dict[str, str]]:
    """``show stat`` CSV (header starts with '# ') into one dict per row."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    header = lines[0][2:].rstrip(",").split(",")
    rows = []
    for rec in csv.reader(io.StringIO("\n".join(lines[1:]))):
        rows.append({k: (rec[i] if i < len(rec) else "") for i, k in enumerate(header) if k})
    return rows


def parse_servers_state(text: str) -> list[dict[str, str]]:
    """``show servers state``: version line, '# ' header, space-separated rows."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header: list[str] = []
    rows = []
    for ln in lines:
        if ln.startswith("#"):
            header = ln[1:].split()
            continue
        if not header:
            continue  # the format version line
        values = ln.split()
        rows.append(dict(zip(header, values, strict=False)))
    return rows


def admin_state_of(mask: int) -> AdminState:
    """Collapse HAProxy's admin-state mask into the three states we set, as HAProxy itself reads
    it: maintenance is FMAINT, IMAINT or RMAINT (CMAINT alone is not), then drain."""
    if mask & MAINT_MASK:
        return "maint"
    if mask & DRAIN_MASK:
        return "drain"
    return "ready"


@dataclass(frozen=True)
class ServerRow:
    """One server of ``show servers state``, typed."""

    backend: str
    server: str
    server_id: int
    address: str
    port: int
    op_state: int
    admin_mask: int

    @property
    def admin_state(self) -> AdminState:
        return admin_state_of(self.admin_mask)

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> ServerRow:
        return cls(
            backend=d["be_name"],
            server=d["srv_name"],
            server_id=int(d["srv_id"]),
            address=d["srv_addr"],
            port=int(d.get("srv_port", "0") or 0),
            op_state=int(d["srv_op_state"]),
            admin_mask=int(d["srv_admin_state"]),
        )


class RuntimeClient:
    """Commands of the admin socket (``stats socket ... level admin``) that the LB needs."""

    def __init__(self, socket_path: Path | str, *, timeout_s: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s

    def command(self, cmd: str) -> str:
        return unix_command(self.socket_path, cmd, timeout_s=self.timeout_s)

    def _action(self, cmd: str, doing: str, ok: Callable[[str], bool] = lambda out: not out.strip()) -> str:
        out = self.command(cmd)
        if not ok(out):
            raise HAProxyError(f"{doing}: HAProxy said {_one_line(out)!r}")
        return out

    # -- servers ------------------------------------------------------------------------------
    def add_server(self, backend: str, server: str, args: Sequence[str]) -> None:
        """``add server``: the new server starts in maintenance with checks off (by design)."""
        self._action(
            f"add server {backend}/{server} {' '.join(args)}",
            f"adding server {server} to {backend}",
            lambda out: "New server registered" in out,
        )

    def enable_health(self, backend: str, server: str) -> None:
        self._action(f"enable health {backend}/{server}", f"enabling health checks of {backend}/{server}")

    def set_state(self, backend: str, server: str, state: AdminState) -> None:
        if state not in ("ready", "drain", "maint"):
            raise HAProxyError(f"setting {backend}/{server}: unknown state {state!r}")
        self._action(f"set server {backend}/{server} state {state}", f"setting {backend}/{server} to {state}")

    def set_addr(self, backend: str, server: str, address: str, port: int) -> None:
        self._action(
            f"set server {backend}/{server} addr {address} port {port}",
            f"changing the address of {backend}/{server} to {address}:{port}",
            lambda out: "changed" in out or "no need" in out.lower() or not out.strip(),
        )

    def shutdown_sessions(self, backend: str, server: str) -> None:
        self._action(f"shutdown sessions server {backend}/{server}", f"closing sessions of {backend}/{server}")

    def del_server(self, backend: str, server: str) -> None:
        """``del server``: HAProxy requires maintenance and no connections (else it refuses)."""
        self._action(
            f"del server {backend}/{server}",
            f"deleting server {backend}/{server}",
            lambda out: "Server deleted" in out,
        )

    # -- reading ------------------------------------------------------------------------------
    def show_servers_state(self, backend: str | None = None) -> list[dict[str, str]]:
        cmd = "show servers state" + (f" {backend}" if backend else "")
        out = self.command(cmd)
        if out.strip() and not out.lstrip().startswith("1"):
            raise HAProxyError(f"reading server states: HAProxy said {_one_line(out)!r}")
        return parse_servers_state(out)

    def servers(self, backend: str | None = None) -> list[ServerRow]:
        return [ServerRow.from_dict(d) for d in self.show_servers_state(backend)]

    def show_stat(self) -> list[dict[str, str]]:
        out = self.command("show stat")
        if out.strip() and not out.startswith("# "):
            raise HAProxyError(f"reading statistics: HAProxy said {_one_line(out)!r}")
        return parse_stat_csv(out)

    def show_info(self) -> dict[str, str]:
        info = {}
        for line in self.command("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                info[key.strip()] = value.strip()
        return info

    def server_sessions(self, backend: str, server: str) -> int:
        """Current sessions (``scur``) of one server; 0 if it is gone."""
        for row in self.show_stat():
            if row.get("pxname") == backend and row.get("svname") == server:
                return int(row.get("scur") or 0)
        return 0

    def ping(self) -> int:
        """The answering worker's pid; raises HAProxyUnavailable if nobody answers."""
        info = self.show_info()
        try:
            return int(info["Pid"])
        except (KeyError, ValueError):
            raise HAProxyUnavailable(f"HAProxy socket {self.socket_path} gave no pid in 'show info'") from None


@dataclass
class ProcInfo:
    """The master CLI's ``show proc``."""

    master_pid: int
    reloads: int
    failed_reloads: int
    workers: list[int] = field(default_factory=list)
    old_workers: list[int] = field(default_factory=list)


_MASTER_LINE = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]")
_WORKER_LINE = re.compile(r"^(\d+)\s+worker\s+")


def parse_show_proc(text: str) -> ProcInfo:
    info: ProcInfo | None = None
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            section = s.lower()
            continue
        m = _MASTER_LINE.match(s)
        if m:
            info = ProcInfo(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            continue
        w = _WORKER_LINE.match(s)
        if w and info is not None:
            (info.old_workers if "old" in section else info.workers).append(int(w.group(1)))
    if info is None:
        raise HAProxyError(f"reading the master's process list: unexpected reply {_one_line(text)!r}")
    return info


class MasterClient:
    """The master CLI (``-S``): process list and reload."""

    def __init__(self, socket_path: Path | str, *, timeout_s: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s

    def command(self, cmd: str) -> str:
        return unix_command(self.socket_path, cmd, timeout_s=self.timeout_s)

    def show_proc(self) -> ProcInfo:
        return parse_show_proc(self.command("show proc"))

    def worker_command(self, pid: int, cmd: str) -> str:
        """A runtime-API command for one worker, also a leaving one (``@!<pid>``): after a
        reload the old worker still carries its open connections and only it can count them."""
        _check_words(cmd)
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise HAProxyError(f"not a worker pid: {pid!r}")
        return unix_command(self.socket_path, f"@!{pid} {cmd}", timeout_s=self.timeout_s, checked=True)

    def stats_of_every_worker(self) -> list[list[dict[str, str]]]:
        """``show stat`` of the current and every old worker (one that exits meanwhile is skipped)."""
        info = self.show_proc()
        out = []
        for pid in [*info.workers, *info.old_workers]:
            try:
                out.append(parse_stat_csv(self.worker_command(pid, "show stat")))
            except HAProxyUnavailable:
                continue
        return out

    def reload(self) -> None:
        """Ask the master to re-execute itself with the config file; it closes the connection."""
        try:
            self.command("reload")
        except HAProxyUnavailable as exc:
            # The master closes (or resets) the CLI connection as it re-executes.
            if "does not answer" in exc.message:
                raise
