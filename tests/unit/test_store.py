"""The store: ids never reused, transactions all-or-nothing, state survives reopening."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localvmss.errors import Conflict, NotFound
from localvmss.store import InstanceRow, Store


def _instance(store: Store, db: object, set_name: str) -> int:
    iid = store.allocate_instance_id(db, set_name)  # type: ignore[arg-type]
    store.insert_instance(
        db,  # type: ignore[arg-type]
        InstanceRow(
            set_name,
            iid,
            "h1",
            0,
            0,
            f"52:54:00:00:00:{iid:02x}",
            f"198.18.1.{10 + iid}",
            1,
            "running",
            "Creating",
            time.time(),
        ),
    )
    return iid


def test_instance_ids_are_monotonic_and_never_reused(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 2, "Creating")
    with store.transaction() as db:
        first = [_instance(store, db, "web") for _ in range(3)]
    store.delete_instance_row("web", 2)
    with store.transaction() as db:
        again = _instance(store, db, "web")
    assert first == [0, 1, 2] and again == 3
    store.close()
    reopened = Store(tmp_path / "s.db")
    assert [i.instance_id for i in reopened.instances("web")] == [0, 1, 3]
    assert reopened.scale_set("web").next_instance_id == 4


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {}, 0, "Creating")
    with pytest.raises(RuntimeError), store.transaction() as db:
        _instance(store, db, "web")
        raise RuntimeError("crash half way")
    assert store.instances("web") == []
    assert store.scale_set("web").next_instance_id == 0


def test_duplicates_and_missing_are_reported(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {}, 0, "Creating")
    with pytest.raises(Conflict, match="already exists"):
        store.insert_scale_set("web", "Uniform", {}, 0, "Creating")
    with pytest.raises(NotFound, match="does not exist"):
        store.scale_set("nope")
    with pytest.raises(NotFound):
        store.instance("web", 7)


def test_a_store_from_an_older_version_gets_the_new_columns(tmp_path: Path) -> None:
    """An instances table made before ``skip_shutdown`` existed is completed, rows kept."""
    import sqlite3

    from localvmss.store import SCHEMA

    path = tmp_path / "old.db"
    old_schema = SCHEMA.replace("    skip_shutdown INTEGER NOT NULL DEFAULT 0,", "")
    assert old_schema != SCHEMA, "the test must really drop the column"
    db = sqlite3.connect(path)
    db.executescript(old_schema)
    db.execute(
        "INSERT INTO scale_sets (name, mode, model, capacity, provisioning_state, created_at, updated_at)"
        " VALUES ('web', 'Uniform', '{}', 1, 'Succeeded', 0, 0)"
    )
    db.execute(
        "INSERT INTO instances (scale_set, instance_id, host, fault_domain, update_domain, mac, ip, model_version,"
        " desired_power, provisioning_state, created_at) VALUES ('web', 0, 'h1', 0, 0, 'm', 'i', 1, 'running',"
        " 'Succeeded', 0)"
    )
    db.commit()
    db.close()
    store = Store(path)
    inst = store.instance("web", 0)
    assert inst.skip_shutdown is False and inst.host == "h1"
    store.update_instance("web", 0, skip_shutdown=True)
    assert store.instance("web", 0).skip_shutdown is True
