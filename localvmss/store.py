"""Durable state in SQLite (WAL, synchronous=FULL): the only writer of what localvmss knows.

A write that the API acknowledged is committed before the answer goes out, so a crash at any
moment loses nothing acknowledged. Instance ids come from a per-set counter bumped in the same
transaction that creates the instance record, so ids are monotonic and never reused, and a
record always exists before any libvirt object is made for it (the reconciler deletes libvirt
objects that have no record: no orphans).

What is asked for and what is observed are written apart, as Kubernetes controllers do: every
change of intent (``update_instance``: the API, a scale-in, an upgrade, a repair) bumps the row's
``generation``; observations (``record_status``: a worker, the health monitor) name the
generation they acted on and are dropped when it moved on meanwhile, so a stale snapshot never
overwrites newer intent. SQLite failures (corrupt, full, read-only) become one ``StoreError``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from localvmss.errors import Conflict, NotFound, ResourceGroupNotFound, StoreError
from localvmss.model import DEFAULT_RESOURCE_GROUP, OBJECT_PREFIX, OrchestrationMode, PowerState, ProvisioningState
from localvmss.spec import MODEL_FIELDS, ScaleSetSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS scale_sets (
    name TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    model TEXT NOT NULL,            -- JSON: the VM configuration model and policies
    capacity INTEGER NOT NULL,
    model_version INTEGER NOT NULL DEFAULT 1,
    next_instance_id INTEGER NOT NULL DEFAULT 0,
    provisioning_state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    deleting INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    repairs_state TEXT NOT NULL DEFAULT '{}',  -- JSON: the automatic repairs service (suspended?)
    resource_group TEXT NOT NULL DEFAULT 'default' COLLATE NOCASE,
    arm TEXT NOT NULL DEFAULT '{}'             -- JSON: location, tags and the request's fields kept as given
);
CREATE TABLE IF NOT EXISTS resource_groups (
    name TEXT PRIMARY KEY COLLATE NOCASE,       -- Azure's group names compare case-insensitively
    location TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS operations (     -- ARM's long-running operations (Azure-AsyncOperation)
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    scale_set TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '{}',      -- JSON: what it waits for (instance ids, a VM name, ...)
    status TEXT NOT NULL,                   -- InProgress | Succeeded | Failed | Canceled
    error TEXT,                             -- JSON: ARM's error body when it failed
    started_at REAL NOT NULL,
    ended_at REAL
);
CREATE TABLE IF NOT EXISTS instances (
    scale_set TEXT NOT NULL REFERENCES scale_sets(name),
    instance_id INTEGER NOT NULL,
    vm_name TEXT,                   -- Flexible mode: the standalone VM resource name
    host TEXT NOT NULL,
    zone TEXT,
    fault_domain INTEGER NOT NULL,
    update_domain INTEGER NOT NULL,
    mac TEXT NOT NULL,
    ip TEXT NOT NULL,
    nat_port INTEGER,
    model_version INTEGER NOT NULL,
    desired_power TEXT NOT NULL,    -- running | stopped | deallocated
    provisioning_state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    health TEXT NOT NULL DEFAULT 'unknown',
    protect_scale_in INTEGER NOT NULL DEFAULT 0,
    protect_actions INTEGER NOT NULL DEFAULT 0,
    reimage_generation INTEGER NOT NULL DEFAULT 0,   -- bumped to ask for a reimage
    applied_reimage INTEGER NOT NULL DEFAULT 0,
    restart_generation INTEGER NOT NULL DEFAULT 0,
    applied_restart INTEGER NOT NULL DEFAULT 0,
    skip_shutdown INTEGER NOT NULL DEFAULT 0,        -- the pending power-off skips the guest shutdown
    overrides TEXT NOT NULL DEFAULT '{}',            -- JSON: per-VM settings (Flexible)
    created_at REAL NOT NULL,
    ready_at REAL,
    boot_started_at REAL,           -- when the current (re)boot began: the boot timeout counts from it
    generation INTEGER NOT NULL DEFAULT 0,           -- bumped by every change of intent
    redeploy_generation INTEGER NOT NULL DEFAULT 0,  -- bumped to ask for a redeploy (another host)
    applied_redeploy INTEGER NOT NULL DEFAULT 0,
    redeploy_target TEXT,                            -- the host a redeploy is copying the disk to
    replaced_by INTEGER,                             -- a surge upgrade's new instance taking its place
    delete_reason TEXT,                              -- 'scale-in' when a scale-in chose it (forceDeletion)
    overprovisioned INTEGER NOT NULL DEFAULT 0,      -- an overprovisioning extra: out of rotation until adopted
    standby_state TEXT,             -- a standby-pool instance: Running | Paused | Saved (NULL: a member)
    standby_at REAL,                -- when it reached its standby state (NULL: not yet)
    origin TEXT NOT NULL DEFAULT '', -- how it came to serve: cold boot, standby pool (Paused), ...
    prepared_at REAL,               -- a resumed or cloned member: when its clock/identity were set
    PRIMARY KEY (scale_set, instance_id)
);
CREATE TABLE IF NOT EXISTS scheduled_events (  -- Azure's Scheduled Events (Terminate notices), per instance
    event_id TEXT PRIMARY KEY,
    scale_set TEXT NOT NULL,
    instance_id INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    resource TEXT NOT NULL,          -- the computer name the event is about
    created_at REAL NOT NULL,
    not_before REAL NOT NULL,
    acknowledged_at REAL,
    UNIQUE (scale_set, instance_id, event_type)
);
CREATE TABLE IF NOT EXISTS uploads (         -- volumes whose upload finished (a partial one is not here)
    host TEXT NOT NULL,
    volume TEXT NOT NULL,
    digest TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (host, volume)
);
CREATE UNIQUE INDEX IF NOT EXISTS instances_vm_name ON instances(vm_name) WHERE vm_name IS NOT NULL;
-- an address or NAT port is looked up one at a time when a new instance gets one
CREATE INDEX IF NOT EXISTS instances_host_ip ON instances(host, ip);
CREATE INDEX IF NOT EXISTS instances_nat_port ON instances(scale_set, nat_port);
CREATE TABLE IF NOT EXISTS images (
    name TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    source_dir TEXT NOT NULL,
    imported_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS hosts (
    name TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    zone TEXT,
    domain_type TEXT,
    accel_reason TEXT NOT NULL DEFAULT '',
    available INTEGER NOT NULL DEFAULT 1,
    message TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS added_hosts (   -- hosts added through the API (config-file hosts are not here)
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS autoscale (
    scale_set TEXT PRIMARY KEY,
    setting TEXT NOT NULL,
    last_action_at REAL,
    state TEXT NOT NULL DEFAULT '{}',
    arm TEXT NOT NULL DEFAULT '{}'  -- JSON: the ARM resource's location, tags and kept fields
);
CREATE TABLE IF NOT EXISTS model_versions (  -- every VM model a set has had: rollback and history
    scale_set TEXT NOT NULL,
    version INTEGER NOT NULL,
    model TEXT NOT NULL,            -- JSON: the whole stored model of that version
    created_at REAL NOT NULL,
    actor TEXT NOT NULL DEFAULT '',
    changes TEXT NOT NULL DEFAULT '[]',  -- JSON: what changed from the version before, in words
    PRIMARY KEY (scale_set, version)
);
CREATE TABLE IF NOT EXISTS rollouts (   -- rolling upgrades: one row each, its progress as JSON
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scale_set TEXT NOT NULL,
    from_version INTEGER NOT NULL,
    to_version INTEGER NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    actor TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS templates (  -- warm templates: a saved guest per set, model version and host
    scale_set TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    host TEXT NOT NULL,
    pool TEXT NOT NULL,
    state_volume TEXT NOT NULL,
    disk_volume TEXT NOT NULL,
    saved_xml TEXT NOT NULL DEFAULT '',
    builder INTEGER NOT NULL,          -- the hidden instance it is (being) saved from
    ready INTEGER NOT NULL DEFAULT 0,  -- 0: being made (its volumes may be partial)
    created_at REAL NOT NULL,
    PRIMARY KEY (scale_set, model_version, host)
);
CREATE TABLE IF NOT EXISTS activity_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scale_set TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',
    instance_ids TEXT NOT NULL DEFAULT '[]'
);
"""


