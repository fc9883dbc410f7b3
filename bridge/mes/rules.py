"""What the bridge itself refuses before asking the MES to do it (pure)."""

from __future__ import annotations

from bridge.mes.errors import MesError, MesErrorCode
from bridge.mes.models import WipItem, WipStatus


def start_refusal(wip: WipItem, *, process: int) -> MesError | None:
    """Why a start of `process` cannot end in a PASS, from the WIP's pre-start scan.

    The deployed MES accepts a start of a process the WIP already passed, then refuses its
    PASS (BR-004): the start stays open there for ever. A CONVERTED WIP starts nothing (BR-003).
    """
    if wip.status is WipStatus.CONVERTED or wip.serial_id is not None:
        return MesError(
            MesErrorCode.ALREADY_CONVERTED,
            detail=f"{wip.wip_id} is already converted to serial: process {process} not started",
        )
    if wip.has_pass_for_process or wip.status is WipStatus.COMPLETED:
        return MesError(
            MesErrorCode.DUPLICATE_PASS,
            detail=f"{wip.wip_id} already has a PASS for process {process} "
            f"(status {wip.status}): not started",
        )
    return None
