"""The store: ids never reused, transactions all-or-nothing, state survives reopening."""

from __future__ import annotations

import contextlib
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
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 0, "Creating")
    with pytest.raises(RuntimeError), store.transaction() as db:
        _instance(store, db, "web")
        raise RuntimeError("crash half way")
    assert store.instances("web") == []
    assert store.scale_set("web").next_instance_id == 0


def test_duplicates_and_missing_are_reported(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 0, "Creating")
    with pytest.raises(Conflict, match="already exists"):
        store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 0, "Creating")
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


def test_record_status_checks_the_generation(tmp_path: Path) -> None:
    """A stale observation (read before a newer intent) is dropped; a current one is written."""
    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 1, "Creating")
    with store.transaction() as db:
        iid = _instance(store, db, "web")
    seen = store.instance("web", iid)
    store.update_instance("web", iid, provisioning_state="Deleting")  # intent arrives meanwhile
    assert store.record_status("web", iid, seen.generation, provisioning_state="Succeeded", health="healthy") is False
    assert (store.instance("web", iid).provisioning_state, store.instance("web", iid).health) == ("Deleting", "unknown")
    now = store.instance("web", iid)
    assert store.record_status("web", iid, now.generation, health="healthy") is True
    assert store.instance("web", iid).health == "healthy"
    assert store.instance("web", iid).generation == now.generation, "observations do not bump the generation"


def test_record_status_refuses_intent_columns(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 1, "Creating")
    with store.transaction() as db:
        iid = _instance(store, db, "web")
    with pytest.raises(ValueError, match="intent columns"):
        store.record_status("web", iid, desired_power="stopped")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"this is not a database at all, just bytes" * 100, "is corrupt"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, "state database"),
    ],
)
def test_a_corrupt_database_is_one_clear_line(tmp_path: Path, content: bytes, expected: str) -> None:
    from localvmss.errors import StoreError

    path = tmp_path / "state.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        Store(path)
    assert expected in info.value.message
    assert "\n" not in info.value.message
    assert str(path) in info.value.message


def test_a_full_disk_is_one_clear_line_and_nothing_half_written(tmp_path: Path) -> None:
    """SQLite's "database or disk is full" (max_page_count stands in for a full file system)."""
    from localvmss.errors import StoreError

    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 1, "Creating")
    pages = store._query("PRAGMA page_count")[0][0]
    store._query(f"PRAGMA max_page_count={pages}")
    with pytest.raises(StoreError) as info:
        store.log_activity("web", "x", "y" * 200_000)
    assert "disk is full" in info.value.message
    assert [a.message for a in store.activity("web")] == []
    assert store.scale_set("web").capacity == 1, "the store still reads"


