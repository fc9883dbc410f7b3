"""What the bridge refuses before a start reaches the MES, and the bounded id cache."""

from __future__ import annotations

import pytest

from bridge.mes import MesErrorCode, WipItem, WipStatus
from bridge.mes.recent import RecentMap
from bridge.mes.rules import start_refusal

S = WipStatus


def wip(status: WipStatus, *, passed: bool | None = False, serial: int | None = None) -> WipItem:
    return WipItem(
        id=9, wip_id="WIP-A", status=status, has_pass_for_process=passed, serial_id=serial
    )


@pytest.mark.parametrize(
    ("scanned", "refused"),
    [
        (wip(S.CREATED), None),
        (wip(S.IN_PROGRESS), None),
        (wip(S.FAILED), None),  # the rework path: a FAILED WIP starts the process again
        (wip(S.IN_PROGRESS, passed=None), None),  # an MES that does not say: let it decide
        (wip(S.IN_PROGRESS, passed=True), MesErrorCode.DUPLICATE_PASS),
        (wip(S.FAILED, passed=True), MesErrorCode.DUPLICATE_PASS),  # a FAIL after its PASS
        (wip(S.COMPLETED, passed=None), MesErrorCode.DUPLICATE_PASS),
        (wip(S.CONVERTED, passed=True), MesErrorCode.ALREADY_CONVERTED),
        (wip(S.COMPLETED, serial=4), MesErrorCode.ALREADY_CONVERTED),
    ],
)
def test_a_start_that_cannot_end_in_a_pass_is_refused(
    scanned: WipItem, refused: MesErrorCode | None
) -> None:
    error = start_refusal(scanned, process=2)
    assert (error.code if error else None) is refused
    if error is not None:
        assert not error.retryable and "WIP-A" in error.detail and "process 2" in error.detail


def test_recent_map_forgets_the_least_recently_used() -> None:
    ids: RecentMap[str, int] = RecentMap(size=2)
    ids.put("a", 1)
    ids.put("b", 2)
    assert ids.get("a") == 1  # now "b" is the oldest
    ids.put("c", 3)
    assert (ids.get("a"), ids.get("b"), ids.get("c")) == (1, None, 3)
    assert len(ids) == 2
    ids.forget("a")
    assert ids.get("a") is None and len(ids) == 1
    with pytest.raises(ValueError):
        RecentMap(size=0)
