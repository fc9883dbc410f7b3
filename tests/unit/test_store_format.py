"""bridge.adapters.store.upgrade: which writes bring a store to the format this bridge reads
(pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from bridge.adapters.store import (
    FORMAT,
    FORMAT_KEY,
    MIGRATIONS,
    Rows,
    StoreError,
    batches_by_uid,
    upgrade,
)
from bridge.core.outbox import load_state


def rename_batches(rows: Rows) -> dict[str, str | None]:
    """A migration of the kind a future format may need: keys move."""
    writes: dict[str, str | None] = {}
    for key, value in rows.items():
        if key.startswith("batch/"):
            writes[key] = None
            writes["active/" + key.removeprefix("batch/")] = value
    return writes


def count_batches(rows: Rows) -> dict[str, str | None]:
    return {"meta/batches": str(sum(key.startswith("active/") for key in rows))}


CHAIN = {0: MIGRATIONS[0], 1: rename_batches, 2: count_batches}


@pytest.mark.parametrize(
    ("rows", "current", "expected"),
    [
        ({}, FORMAT, {FORMAT_KEY: str(FORMAT)}),
        ({FORMAT_KEY: str(FORMAT), "meta/next_seq": "4"}, FORMAT, {}),
        ({"meta/next_seq": "4"}, 1, {FORMAT_KEY: "1"}),
        (
            {FORMAT_KEY: "1", "batch/b1": "{}"},
            2,
            {"batch/b1": None, "active/b1": "{}", FORMAT_KEY: "2"},
        ),
        (
            {"batch/b1": "{}", "batch/b2": "{}"},
            3,
            {
                "batch/b1": None,
                "batch/b2": None,
                "active/b1": "{}",
                "active/b2": "{}",
                "meta/batches": "2",
                FORMAT_KEY: "3",
            },
        ),
        ({}, 3, {FORMAT_KEY: "3"}),
    ],
    ids=[
        "a new store is stamped",
        "current: nothing to do",
        "format 0 (unrecorded) to 1: stamped, rows kept",
        "one step",
        "each step sees the one before",
        "a new store runs no migration",
    ],
)
def test_upgrade(rows: Mapping[str, str], current: int, expected: dict[str, str | None]) -> None:
    assert upgrade(rows, current=current, migrations=CHAIN) == expected


def test_a_newer_store_is_refused_with_what_to_do() -> None:
    with pytest.raises(StoreError) as refused:
        upgrade({FORMAT_KEY: str(FORMAT + 1)})
    message = str(refused.value)
    assert f"format {FORMAT + 1}, written by a newer station-bridge" in message
    assert f"reads format {FORMAT} at most" in message


def test_a_format_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(StoreError, match="not a format number"):
        upgrade({FORMAT_KEY: "two"})


# -- format 1 to 2: batches by uid ---------------------------------------------------------------


def batch_row(batch_id: str, station: str, wip: str, process: int, **more: Any) -> str:
    """A batch as format 1 stored it (before uids existed unless `uid` is given)."""
    row = {
        "batch_id": batch_id,
        "station_id": station,
        "wip_id": wip,
        "process": process,
        "operator_id": 2,
        "equipment_id": None,
        "started_at": "2026-11-26T09:00:00Z",
        "defects": [],
        "clock_note": None,
        **more,
    }
    return json.dumps(row)


def entry_row(
    seq: int, kind: str, station: str, batch_id: str | None, wip: str, **more: Any
) -> str:
    """An outbox entry as format 1 stored it (without `batch_uid` unless given)."""
    request: dict[str, Any] = {"kind": kind, "wip_id": wip, "operator_id": 2}
    if kind != "convert":
        request.update(process=1, started_at="2026-11-26T09:00:00Z")
    if kind == "complete":
        request.update(result="PASS", completed_at="2026-11-26T09:01:00Z")
    row = {
        "seq": seq,
        "request": request,
        "station_id": station,
        "batch_id": batch_id,
        "enqueued_at": "2026-11-26T09:00:00Z",
        **more,
    }
    return json.dumps(row)


def key(seq: int) -> str:
    return f"outbox/{seq:012d}"


def migrated(rows: dict[str, str]) -> dict[str, str]:
    writes = batches_by_uid(rows)
    result = {k: v for k, v in rows.items() if k not in writes}
    result.update({k: v for k, v in writes.items() if v is not None})
    return result


def uids(rows: dict[str, str]) -> dict[str, str | None]:
    """Each entry's batch uid, by seq key; each batch's uid, by its key."""
    found = {k: json.loads(v).get("batch_uid") for k, v in rows.items() if k.startswith("outbox/")}
    found.update({k: json.loads(v)["uid"] for k, v in rows.items() if k.startswith("batch/")})
    return found


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            {
                "batch/B1": batch_row("B1", "1", "W1", 1),
                key(1): entry_row(1, "start", "1", "B1", "W1"),
            },
            {"batch/legacy-B1": "legacy-B1", key(1): "legacy-B1"},
        ),
        (
            {
                key(1): entry_row(1, "start", "1", "B1", "W1"),
                key(2): entry_row(2, "complete", "1", "B1", "W1"),
                key(3): entry_row(3, "convert", "1", "B1", "W1"),
                key(4): entry_row(4, "start", "1", "B1", "W1"),
                key(5): entry_row(5, "complete", "1", "B1", "W1"),
            },
            {
                key(1): "before-uids-1",
                key(2): "before-uids-1",
                key(3): "before-uids-1",
                key(4): "before-uids-4",
                key(5): "before-uids-4",
            },
        ),
        (
            {
                key(2): entry_row(2, "complete", "1", "B1", "W1"),
                key(3): entry_row(3, "start", "1", "B1", "W1"),
                "batch/B1": batch_row("B1", "1", "W1", 1),
            },
            {key(2): "before-uids-2", key(3): "legacy-B1", "batch/legacy-B1": "legacy-B1"},
        ),
        (
            {
                "batch/B1": batch_row("B1", "1", "W1", 1, uid="legacy-B1"),
                key(1): entry_row(1, "start", "1", "B1", "W1"),
                key(2): entry_row(2, "complete", "1", "B1", "W1", batch_uid="legacy-B1"),
            },
            {"batch/legacy-B1": "legacy-B1", key(1): "legacy-B1", key(2): "legacy-B1"},
        ),
        (
            {
                "batch/B1": batch_row("B1", "1", "W1", 1, uid="0f3a"),
                key(1): entry_row(1, "start", "1", "B1", "W1", batch_uid="0f3a"),
            },
            {"batch/0f3a": "0f3a", key(1): "0f3a"},
        ),
        (
            {
                "batch/B1": batch_row("B1", "1", "W1", 2),
                key(1): entry_row(1, "start", "1", "B1", "W1"),  # process 1: not this batch's
                key(2): entry_row(2, "start", "2", "B1", "W2"),  # another station's
            },
            {"batch/legacy-B1": "legacy-B1", key(1): "before-uids-1", key(2): "before-uids-2"},
        ),
        (
            {key(1): entry_row(1, "convert", "1", None, "W1")},
            {key(1): None},
        ),
    ],
    ids=[
        "a batch and its start",
        "a batch id used again after its batch ended",
        "an active batch's start after an ended batch of the same id",
        "a start from before uids, of a batch given its uid since",
        "rows with uids are kept",
        "a start that is not the active batch's",
        "a convert of no batch",
    ],
)
def test_batches_by_uid_names_every_batch_and_entry(
    rows: dict[str, str], expected: dict[str, str | None]
) -> None:
    after = migrated(rows)
    assert uids(after) == expected
    batches, outbox = load_state(after)  # the models read what the migration wrote
    assert set(batches) == {k.removeprefix("batch/") for k in expected if k.startswith("batch/")}
    assert [entry.seq for entry in outbox] == sorted(int(k[7:]) for k in rows if "outbox/" in k)


def test_batches_by_uid_moves_measurements_and_drops_orphans() -> None:
    rows = {
        "batch/B1": batch_row("B1", "1", "W1", 1),
        "measurement/B1/torque": '{"value":1.5,"unit":"Nm"}',
        "measurement/B1/step/3/gap": '{"value":0.2,"unit":null}',
        "measurement/GONE/x": '{"value":1,"unit":null}',
        "meta/next_seq": "9",
    }
    writes = batches_by_uid(rows)
    assert writes == {
        "batch/B1": None,
        "measurement/B1/torque": None,
        "measurement/B1/step/3/gap": None,
        "measurement/GONE/x": None,
        "measurement/legacy-B1/torque": '{"value":1.5,"unit":"Nm"}',
        "measurement/legacy-B1/step/3/gap": '{"value":0.2,"unit":null}',
        "batch/legacy-B1": writes["batch/legacy-B1"],
    }
    assert json.loads(rows["batch/B1"]) | {"uid": "legacy-B1"} == json.loads(
        str(writes["batch/legacy-B1"])
    )
    batches, _ = load_state(migrated(rows))
    assert batches["legacy-B1"].measurements["step/3/gap"].value == 0.2


def test_a_batch_whose_uid_is_its_batch_id_keeps_its_rows() -> None:
    rows = {
        "batch/abc": batch_row("abc", "1", "W1", 1, uid="abc"),
        "measurement/abc/t": '{"value":1,"unit":null}',
    }
    assert migrated(rows) == {
        "batch/abc": json.dumps(json.loads(rows["batch/abc"]), separators=(",", ":")),
        "measurement/abc/t": rows["measurement/abc/t"],
    }


def test_format_1_is_upgraded_by_batches_by_uid() -> None:
    assert MIGRATIONS[1] is batches_by_uid
    rows = {FORMAT_KEY: "1", "batch/B1": batch_row("B1", "1", "W1", 1)}
    writes = upgrade(rows, current=2)
    assert writes[FORMAT_KEY] == "2" and writes["batch/B1"] is None
    assert writes["batch/legacy-B1"] is not None