@dataclass
class ScaleSetRow:
    """A scale set as stored: enums for its states and its model parsed once, here."""

    name: str
    mode: OrchestrationMode
    model: dict[str, Any]  # as stored (JSON); ``spec`` is the same, parsed
    capacity: int
    model_version: int
    next_instance_id: int
    provisioning_state: ProvisioningState
    message: str
    deleting: bool
    created_at: float
    updated_at: float
    spec: ScaleSetSpec
    repairs_state: dict[str, Any] = field(default_factory=dict)  # localvmss.repairs.RepairsState, as JSON
    resource_group: str = DEFAULT_RESOURCE_GROUP
    arm: dict[str, Any] = field(default_factory=dict)  # location, tags, fields kept as given (echoed)


@dataclass
class ResourceGroupRow:
    name: str
    location: str
    tags: dict[str, str]
    created_at: float


@dataclass
class OperationRow:
    """A long-running ARM operation: its status is worked out from the state it waits for until
    it ends (``localvmss.operations``), then recorded here so later reads say the same."""

    id: str
    kind: str
    scale_set: str
    target: dict[str, Any]
    status: str
    error: dict[str, Any] | None
    started_at: float
    ended_at: float | None


@dataclass
class InstanceRow:
    scale_set: str
    instance_id: int
    host: str
    fault_domain: int
    update_domain: int
    mac: str
    ip: str
    model_version: int
    desired_power: PowerState  # running, stopped or deallocated
    provisioning_state: ProvisioningState
    created_at: float
    vm_name: str | None = None
    zone: str | None = None
    nat_port: int | None = None
    message: str = ""
    health: str = "unknown"
    protect_scale_in: bool = False
    protect_actions: bool = False
    reimage_generation: int = 0
    applied_reimage: int = 0
    restart_generation: int = 0
    applied_restart: int = 0
    skip_shutdown: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    ready_at: float | None = None
    boot_started_at: float | None = None
    generation: int = 0
    redeploy_generation: int = 0
    applied_redeploy: int = 0
    redeploy_target: str | None = None
    replaced_by: int | None = None
    delete_reason: str | None = None
    overprovisioned: bool = False
    standby_state: str | None = None
    standby_at: float | None = None
    origin: str = ""
    prepared_at: float | None = None

    @property
    def domain_name(self) -> str:
        return f"{OBJECT_PREFIX}{self.scale_set}-{self.instance_id}"


@dataclass
class TemplateRow:
    """A warm template (``localvmss.virt.template``): recorded before its volumes are made, so a
    crash leaves a row to clean up, never volumes nobody knows of."""

    scale_set: str
    model_version: int
    host: str
    pool: str
    state_volume: str
    disk_volume: str
    saved_xml: str
    builder: int
    ready: bool
    created_at: float


@dataclass
class ModelVersionRow:
    scale_set: str
    version: int
    model: dict[str, Any]
    created_at: float
    actor: str
    changes: list[str]


@dataclass
class RolloutRow:
    id: int
    scale_set: str
    from_version: int
    to_version: int
    status: str
    started_at: float
    ended_at: float | None
    actor: str
    reason: str
    state: dict[str, Any]


@dataclass
class HostRow:
    name: str
    uri: str
    zone: str | None
    domain_type: str | None
    accel_reason: str
    available: bool
    message: str


@dataclass
class ScheduledEventRow:
    """One scheduled event of an instance (columns in table order: ``schedule_event`` relies on it)."""

    event_id: str
    scale_set: str
    instance_id: int
    event_type: str
    resource: str
    created_at: float
    not_before: float
    acknowledged_at: float | None = None


@dataclass
class ActivityRow:
    id: int
    scale_set: str
    at: float
    kind: str
    message: str
    details: dict[str, Any]
    instance_ids: list[int] = field(default_factory=list)


_INSTANCE_COLUMNS = [f.name for f in fields(InstanceRow)]
_OVERRIDES_INDEX = _INSTANCE_COLUMNS.index("overrides")
_INSERT_INSTANCE_SQL = (
    f"INSERT INTO instances ({', '.join(_INSTANCE_COLUMNS)}) VALUES ({', '.join('?' for _ in _INSTANCE_COLUMNS)})"
)
# What observers (workers, the health monitor) may write: never what the user asked for.
STATUS_COLUMNS = frozenset(
    {
        "health",
        "message",
        "provisioning_state",
        "ready_at",
        "boot_started_at",
        "applied_reimage",
        "applied_restart",
        "skip_shutdown",
        "redeploy_target",
        "standby_at",
        "origin",
        "prepared_at",
    }
)


def _check_columns(changes: dict[str, Any]) -> None:
    """Column names come from our code, never from input; refuse anything else loudly."""
    unknown = set(changes) - set(_INSTANCE_COLUMNS)
    if unknown:
        raise ValueError(f"unknown instance columns {sorted(unknown)}")