def test_check_and_backup(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 3, "Creating")
    assert store.check() == []
    store.backup(tmp_path / "copy.db")
    copy = Store(tmp_path / "copy.db")
    assert copy.scale_set("web").capacity == 3
    assert copy.check() == []


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    from localvmss.errors import StoreError

    store = Store(tmp_path / "s.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.scale_sets()


def test_rows_carry_enums_and_the_parsed_model(tmp_path: Path) -> None:
    from localvmss.model import OrchestrationMode, PowerState, ProvisioningState

    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform", "memory_mib": 512}, 1, "Creating")
    with store.transaction() as db:
        iid = _instance(store, db, "web")
    row = store.scale_set("web")
    assert row.mode is OrchestrationMode.UNIFORM and row.provisioning_state is ProvisioningState.CREATING
    assert row.spec.memory_mib == 512
    inst = store.instance("web", iid)
    assert inst.provisioning_state is ProvisioningState.CREATING and inst.desired_power is PowerState.RUNNING


def test_a_stored_model_that_does_not_parse_is_one_clear_line(tmp_path: Path) -> None:
    from localvmss.errors import StoreError

    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform", "vcpus": "many"}, 1, "Creating")
    with pytest.raises(StoreError) as info:
        store.scale_set("web")
    assert "stored model of scale set 'web' does not parse (vcpus:" in info.value.message


@pytest.mark.parametrize(
    ("inner_fails", "outer_fails", "expected"),
    [
        ((False, False), False, {"a", "b"}),  # one commit for both
        ((True, False), False, {"b"}),  # the failed one alone is undone
        ((True, True), False, set()),
        ((False, False), True, set()),  # the outer one failing undoes its savepoints too
    ],
)
def test_a_transaction_inside_another_is_a_savepoint_of_it(
    tmp_path: Path, inner_fails: tuple[bool, bool], outer_fails: bool, expected: set[str]
) -> None:
    store = Store(tmp_path / "s.db")
    with pytest.raises(RuntimeError) if outer_fails else _nothing(), store.transaction():
        for volume, fails in zip(("a", "b"), inner_fails, strict=True):
            try:
                with store.transaction() as db:
                    db.execute("INSERT INTO uploads (host, volume, digest) VALUES ('h', ?, '')", (volume,))
                    if fails:
                        raise RuntimeError("inner")
            except RuntimeError:
                pass
        if outer_fails:
            raise RuntimeError("outer")
    assert {v for v in ("a", "b") if store.upload_done("h", v) is not None} == expected
    with store.transaction() as db:  # the store takes new transactions afterwards
        db.execute("INSERT INTO uploads (host, volume, digest) VALUES ('h', 'c', '')")
    assert store.upload_done("h", "c") == ""


def test_savepoints_nest(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with store.transaction(), store.transaction():
        store.record_upload("h", "kept")
        with pytest.raises(RuntimeError), store.transaction():
            store.record_upload("h", "undone")
            raise RuntimeError("innermost")
    assert (store.upload_done("h", "kept"), store.upload_done("h", "undone")) == ("", None)


def _nothing() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


@pytest.mark.parametrize(("scale_set", "expected"), [("a", [0, 1]), ("b", [0]), ("nope", []), (None, [0, 1, 0])])
def test_instances_of_a_set_come_from_the_rows_kept_and_follow_writes(
    tmp_path: Path, scale_set: str | None, expected: list[int]
) -> None:
    store = Store(tmp_path / "s.db")
    for name in ("a", "b"):
        store.insert_scale_set(name, "Uniform", {"mode": "Uniform"}, 0, "Creating")
    with store.transaction() as db:
        _instance(store, db, "a")
        _instance(store, db, "b")
    first = store.instances(scale_set)
    first.clear()  # a copy: what the store keeps is not changed through it
    with store.transaction() as db:
        _instance(store, db, "a")
    assert [i.instance_id for i in store.instances(scale_set)] == expected
    assert [i.instance_id for i in store.instances(scale_set)] == expected  # kept, the same


def _touch_nothing(store: Store) -> None:
    with store.transaction() as db:
        db.execute("UPDATE instances SET health='healthy' WHERE instance_id=-1")


def _write(store: Store) -> None:
    store.record_status("web", 0, health="unhealthy")


def _roll_back(store: Store) -> None:
    with contextlib.suppress(RuntimeError), store.transaction():
        store.record_status("web", 0, health="initializing")
        raise RuntimeError("undone")


@pytest.mark.parametrize(
    ("act", "changes", "health"),
    [
        (_touch_nothing, False, "unknown"),  # a round of health probes with nothing new
        (_write, True, "unhealthy"),
        (_roll_back, True, "unknown"),  # undone, yet what was kept is read again
    ],
)
def test_the_revision_moves_with_transactions_that_change_rows(
    tmp_path: Path, act: object, changes: bool, health: str
) -> None:
    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 1, "Creating")
    with store.transaction() as db:
        _instance(store, db, "web")
    before = store.revision()
    kept = store.instances()
    act(store)  # type: ignore[operator]
    assert (store.revision() != before) is changes
    assert (store.instances()[0] is kept[0]) is not changes  # the rows kept stay while nothing changed
    assert store.instances()[0].health == health


def test_images_are_kept_until_one_is_put_and_each_caller_gets_its_own(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.put_image("base", {"disk": "d.qcow2"}, "/images/base")
    first = store.images()
    first["base"][0]["disk"] = "changed by a caller"
    assert store.images() == {"base": ({"disk": "d.qcow2"}, "/images/base")}
    store.put_image("other", {"disk": "o.qcow2"}, "/images/other")
    assert sorted(store.images()) == ["base", "other"]
    with contextlib.suppress(RuntimeError), store.transaction():
        store.put_image("undone", {"disk": "u.qcow2"}, "/images/undone")
        assert "undone" in store.images()  # its own transaction sees it
        raise RuntimeError("rolled back")
    assert sorted(store.images()) == ["base", "other"]
