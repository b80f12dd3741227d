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
