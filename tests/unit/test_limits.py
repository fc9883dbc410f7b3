"""bridge.core.limits: PASS or FAIL from limits, defects and a stated result."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bridge.config import Limit
from bridge.core.domain import Result
from bridge.core.limits import Measured, Verdict, decide, limit_defects, unique

TORQUE = Limit(min=1.0, max=2.0, unit="Nm", defect="TORQUE_OUT")


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], []),
        (["A"], ["A"]),
        (["A", "B", "C"], ["A", "B", "C"]),
        (["B", "A", "B", "C", "A"], ["B", "A", "C"]),
        (["Z", "Z", "Z"], ["Z"]),
        (iter(["C", "B", "C"]), ["C", "B"]),
    ],
    ids=["empty", "one", "distinct-kept-in-order", "repeats-first-kept", "all-same", "iterator"],
)
def test_unique_keeps_first_occurrence_in_order(codes: Any, expected: list[str]) -> None:
    assert unique(codes) == expected


@pytest.mark.parametrize(
    ("value", "unit", "defects"),
    [
        (1.5, "Nm", []),
        (1.0, "Nm", []),
        (2.0, "Nm", []),
        (1, "Nm", []),
        (2, "Nm", []),
        (0.999, "Nm", ["TORQUE_OUT"]),
        (2.001, "Nm", ["TORQUE_OUT"]),
        (-1.5, "Nm", ["TORQUE_OUT"]),
        (0, "Nm", ["TORQUE_OUT"]),
        ("1.5", "Nm", ["TORQUE_OUT"]),
        (None, "Nm", ["TORQUE_OUT"]),
        ([1.5], "Nm", ["TORQUE_OUT"]),
        ({"v": 1.5}, "Nm", ["TORQUE_OUT"]),
        (True, "Nm", ["TORQUE_OUT"]),
        (False, "Nm", ["TORQUE_OUT"]),
        (math.nan, "Nm", ["TORQUE_OUT"]),
        (math.inf, "Nm", ["TORQUE_OUT"]),
        (-math.inf, "Nm", ["TORQUE_OUT"]),
        (1.5, "kgf.cm", ["TORQUE_OUT"]),
        (1.5, "nm", ["TORQUE_OUT"]),
        (1.5, None, []),
        (0.5, None, ["TORQUE_OUT"]),
    ],
    ids=[
        "within",
        "exact-min-inclusive",
        "exact-max-inclusive",
        "int-at-min",
        "int-at-max",
        "just-below-min",
        "just-above-max",
        "negative",
        "zero",
        "numeric-string",
        "null",
        "list",
        "object",
        "bool-true-is-not-1",
        "bool-false-is-not-0",
        "nan",
        "inf",
        "minus-inf",
        "unit-mismatch",
        "unit-case-differs",
        "unit-missing-on-measurement-accepted",
        "unit-missing-still-checked-against-bounds",
    ],
)
def test_limit_with_bounds_and_unit(value: Any, unit: str | None, defects: list[str]) -> None:
    measured = {"torque": Measured(value=value, unit=unit)}
    assert limit_defects(measured, {"torque": TORQUE}) == defects


@pytest.mark.parametrize(
    ("limit", "value", "unit", "defects"),
    [
        (Limit(min=0, defect="D"), -0.1, None, ["D"]),
        (Limit(min=0, defect="D"), 0, None, []),
        (Limit(min=0, defect="D"), 1e12, None, []),
        (Limit(max=0, defect="D"), 0.1, None, ["D"]),
        (Limit(max=0, defect="D"), -1e12, None, []),
        (Limit(defect="D"), 123.4, "any", []),
        (Limit(defect="D"), "text", None, ["D"]),
        (Limit(min=5, max=5, defect="D"), 5, None, []),
        (Limit(min=5, max=5, defect="D"), 5.0001, None, ["D"]),
        (Limit(unit="mm", defect="D"), 3, "mm", []),
        (Limit(unit="mm", defect="D"), 3, "cm", ["D"]),
    ],
    ids=[
        "min-only-below",
        "min-only-at",
        "min-only-far-above",
        "max-only-above",
        "max-only-far-below",
        "no-bounds-number-with-unit",
        "no-bounds-non-numeric",
        "min-equals-max-at",
        "min-equals-max-off",
        "unit-only-match",
        "unit-only-mismatch",
    ],
)
def test_limit_shapes(limit: Limit, value: Any, unit: str | None, defects: list[str]) -> None:
    assert limit_defects({"m": Measured(value=value, unit=unit)}, {"m": limit}) == defects


@pytest.mark.parametrize(
    ("limit", "defects"),
    [
        (Limit(min=1, defect="D"), ["MISSING_TORQUE_1"]),
        (Limit(min=1, defect="D", missing_defect="NO_TORQUE"), ["NO_TORQUE"]),
        (Limit(min=1, defect="D", required=False), []),
        (Limit(min=1, defect="D", required=False, missing_defect="NO_TORQUE"), []),
    ],
    ids=["required-default-code", "required-own-code", "optional", "optional-with-code"],
)
def test_missing_measurement(limit: Limit, defects: list[str]) -> None:
    other = {"other": Measured(value=1)}
    assert limit_defects(other, {"torque_1": limit}) == defects


def test_defects_follow_the_order_of_the_limits() -> None:
    limits = {
        "c": Limit(max=0, defect="C_HIGH"),
        "a": Limit(max=0, defect="A_HIGH"),
        "b": Limit(max=0, defect="B_HIGH"),
        "ok": Limit(max=10, defect="OK_HIGH"),
    }
    measured = {name: Measured(value=1) for name in ("a", "b", "c", "ok")}
    assert limit_defects(measured, limits) == ["C_HIGH", "A_HIGH", "B_HIGH"]


def test_measurements_without_a_limit_are_ignored() -> None:
    assert limit_defects({"free": Measured(value="anything")}, {}) == []


def test_huge_integer_is_the_limits_defect_not_a_crash() -> None:
    assert limit_defects({"torque": Measured(value=10**400)}, {"torque": TORQUE}) == ["TORQUE_OUT"]


# -- decide --------------------------------------------------------------------------------------

LIMITS = {
    "torque": TORQUE,
    "gap": Limit(max=0.5, unit="mm", defect="GAP_WIDE", missing_defect="NO_GAP"),
    "temp": Limit(min=10, max=40, defect="TEMP_OUT", required=False),
}
GOOD = {"torque": Measured(value=1.5, unit="Nm"), "gap": Measured(value=0.2, unit="mm")}
LOW_TORQUE = {**GOOD, "torque": Measured(value=0.5, unit="Nm")}


@pytest.mark.parametrize(
    ("measured", "reported", "stated", "result", "defects"),
    [
        (GOOD, [], None, Result.PASS, []),
        ({**GOOD, "temp": Measured(value=25)}, [], None, Result.PASS, []),
        ({**GOOD, "temp": Measured(value=41)}, [], None, Result.FAIL, ["TEMP_OUT"]),
        (LOW_TORQUE, [], None, Result.FAIL, ["TORQUE_OUT"]),
        ({"torque": GOOD["torque"]}, [], None, Result.FAIL, ["NO_GAP"]),
        ({}, [], None, Result.FAIL, ["MISSING_TORQUE", "NO_GAP"]),
        (GOOD, ["SCRATCH"], None, Result.FAIL, ["SCRATCH"]),
        (
            LOW_TORQUE,
            ["SCRATCH", "TORQUE_OUT", "SCRATCH", "DENT"],
            None,
            Result.FAIL,
            ["SCRATCH", "TORQUE_OUT", "DENT"],
        ),
        (
            {"gap": Measured(value=0.9, unit="mm")},
            ["Z", "GAP_WIDE"],
            None,
            Result.FAIL,
            ["Z", "GAP_WIDE", "MISSING_TORQUE"],
        ),
        (LOW_TORQUE, [], Result.PASS, Result.PASS, []),
        ({}, ["SCRATCH", "SCRATCH"], Result.PASS, Result.PASS, ["SCRATCH"]),
        (GOOD, [], Result.FAIL, Result.FAIL, []),
        (GOOD, ["B", "A", "B"], Result.FAIL, Result.FAIL, ["B", "A"]),
        (GOOD, [], Result.REWORK, Result.REWORK, []),
    ],
    ids=[
        "all-within-pass",
        "optional-within-pass",
        "optional-out-fails",
        "limit-broken-fails",
        "required-missing-own-code",
        "all-missing-default-and-own-code",
        "reported-defect-fails",
        "reported-first-deduplicated",
        "reported-first-then-limits-in-limit-order",
        "stated-pass-wins-over-broken-limit",
        "stated-pass-keeps-reported-defects-deduplicated",
        "stated-fail-wins-over-good-values",
        "stated-fail-defects-deduplicated-in-order",
        "stated-rework",
    ],
)
def test_decide(
    measured: dict[str, Measured],
    reported: list[str],
    stated: Result | None,
    result: Result,
    defects: list[str],
) -> None:
    verdict = decide(
        measured=measured, reported_defects=reported, limits=LIMITS, stated=stated, cycle_time_ms=0
    )
    assert verdict.result is result
    assert verdict.defects == defects


@pytest.mark.parametrize(
    ("measured", "cycle_time_ms", "measurements"),
    [
        ({}, 0, {"cycle_time_ms": 0}),
        (GOOD, 12_345, {"torque": 1.5, "gap": 0.2, "cycle_time_ms": 12_345}),
        (
            {"label": Measured(value="OK"), "curve": Measured(value=[1, 2])},
            7,
            {"label": "OK", "curve": [1, 2], "cycle_time_ms": 7},
        ),
        ({"cycle_time_ms": Measured(value=1)}, 99, {"cycle_time_ms": 99}),
    ],
    ids=["nothing-measured", "values-without-units", "any-json-value", "bridge-cycle-time-wins"],
)
def test_decide_adds_cycle_time_to_measurements(
    measured: dict[str, Measured], cycle_time_ms: int, measurements: dict[str, Any]
) -> None:
    verdict = decide(
        measured=measured,
        reported_defects=[],
        limits={},
        stated=None,
        cycle_time_ms=cycle_time_ms,
    )
    assert verdict == Verdict(result=Result.PASS, measurements=measurements, defects=[])


def test_decide_accepts_an_iterator_of_reported_defects() -> None:
    verdict = decide(
        measured=GOOD,
        reported_defects=iter(["X", "X"]),
        limits=LIMITS,
        stated=None,
        cycle_time_ms=1,
    )
    assert verdict.defects == ["X"] and verdict.result is Result.FAIL