def _schema_columns() -> dict[str, dict[str, str]]:
    """table -> column -> its definition, read from SCHEMA by SQLite itself (an in-memory copy)."""
    mem = sqlite3.connect(":memory:")
    try:
        mem.executescript(SCHEMA)
        tables = [r[0] for r in mem.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out: dict[str, dict[str, str]] = {}
        for table in tables:
            out[table] = {}
            for _cid, name, ctype, notnull, default, _pk in mem.execute(f"PRAGMA table_info({table})"):
                definition = ctype + (" NOT NULL" if notnull else "")
                if default is not None:
                    definition += f" DEFAULT {default}"
                out[table][name] = definition
        return out
    finally:
        mem.close()


class _InstancesRead:
    """Every instance row as read after ``writes`` writes, and (made when first asked) the rows
    of each set: a pass asks for each set's several times."""

    def __init__(self, writes: int, rows: list[InstanceRow]) -> None:
        self.writes = writes
        self.rows = rows
        self._by_set: dict[str, list[InstanceRow]] | None = None

    def of_set(self, scale_set: str) -> list[InstanceRow]:
        by_set = self._by_set
        if by_set is None:
            by_set = {}
            for row in self.rows:  # ordered by set and id: each set's list stays in id order
                by_set.setdefault(row.scale_set, []).append(row)
            self._by_set = by_set
        return by_set.get(scale_set, [])


class Store:
    """Thread-safe access to the state database; one connection, one writer at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._closed = False
        # Counts every write that may have given addresses or NAT ports back (an instance deleted
        # or moved, a write rolled back): what the allocator keeps in memory is rebuilt after one.
        self.releases = 0
        # Reads kept until the next write (``instances``) and models parsed once (``_set_row``).
        # A transaction that changed no row (a round of health probes with nothing new) is no
        # write: what was read before it is still current.
        self._writes = 0
        self._writing = False
        self._changes_before = 0  # the connection's total_changes when the transaction began
        self._savepoints = 0  # nesting depth of savepoints inside the current transaction
        self._instances_read: _InstancesRead | None = None
        self._images_read: list[tuple[str, str, str]] | None = None  # (name, manifest JSON, source)
        self._specs: dict[str, ScaleSetSpec] = {}
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._add_missing_columns()
            # The column default's group, so that sets (and older stores' sets) always have one.
            self._db.execute(
                "INSERT OR IGNORE INTO resource_groups (name, location, tags, created_at) VALUES (?, 'local', '{}', ?)",
                (DEFAULT_RESOURCE_GROUP, time.time()),
            )
        except sqlite3.Error as exc:
            raise self._error("opening", exc) from None

    def _error(self, doing: str, exc: sqlite3.Error) -> StoreError:
        """One line for a person: what failed, why, and what to do."""
        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text):
            hint = "it is corrupt: restore a backup (localvmssd --backup-db makes one) or move it away"
        elif "full" in text:
            hint = "the disk is full: free space in its directory"
        elif "readonly" in text or "read-only" in text:
            hint = "it is read-only: check the file's permissions and the file system"
        else:
            hint = "see 'localvmssd --check-db'"
        return StoreError(f"state database {self.path}: {doing} failed ({text}); {hint}")

    def check(self) -> list[str]:
        """SQLite's own integrity check: [] when the database is sound, else its complaints."""
        try:
            rows = self._query("PRAGMA integrity_check")
        except StoreError as exc:
            return [exc.message]
        problems = [str(r[0]) for r in rows]
        return [] if problems == ["ok"] else problems

    def backup(self, target: str | Path) -> None:
        """A consistent copy while the daemon runs (SQLite's online backup), written then renamed."""
        target = Path(target)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            with self._lock:
                out = sqlite3.connect(str(tmp))
                try:
                    self._db.backup(out)
                finally:
                    out.close()
            tmp.replace(target)
        except sqlite3.Error as exc:
            tmp.unlink(missing_ok=True)
            raise self._error(f"backing up to {target}", exc) from None

    def _add_missing_columns(self) -> None:
        """A store made by an older localvmss gets the columns added since (with their defaults):
        ``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it was."""
        wanted = _schema_columns()
        for table, columns in wanted.items():
            have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, definition in columns.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; everything inside is applied whole or not at all.

        Inside another transaction of this thread it is a savepoint of that one: undone alone
        when it fails, committed with the outer one (many small writes, one commit)."""
        with self._lock:
            self._check_open()
            if self._writing:  # the lock is reentrant: only this thread's outer transaction
                with self._savepoint() as db:
                    yield db
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error("starting a write", exc) from None
            self._writing = True
            self._changes_before = self._db.total_changes
            try:
                yield self._db
            except BaseException as exc:
                self.releases += 1
                self._written()
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.Error):
                    raise self._error("writing", exc) from None
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self.releases += 1
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise self._error("committing", exc) from None
            finally:
                self._written()

    @contextmanager
    def _savepoint(self) -> Iterator[sqlite3.Connection]:
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        try:
            self._db.execute(f"SAVEPOINT {name}")
            try:
                yield self._db
            except BaseException as exc:
                self.releases += 1
                self._db.execute(f"ROLLBACK TO {name}")
                self._db.execute(f"RELEASE {name}")
                if isinstance(exc, sqlite3.Error):
                    raise self._error("writing", exc) from None
                raise
            self._db.execute(f"RELEASE {name}")
        except sqlite3.Error as exc:
            raise self._error("writing", exc) from None
        finally:
            self._savepoints -= 1

    def _written(self) -> None:
        """A transaction ended: reads kept from before it are no longer current if it changed
        (or rolled back) any row."""
        self._writing = False
        if self._db.total_changes != self._changes_before:
            self._writes += 1

    def revision(self) -> int:
        """A number that changes whenever a transaction has changed the database: a reader
        outside a transaction that keeps what it made of the rows (the exporter) makes it again
        when this differs. Read it before the rows, never after."""
        return self._writes

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"state database {self.path} is closed (the daemon is stopping)")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._check_open()
            try:
                return list(self._db.execute(sql, args))
            except sqlite3.Error as exc:
                raise self._error("reading", exc) from None

    # -- scale sets -------------------------------------------------------------------------
    def _set_row(self, row: sqlite3.Row) -> ScaleSetRow:
        data = dict(row)
        text = data["model"]
        data["model"] = json.loads(text)
        data["repairs_state"] = json.loads(data.get("repairs_state") or "{}")
        data["arm"] = json.loads(data.get("arm") or "{}")
        data["deleting"] = bool(data["deleting"])
        data["mode"] = OrchestrationMode(data["mode"])
        data["provisioning_state"] = ProvisioningState(data["provisioning_state"])
        try:
            spec = self._specs.get(text)
            data["spec"] = spec if spec is not None else self._parse_spec(text, data["model"])
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise StoreError(
                f"state database {self.path}: the stored model of scale set {data['name']!r} does not parse "
                f"({where}: {first.get('msg')}); restore a backup or fix the row"
            ) from None
        return ScaleSetRow(**data)

    def _parse_spec(self, text: str, model: dict[str, Any]) -> ScaleSetSpec:
        """A stored model validated once per distinct text, not on every read of its row (every
        pass and every worker reads them). Shared by every reader: never change one in place."""
        spec = ScaleSetSpec.model_validate(model)
        with self._lock:
            if len(self._specs) >= 1024:
                self._specs.clear()  # old versions of models; a few parses more
            self._specs[text] = spec
        return spec

    def insert_scale_set(
        self,
        name: str,
        mode: str,
        model: dict[str, Any],
        capacity: int,
        state: str,
        actor: str = "",
        *,
        resource_group: str = DEFAULT_RESOURCE_GROUP,
        arm: dict[str, Any] | None = None,
    ) -> None:
        now = time.time()
        with self.transaction() as db:
            held = db.execute("SELECT resource_group FROM scale_sets WHERE name=?", (name,)).fetchone()
            if held:
                where = "" if held[0].lower() == resource_group.lower() else f" in resource group {held[0]!r}"
                raise Conflict(f"scale set {name!r} already exists{where}: set names are unique on a localvmss daemon")
            group = db.execute("SELECT name FROM resource_groups WHERE name=?", (resource_group,)).fetchone()
            if group is None:
                raise ResourceGroupNotFound(f"Resource group {resource_group!r} could not be found.")
            db.execute(
                "INSERT INTO scale_sets (name, mode, model, capacity, provisioning_state, created_at, updated_at,"
                " resource_group, arm) VALUES (?,?,?,?,?,?,?,?,?)",
                (name, mode, json.dumps(model), capacity, state, now, now, group[0], json.dumps(arm or {})),
            )
            db.execute("DELETE FROM model_versions WHERE scale_set=?", (name,))  # a former set of that name
            db.execute("DELETE FROM rollouts WHERE scale_set=?", (name,))
            _insert_model_version(db, name, 1, model, actor, ["created"])

    def update_model(
        self, name: str, model: dict[str, Any], capacity: int, *, new_version: bool, actor: str, changes: list[str]
    ) -> int:
        """A PUT of the set: its model and capacity in one transaction, and when the VM model
        changed a new version (one above every version the set has had, so numbers never
        repeat even after a rollback) with who changed what. Returns the set's model version."""
        with self.transaction() as db:
            row = db.execute("SELECT model_version FROM scale_sets WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"scale set {name!r} does not exist")
            version = int(row["model_version"])
            if new_version:
                top = db.execute("SELECT MAX(version) AS v FROM model_versions WHERE scale_set=?", (name,)).fetchone()
                version = max(version, int(top["v"] or 0)) + 1
                _insert_model_version(db, name, version, model, actor, changes)
            db.execute(
                "UPDATE scale_sets SET model=?, capacity=?, model_version=?, updated_at=? WHERE name=?",
                (json.dumps(model), capacity, version, time.time(), name),
            )
        return version

    def update_set_policy(self, name: str, model: dict[str, Any]) -> None:
        """A change of the set's policies alone (no VM model field, no capacity): no new version,
        and a concurrent scale keeps its capacity."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE scale_sets SET model=?, updated_at=? WHERE name=?", (json.dumps(model), time.time(), name)
            )
            if cur.rowcount == 0:
                raise NotFound(f"scale set {name!r} does not exist")

    # -- warm templates ---------------------------------------------------------------------
    def templates(self, scale_set: str | None = None) -> list[TemplateRow]:
        where, args = ("WHERE scale_set=?", (scale_set,)) if scale_set else ("", ())
        rows = self._query(f"SELECT * FROM templates {where} ORDER BY scale_set, model_version, host", args)
        return [TemplateRow(**{**dict(r), "ready": bool(r["ready"])}) for r in rows]

    def put_template(self, row: TemplateRow) -> None:
        """Record a template (its volumes are made after; ``ready`` once they are whole)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO templates (scale_set, model_version, host, pool, state_volume, disk_volume, "
                "saved_xml, builder, ready, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.scale_set,
                    row.model_version,
                    row.host,
                    row.pool,
                    row.state_volume,
                    row.disk_volume,
                    row.saved_xml,
                    row.builder,
                    int(row.ready),
                    row.created_at,
                ),
            )

    def template_ready(self, scale_set: str, model_version: int, host: str, saved_xml: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE templates SET ready=1, saved_xml=? WHERE scale_set=? AND model_version=? AND host=?",
                (saved_xml, scale_set, model_version, host),
            )

    def delete_template_row(self, scale_set: str, model_version: int, host: str) -> None:
        with self.transaction() as db:
            db.execute(
                "DELETE FROM templates WHERE scale_set=? AND model_version=? AND host=?",
                (scale_set, model_version, host),
            )

    def model_versions(self, name: str) -> list[ModelVersionRow]:
        rows = self._query("SELECT * FROM model_versions WHERE scale_set=? ORDER BY version", (name,))
        return [
            ModelVersionRow(
                r["scale_set"],
                r["version"],
                json.loads(r["model"]),
                r["created_at"],
                r["actor"],
                json.loads(r["changes"]),
            )
            for r in rows
        ]

    def model_version(self, name: str, version: int) -> ModelVersionRow | None:
        return next((v for v in self.model_versions(name) if v.version == version), None)

    def revert_model(self, name: str, version: int, reason: str) -> None:
        """A rollback of the whole set: its VM model becomes that of ``version`` again (same
        number: instances still on it are current). Policies and capacity stay as they are."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT model FROM model_versions WHERE scale_set=? AND version=?", (name, version)
            ).fetchone()
            if row is None:
                raise NotFound(f"scale set {name!r} has no stored model version {version}")
            current = db.execute("SELECT model FROM scale_sets WHERE name=?", (name,)).fetchone()
            model = json.loads(current["model"])
            model.update({k: v for k, v in json.loads(row["model"]).items() if k in MODEL_FIELDS})
            db.execute(
                "UPDATE scale_sets SET model=?, model_version=?, updated_at=? WHERE name=?",
                (json.dumps(model), version, time.time(), name),
            )
            _insert_activity(db, name, "rollback", reason, None, [])

    # -- rollouts ---------------------------------------------------------------------------
    def insert_rollout(
        self, name: str, from_version: int, to_version: int, status: str, actor: str, state: dict[str, Any]
    ) -> RolloutRow:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO rollouts (scale_set, from_version, to_version, status, started_at, actor, state)"
                " VALUES (?,?,?,?,?,?,?)",
                (name, from_version, to_version, status, time.time(), actor, json.dumps(state)),
            )
            rollout_id = int(cur.lastrowid or 0)
        found = self.rollouts(name, rollout_id=rollout_id)
        return found[0]

    def update_rollout(self, rollout_id: int, **changes: Any) -> None:
        bad = set(changes) - {"status", "ended_at", "reason", "state"}
        if bad:
            raise ValueError(f"update_rollout cannot write {sorted(bad)}")
        if "state" in changes:
            changes["state"] = json.dumps(changes["state"])
        cols = ", ".join(f"{k}=?" for k in changes)
        with self.transaction() as db:
            db.execute(f"UPDATE rollouts SET {cols} WHERE id=?", (*changes.values(), rollout_id))

    def rollouts(self, name: str, *, rollout_id: int | None = None) -> list[RolloutRow]:
        """The set's rollouts, newest first."""
        sql = "SELECT * FROM rollouts WHERE scale_set=?"
        args: list[Any] = [name]
        if rollout_id is not None:
            sql += " AND id=?"
            args.append(rollout_id)
        rows = self._query(sql + " ORDER BY id DESC", tuple(args))
        return [
            RolloutRow(
                r["id"],
                r["scale_set"],
                r["from_version"],
                r["to_version"],
                r["status"],
                r["started_at"],
                r["ended_at"],
                r["actor"],
                r["reason"],
                json.loads(r["state"]),
            )
            for r in rows
        ]

    def latest_rollout(self, name: str) -> RolloutRow | None:
        found = self.rollouts(name)
        return found[0] if found else None

    def scale_sets(self) -> list[ScaleSetRow]:
        return [self._set_row(r) for r in self._query("SELECT * FROM scale_sets ORDER BY name")]

    def scale_set(self, name: str) -> ScaleSetRow:
        rows = self._query("SELECT * FROM scale_sets WHERE name=?", (name,))
        if not rows:
            raise NotFound(f"scale set {name!r} does not exist")
        return self._set_row(rows[0])

    def record_set_status(self, name: str, **changes: Any) -> None:
        """What the reconciler observed of a set (its provisioning state and message), apart
        from what was asked of it (``update_scale_set``)."""
        bad = set(changes) - {"provisioning_state", "message"}
        if bad:
            raise ValueError(f"record_set_status cannot write intent columns {sorted(bad)}")
        self.update_scale_set(name, **changes)

    def update_scale_set(self, name: str, **changes: Any) -> None:
        """A change of intent (model, capacity, deletion); the API and the autoscaler write it."""
        if "model" in changes:
            changes["model"] = json.dumps(changes["model"])
        changes["updated_at"] = time.time()
        cols = ", ".join(f"{k}=?" for k in changes)
        with self.transaction() as db:
            cur = db.execute(f"UPDATE scale_sets SET {cols} WHERE name=?", (*changes.values(), name))
            if cur.rowcount == 0:
                raise NotFound(f"scale set {name!r} does not exist")

    def change_repairs_state(
        self,
        name: str,
        change: Callable[[dict[str, Any]], tuple[dict[str, Any], str | None] | None],
        instances: Iterable[int] = (),
    ) -> dict[str, Any] | None:
        """Read-modify-write of a set's automatic repairs state (the monitor and the API both
        write it): ``change`` gets the stored JSON and returns (new JSON, activity message or
        None), or None to change nothing. The message becomes a "repair" activity-log entry in
        the same transaction. Returns the new state, or None if unchanged."""
        with self.transaction() as db:
            row = db.execute("SELECT repairs_state FROM scale_sets WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"scale set {name!r} does not exist")
            outcome = change(json.loads(row[0] or "{}"))
            if outcome is None:
                return None
            new, message = outcome
            db.execute("UPDATE scale_sets SET repairs_state=? WHERE name=?", (json.dumps(new), name))
            if message:
                _insert_activity(db, name, "repair", message, None, instances)
            return new

    def delete_scale_set_row(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM activity_log WHERE scale_set=?", (name,))
            db.execute("DELETE FROM model_versions WHERE scale_set=?", (name,))
            db.execute("DELETE FROM rollouts WHERE scale_set=?", (name,))
            db.execute("DELETE FROM autoscale WHERE scale_set=?", (name,))
            db.execute("DELETE FROM scheduled_events WHERE scale_set=?", (name,))
            db.execute("DELETE FROM instances WHERE scale_set=?", (name,))
            db.execute("DELETE FROM scale_sets WHERE name=?", (name,))
            self.releases += 1

    def set_arm(self, name: str, arm: dict[str, Any]) -> None:
        """The set's ARM fields kept as given (location, tags, fields with no local meaning)."""
        self.update_scale_set(name, arm=json.dumps(arm))

    # -- resource groups ----------------------------------------------------------------------
    @staticmethod
    def _group_row(row: sqlite3.Row) -> ResourceGroupRow:
        return ResourceGroupRow(row["name"], row["location"], json.loads(row["tags"]), row["created_at"])

    def resource_groups(self) -> list[ResourceGroupRow]:
        return [self._group_row(r) for r in self._query("SELECT * FROM resource_groups ORDER BY name")]

    def resource_group(self, name: str) -> ResourceGroupRow:
        rows = self._query("SELECT * FROM resource_groups WHERE name=?", (name,))
        if not rows:
            raise ResourceGroupNotFound(f"Resource group {name!r} could not be found.")
        return self._group_row(rows[0])

    def put_resource_group(self, name: str, location: str, tags: dict[str, str]) -> bool:
        """Create or update a group; True if it was created. Its name keeps its first spelling."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE resource_groups SET location=?, tags=? WHERE name=?", (location, json.dumps(tags), name)
            )
            if cur.rowcount:
                return False
            db.execute(
                "INSERT INTO resource_groups (name, location, tags, created_at) VALUES (?,?,?,?)",
                (name, location, json.dumps(tags), time.time()),
            )
            return True

    def ensure_resource_group(self, name: str, location: str) -> None:
        """The daemon's default group exists (made with the store, and kept when configured anew)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO resource_groups (name, location, tags, created_at) VALUES (?,?,?,?)",
                (name, location, "{}", time.time()),
            )
            # Sets made before groups existed live in the column's default group.
            db.execute(
                "INSERT OR IGNORE INTO resource_groups (name, location, tags, created_at)"
                " SELECT DISTINCT resource_group, ?, '{}', ? FROM scale_sets",
                (location, time.time()),
            )

    def delete_resource_group(self, name: str) -> None:
        """Only an empty group goes: its sets must be deleted first (the refusal names them)."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM resource_groups WHERE name=?", (name,)).fetchone() is None:
                raise ResourceGroupNotFound(f"Resource group {name!r} could not be found.")
            held = [
                r[0] for r in db.execute("SELECT name FROM scale_sets WHERE resource_group=? ORDER BY name", (name,))
            ]
            if held:
                raise Conflict(
                    f"resource group {name!r} still holds scale sets {', '.join(held)}: delete them first "
                    "(nothing was deleted)"
                )
            db.execute("DELETE FROM resource_groups WHERE name=?", (name,))

    # -- long-running operations --------------------------------------------------------------
    def insert_operation(self, op: OperationRow, keep_s: float = 86400.0) -> None:
        """A new operation; those that ended more than ``keep_s`` ago go (ARM keeps them a while)."""
        with self.transaction() as db:
            db.execute("DELETE FROM operations WHERE ended_at IS NOT NULL AND ended_at < ?", (op.started_at - keep_s,))
            db.execute(
                "INSERT INTO operations (id, kind, scale_set, target, status, error, started_at, ended_at)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    op.id,
                    op.kind,
                    op.scale_set,
                    json.dumps(op.target),
                    op.status,
                    json.dumps(op.error) if op.error is not None else None,
                    op.started_at,
                    op.ended_at,
                ),
            )

    def operation(self, op_id: str) -> OperationRow:
        rows = self._query("SELECT * FROM operations WHERE id=?", (op_id,))
        if not rows:
            raise NotFound(f"operation {op_id!r} does not exist (operations are kept a day after they end)")
        r = rows[0]
        return OperationRow(
            r["id"],
            r["kind"],
            r["scale_set"],
            json.loads(r["target"]),
            r["status"],
            json.loads(r["error"]) if r["error"] else None,
            r["started_at"],
            r["ended_at"],
        )

    def end_operation(self, op_id: str, status: str, error: dict[str, Any] | None, at: float) -> None:
        """Record how an operation ended; only once (a later call changes nothing)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE operations SET status=?, error=?, ended_at=? WHERE id=? AND ended_at IS NULL",
                (status, json.dumps(error) if error is not None else None, at, op_id),
            )

    # -- instances --------------------------------------------------------------------------
    @staticmethod
    def _instance_row(row: sqlite3.Row) -> InstanceRow:
        data = dict(row)
        data["provisioning_state"] = ProvisioningState(data["provisioning_state"])
        data["desired_power"] = PowerState(data["desired_power"])
        data["overrides"] = json.loads(data["overrides"])
        data["protect_scale_in"] = bool(data["protect_scale_in"])
        data["protect_actions"] = bool(data["protect_actions"])
        data["skip_shutdown"] = bool(data["skip_shutdown"])
        data["overprovisioned"] = bool(data["overprovisioned"])
        return InstanceRow(**data)

    def instances(self, scale_set: str | None = None) -> list[InstanceRow]:
        """Every instance (of ``scale_set``), ordered by set and id. The rows read are kept until
        the next write, so the many readers of one pass (and a pass that changes nothing) build
        them once; they are shared: never change one in place (``dataclasses.replace``)."""
        with self._lock:
            kept = self._instances_read
            if kept is None or kept.writes != self._writes or self._writing:
                rows = self._query("SELECT * FROM instances ORDER BY scale_set, instance_id")
                kept = _InstancesRead(self._writes, [self._instance_row(r) for r in rows])
                if not self._writing:  # inside a transaction: its own writes are not counted yet
                    self._instances_read = kept
            return list(kept.rows if scale_set is None else kept.of_set(scale_set))

    def instance(self, scale_set: str, instance_id: int) -> InstanceRow:
        rows = self._query("SELECT * FROM instances WHERE scale_set=? AND instance_id=?", (scale_set, instance_id))
        if not rows:
            raise NotFound(f"instance {instance_id} of scale set {scale_set!r} does not exist")
        return self._instance_row(rows[0])

    def instance_by_vm_name(self, vm_name: str) -> InstanceRow:
        rows = self._query("SELECT * FROM instances WHERE vm_name=?", (vm_name,))
        if not rows:
            raise NotFound(f"virtual machine {vm_name!r} does not exist")
        return self._instance_row(rows[0])

    @staticmethod
    def allocate_instance_id(db: sqlite3.Connection, scale_set: str) -> int:
        """Next id of the set, inside the caller's transaction."""
        row = db.execute("SELECT next_instance_id FROM scale_sets WHERE name=?", (scale_set,)).fetchone()
        if row is None:
            raise NotFound(f"scale set {scale_set!r} does not exist")
        db.execute("UPDATE scale_sets SET next_instance_id=? WHERE name=?", (row[0] + 1, scale_set))
        return int(row[0])

    @staticmethod
    def instance_count(db: sqlite3.Connection, scale_set: str) -> int:
        """Instances the set holds, inside the caller's transaction (limits checked atomically)."""
        return int(db.execute("SELECT COUNT(*) FROM instances WHERE scale_set=?", (scale_set,)).fetchone()[0])

    @staticmethod
    def vm_name_taken(db: sqlite3.Connection, vm_name: str) -> bool:
        return db.execute("SELECT 1 FROM instances WHERE vm_name=?", (vm_name,)).fetchone() is not None

    @staticmethod
    def addresses_held(db: sqlite3.Connection, host: str) -> tuple[set[str], set[str]]:
        """(IPs held by instances on ``host``, MACs held by any instance), inside the caller's
        transaction, for address allocation."""
        ips = {r[0] for r in db.execute("SELECT ip FROM instances WHERE host=?", (host,))}
        macs = {r[0] for r in db.execute("SELECT mac FROM instances")}
        return ips, macs

    @staticmethod
    def address_held(db: sqlite3.Connection, host: str, ip: str) -> bool:
        """Whether an instance on ``host`` holds ``ip`` (one indexed look-up)."""
        return db.execute("SELECT 1 FROM instances WHERE host=? AND ip=?", (host, ip)).fetchone() is not None

    @staticmethod
    def nat_port_held(db: sqlite3.Connection, scale_set: str, port: int) -> bool:
        """Whether an instance of ``scale_set`` holds NAT port ``port`` (one indexed look-up)."""
        row = db.execute("SELECT 1 FROM instances WHERE scale_set=? AND nat_port=?", (scale_set, port)).fetchone()
        return row is not None

    @staticmethod
    def nat_ports_held(db: sqlite3.Connection, scale_set: str) -> set[int]:
        rows = db.execute("SELECT nat_port FROM instances WHERE scale_set=? AND nat_port IS NOT NULL", (scale_set,))
        return {int(r[0]) for r in rows}

    @staticmethod
    def insert_instance(db: sqlite3.Connection, inst: InstanceRow) -> None:
        # Read field by field: every column is a scalar but overrides, and asdict's deep copy
        # was a fifth of the cost of writing a scale-out's records.
        values = [getattr(inst, c) for c in _INSTANCE_COLUMNS]
        values[_OVERRIDES_INDEX] = json.dumps(inst.overrides)
        db.execute(_INSERT_INSTANCE_SQL, values)

    @classmethod
    def mark_replaced(cls, db: sqlite3.Connection, scale_set: str, instance_id: int, by: int) -> None:
        """Inside the transaction that inserts its surge replacement ``by``: the old instance no
        longer counts toward capacity (it serves on until ``by`` is healthy)."""
        db.execute(
            f"UPDATE instances SET {cls._intent_sql({'replaced_by': by})} WHERE scale_set=? AND instance_id=?",
            (by, scale_set, instance_id),
        )

    def update_instance(self, scale_set: str, instance_id: int, **changes: Any) -> None:
        """A change of intent (what is asked of the instance): bumps its generation, so any
        observation made before it is dropped by ``record_status``."""
        if "overrides" in changes:
            changes["overrides"] = json.dumps(changes["overrides"])
        with self.transaction() as db:
            db.execute(
                f"UPDATE instances SET {self._intent_sql(changes)} WHERE scale_set=? AND instance_id=?",
                (*changes.values(), scale_set, instance_id),
            )

    def record_status(self, scale_set: str, instance_id: int, generation: int | None = None, **changes: Any) -> bool:
        """An observation (health, readiness, what a worker did). With ``generation`` it is
        written only if no intent changed since that generation was read; True if written."""
        if not changes:
            return True
        bad = set(changes) - STATUS_COLUMNS
        if bad:
            raise ValueError(f"record_status cannot write intent columns {sorted(bad)}")
        cols = ", ".join(f"{k}=?" for k in changes)
        where = "scale_set=? AND instance_id=?" + ("" if generation is None else " AND generation=?")
        args: tuple[Any, ...] = (scale_set, instance_id) + (() if generation is None else (generation,))
        with self.transaction() as db:
            cur = db.execute(f"UPDATE instances SET {cols} WHERE {where}", (*changes.values(), *args))
            return cur.rowcount > 0

    def move_instance(
        self,
        scale_set: str,
        instance_id: int,
        host: str,
        address: Callable[[sqlite3.Connection], tuple[str, str]],
        redeploy_generation: int,
        describe: Callable[[str], str],
    ) -> InstanceRow:
        """A redeploy's one durable step: the instance now lives on ``host`` with the MAC and IP
        ``address(db)`` gives (inside this transaction), the redeploy is applied, and it boots
        there (Updating until healthy). Id, name and NAT port stay. The activity-log entry
        (``describe(new_ip)``) is part of the same transaction, so a move is never unlogged
        whatever happens to the clean-up after it."""
        with self.transaction() as db:
            self.releases += 1  # the old address is given back
            mac, ip = address(db)
            db.execute(
                "UPDATE instances SET host=?, mac=?, ip=?, redeploy_target=NULL, applied_redeploy=?,"
                " provisioning_state='Updating', health='unknown', ready_at=NULL, boot_started_at=?"
                " WHERE scale_set=? AND instance_id=?",
                (host, mac, ip, redeploy_generation, time.time(), scale_set, instance_id),
            )
            _insert_activity(db, scale_set, "redeploy", describe(ip), None, [instance_id])
        return self.instance(scale_set, instance_id)

    def delete_instance_row(self, scale_set: str, instance_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM instances WHERE scale_set=? AND instance_id=?", (scale_set, instance_id))
            db.execute("DELETE FROM scheduled_events WHERE scale_set=? AND instance_id=?", (scale_set, instance_id))
            self.releases += 1

    # -- scheduled events (terminate notices) -------------------------------------------------
    def instance_by_address(self, host: str, ip: str) -> InstanceRow:
        """The instance holding ``ip`` on ``host`` (how the metadata service knows who asks)."""
        rows = self._query("SELECT * FROM instances WHERE host=? AND ip=?", (host, ip))
        if not rows:
            raise NotFound(f"no instance has address {ip} on host {host}")
        return self._instance_row(rows[0])

    def scheduled_events(self, scale_set: str, instance_id: int) -> list[ScheduledEventRow]:
        rows = self._query(
            "SELECT * FROM scheduled_events WHERE scale_set=? AND instance_id=? ORDER BY created_at",
            (scale_set, instance_id),
        )
        return [ScheduledEventRow(**dict(r)) for r in rows]

    def schedule_event(self, event: ScheduledEventRow) -> ScheduledEventRow:
        """Record ``event`` unless the instance already has one of its type; returns the one
        that is recorded (so a retried step never sends a second notice)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO scheduled_events (event_id, scale_set, instance_id, event_type, resource,"
                " created_at, not_before, acknowledged_at) VALUES (?,?,?,?,?,?,?,?)",
                tuple(asdict(event).values()),
            )
            row = db.execute(
                "SELECT * FROM scheduled_events WHERE scale_set=? AND instance_id=? AND event_type=?",
                (event.scale_set, event.instance_id, event.event_type),
            ).fetchone()
        return ScheduledEventRow(**dict(row))

    def acknowledge_events(self, scale_set: str, instance_id: int, event_ids: list[str], at: float) -> list[str]:
        """Mark the instance's own events among ``event_ids`` acknowledged (StartRequests);
        another instance's ids change nothing. Returns the ids newly acknowledged."""
        done: list[str] = []
        with self.transaction() as db:
            for event_id in event_ids:
                cur = db.execute(
                    "UPDATE scheduled_events SET acknowledged_at=? WHERE event_id=? AND scale_set=? AND instance_id=?"
                    " AND acknowledged_at IS NULL",
                    (at, event_id, scale_set, instance_id),
                )
                if cur.rowcount:
                    done.append(event_id)
        return done

    # -- images -----------------------------------------------------------------------------
    def put_image(self, name: str, manifest: dict[str, Any], source_dir: str) -> None:
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT OR REPLACE INTO images (name, manifest, source_dir, imported_at) VALUES (?,?,?,?)",
                    (name, json.dumps(manifest), source_dir, time.time()),
                )
        finally:
            self._images_read = None

    def images(self) -> dict[str, tuple[dict[str, Any], str]]:
        """Every image: (manifest, source directory) by name. The rows are read once and kept
        until ``put_image`` (the only writer of the table): a worker making an instance asks
        for its image more than once; each caller gets manifests of its own."""
        with self._lock:
            kept = self._images_read
            if kept is None:
                rows = self._query("SELECT name, manifest, source_dir FROM images ORDER BY name")
                kept = [(r["name"], r["manifest"], r["source_dir"]) for r in rows]
                if not self._writing:  # inside a transaction: it may yet be rolled back
                    self._images_read = kept
        return {name: (json.loads(manifest), source) for name, manifest, source in kept}

    # -- hosts ------------------------------------------------------------------------------
    def put_host(self, row: HostRow) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO hosts (name, uri, zone, domain_type, accel_reason, available, message)"
                " VALUES (?,?,?,?,?,?,?)",
                (row.name, row.uri, row.zone, row.domain_type, row.accel_reason, int(row.available), row.message),
            )

    def hosts(self) -> list[HostRow]:
        return [
            HostRow(**{**dict(r), "available": bool(r["available"])})
            for r in self._query("SELECT * FROM hosts ORDER BY name")
        ]

    def delete_host(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM hosts WHERE name=?", (name,))
            db.execute("DELETE FROM added_hosts WHERE name=?", (name,))

    def put_added_host(self, name: str, config: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO added_hosts (name, config) VALUES (?, ?)", (name, json.dumps(config)))

    def added_hosts(self) -> list[dict[str, Any]]:
        return [json.loads(r["config"]) for r in self._query("SELECT config FROM added_hosts ORDER BY name")]

    # -- uploads ----------------------------------------------------------------------------
    def upload_done(self, host: str, volume: str) -> str | None:
        """The digest recorded when the volume's upload finished, or None if it never did."""
        rows = self._query("SELECT digest FROM uploads WHERE host=? AND volume=?", (host, volume))
        return str(rows[0]["digest"]) if rows else None

    def record_upload(self, host: str, volume: str, digest: str = "") -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO uploads (host, volume, digest) VALUES (?,?,?)", (host, volume, digest))

    def forget_upload(self, host: str, volume: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM uploads WHERE host=? AND volume=?", (host, volume))

    # -- autoscale and activity log ---------------------------------------------------------
    def put_autoscale(self, scale_set: str, setting: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO autoscale (scale_set, setting) VALUES (?, ?) "
                "ON CONFLICT(scale_set) DO UPDATE SET setting=excluded.setting",
                (scale_set, json.dumps(setting)),
            )

    def set_autoscale_arm(self, scale_set: str, arm: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("UPDATE autoscale SET arm=? WHERE scale_set=?", (json.dumps(arm), scale_set))

    def autoscale_arm(self, scale_set: str) -> dict[str, Any]:
        rows = self._query("SELECT arm FROM autoscale WHERE scale_set=?", (scale_set,))
        return json.loads(rows[0]["arm"]) if rows else {}

    def autoscale(self, scale_set: str) -> tuple[dict[str, Any], float | None, dict[str, Any]] | None:
        rows = self._query("SELECT * FROM autoscale WHERE scale_set=?", (scale_set,))
        if not rows:
            return None
        r = rows[0]
        return json.loads(r["setting"]), r["last_action_at"], json.loads(r["state"])

    def autoscale_sets(self) -> list[str]:
        return [r["scale_set"] for r in self._query("SELECT scale_set FROM autoscale ORDER BY scale_set")]

    def update_autoscale_state(
        self, scale_set: str, state: dict[str, Any], last_action_at: float | None = None
    ) -> None:
        with self.transaction() as db:
            if last_action_at is None:
                db.execute("UPDATE autoscale SET state=? WHERE scale_set=?", (json.dumps(state), scale_set))
            else:
                db.execute(
                    "UPDATE autoscale SET state=?, last_action_at=? WHERE scale_set=?",
                    (json.dumps(state), last_action_at, scale_set),
                )

    def delete_autoscale(self, scale_set: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM autoscale WHERE scale_set=?", (scale_set,))

    def log_activity(
        self,
        scale_set: str,
        kind: str,
        message: str,
        details: dict[str, Any] | None = None,
        instances: Iterable[int] = (),
    ) -> None:
        """One activity-log entry; ``instances``: the instance ids it is about (what
        ``activity(instance_id=...)`` filters on)."""
        with self.transaction() as db:
            _insert_activity(db, scale_set, kind, message, details, instances)

    def activity(
        self,
        scale_set: str,
        limit: int = 200,
        *,
        since: float | None = None,
        until: float | None = None,
        kinds: list[str] | None = None,
        instance_id: int | None = None,
    ) -> list[ActivityRow]:
        """The newest ``limit`` entries (oldest first) from ``since`` to ``until`` (inclusive,
        epoch seconds), of ``kinds``, about ``instance_id``."""
        where: list[str] = ["scale_set=?"]
        args: list[Any] = [scale_set]
        about = "EXISTS (SELECT 1 FROM json_each(activity_log.instance_ids) WHERE value=?)"
        for clause, value in (("at>=?", since), ("at<=?", until), (about, instance_id)):
            if value is not None:
                where.append(clause)
                args.append(value)
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)
        sql = f"SELECT * FROM activity_log WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        with self._lock:
            self._check_open()
            rows = self._query(sql, (*args, limit))
        return [
            ActivityRow(
                **{**dict(r), "details": json.loads(r["details"]), "instance_ids": json.loads(r["instance_ids"])}
            )
            for r in reversed(rows)
        ]

    # -- requests (validation helper) --
    @staticmethod
    def _intent_sql(changes: dict[str, Any]) -> str:
        """``col=?, ..., generation=generation+1``: every change of intent bumps the generation."""
        _check_columns(changes)
        return ", ".join([*(f"{k}=?" for k in changes), "generation=generation+1"])

    def update_instances(self, changes: list[tuple[str, int, dict[str, Any]]]) -> None:
        """Several changes of intent (a multi-instance action) in one transaction: every instance
        changes or none does. NotFound if an instance is gone meanwhile."""
        with self.transaction() as db:
            for scale_set, instance_id, values in changes:
                values = dict(values)
                if "overrides" in values:
                    values["overrides"] = json.dumps(values["overrides"])
                cur = db.execute(
                    f"UPDATE instances SET {self._intent_sql(values)} WHERE scale_set=? AND instance_id=?",
                    (*values.values(), scale_set, instance_id),
                )
                if cur.rowcount == 0:
                    raise NotFound(f"instance {instance_id} of scale set {scale_set!r} does not exist")

    def mark_instances_deleting(
        self, scale_set: str, instance_ids: list[int], *, state: str, lower_capacity: bool
    ) -> list[int]:
        """Delete-instances as one read-modify-write: mark the instances ``state`` (Deleting) and
        lower the set's capacity by as many, reading the capacity in the same transaction (two
        concurrent deletes must not both start from the old capacity). Every id must exist and
        none be protected from scale-set actions, else nothing changes (NotFound, Conflict).
        Instances already being deleted are left alone; returns the ids newly marked."""
        with self.transaction() as db:
            row = db.execute("SELECT capacity FROM scale_sets WHERE name=?", (scale_set,)).fetchone()
            if row is None:
                raise NotFound(f"scale set {scale_set!r} does not exist")
            marked: list[int] = []
            for iid in instance_ids:
                inst = db.execute(
                    "SELECT provisioning_state, protect_actions FROM instances WHERE scale_set=? AND instance_id=?",
                    (scale_set, iid),
                ).fetchone()
                if inst is None:
                    raise NotFound(f"instance {iid} of scale set {scale_set!r} does not exist")
                if inst["provisioning_state"] == state or iid in marked:
                    continue
                if inst["protect_actions"]:
                    raise Conflict(f"instance {iid} is protected from scale-set actions; remove the protection first")
                marked.append(iid)
            for iid in marked:
                db.execute(
                    f"UPDATE instances SET {self._intent_sql({'provisioning_state': state})} "
                    "WHERE scale_set=? AND instance_id=?",
                    (state, scale_set, iid),
                )
            if lower_capacity and marked:
                db.execute(
                    "UPDATE scale_sets SET capacity=?, updated_at=? WHERE name=?",
                    (max(int(row["capacity"]) - len(marked), 0), time.time(), scale_set),
                )
            return marked


def _insert_activity(
    db: sqlite3.Connection,
    scale_set: str,
    kind: str,
    message: str,
    details: dict[str, Any] | None,
    instances: Iterable[int],
) -> None:
    db.execute(
        "INSERT INTO activity_log (scale_set, at, kind, message, details, instance_ids) VALUES (?,?,?,?,?,?)",
        (scale_set, time.time(), kind, message, json.dumps(details or {}), json.dumps(sorted(set(instances)))),
    )


def _insert_model_version(
    db: sqlite3.Connection, name: str, version: int, model: dict[str, Any], actor: str, changes: list[str]
) -> None:
    db.execute(
        "INSERT OR REPLACE INTO model_versions (scale_set, version, model, created_at, actor, changes)"
        " VALUES (?,?,?,?,?,?)",
        (name, version, json.dumps(model), time.time(), actor, json.dumps(changes)),
    )
