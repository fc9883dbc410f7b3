"""The chaos run's verdict (bench/chaos_ledger.py): what it calls lost, duplicated, out of order
and wrong, from what the stations sent and the MES's ledger."""

from __future__ import annotations

from typing import Any

import pytest

from bench.chaos_ledger import MARK, SentRecord, compare, notes_for

A, B = "WIP-A", "WIP-B"
SENT = [
    SentRecord(1, A, 1, "FAIL"),
    SentRecord(2, A, 1, "PASS"),  # a legitimate retry: the station sent both
    SentRecord(3, B, 1, "PASS"),
    SentRecord(4, A, 2, "PASS"),
]


def row(row_id: int, seq: int, wip: str, process: int, result: str) -> dict[str, Any]:
    return {
        "id": row_id,
        "wip_id": wip,
        "process_number": process,
        "result": result,
        "notes": notes_for(seq),
        "measurements": {MARK: seq, "cycle_time_ms": 12},
    }


def ledger(*rows: dict[str, Any], converted: tuple[str, ...] = (A,)) -> dict[str, Any]:
    wips = [
        {"wip_id": w, "status": "CONVERTED" if w in converted else "IN_PROGRESS"} for w in (A, B)
    ]
    return {"history": list(rows), "wips": wips}


EXACT = [row(1, 1, A, 1, "FAIL"), row(2, 2, A, 1, "PASS"), row(3, 3, B, 1, "PASS")]


@pytest.mark.parametrize(
    ("rows", "converted", "lost", "duplicated", "out_of_order", "wrong"),
    [
        pytest.param([*EXACT, row(4, 4, A, 2, "PASS")], (A,), 0, 0, 0, 0, id="exact"),
        pytest.param(EXACT, (A,), 1, 0, 0, 0, id="a 완공 never arrived"),
        pytest.param([*EXACT, row(4, 4, A, 2, "PASS")], (), 1, 0, 0, 0, id="no conversion"),
        pytest.param(
            [*EXACT, row(4, 4, A, 2, "PASS"), row(5, 2, A, 1, "PASS")],
            (A,),
            0,
            1,
            0,
            0,
            id="the same 완공 twice",
        ),
        pytest.param(
            [row(2, 2, A, 1, "PASS"), row(1, 1, A, 1, "FAIL"), *EXACT[2:], row(4, 4, A, 2, "PASS")],
            (A,),
            0,
            0,
            1,
            0,
            id="FAIL after the PASS that redid it",
        ),
        pytest.param(
            [*EXACT, row(4, 4, A, 2, "PASS"), row(5, 3, A, 2, "PASS")],
            (A,),
            0,
            1,
            0,
            1,
            id="B's 완공 applied again, to A's batch",
        ),
        pytest.param(
            [*EXACT, {**row(4, 4, A, 2, "PASS"), "measurements": {MARK: 3}}],
            (A,),
            0,
            0,
            0,
            1,
            id="another batch's reading",
        ),
        pytest.param(
            [*EXACT, row(4, 4, A, 2, "PASS"), {**row(5, 9, A, 3, "PASS"), "notes": ""}],
            (A,),
            0,
            0,
            0,
            1,
            id="a row no station sent",
        ),
    ],
)
def test_the_verdict_names_each_kind_of_damage(
    rows: list[dict[str, Any]],
    converted: tuple[str, ...],
    lost: int,
    duplicated: int,
    out_of_order: int,
    wrong: int,
) -> None:
    verdict = compare(SENT, [A], ledger(*rows, converted=converted))
    assert (
        len(verdict.lost),
        len(verdict.duplicated),
        len(verdict.out_of_order),
        len(verdict.mismatched),
    ) == (lost, duplicated, out_of_order, wrong)
    assert verdict.expected == 5
    assert verdict.clean == (lost == duplicated == out_of_order == wrong == 0)


def test_what_was_recorded_counts_each_record_once() -> None:
    rows = [*EXACT, row(4, 4, A, 2, "PASS"), row(5, 4, A, 2, "PASS")]
    verdict = compare(SENT, [A, B], ledger(*rows, converted=(A,)))
    assert verdict.recorded == 4 + 1  # four 완공 (one of them twice) and A's conversion
    assert verdict.lost == [f"{B} conversion to a serial number"]
    assert verdict.duplicated == [f"{A} process 2 PASS (batch #4): 2 rows (ids [4, 5])"]
