"""bridge.adapters.store.upgrade: which writes bring a store to the format this bridge reads
(pure)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from bridge.adapters.store import FORMAT, FORMAT_KEY, MIGRATIONS, Rows, StoreError, upgrade


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
