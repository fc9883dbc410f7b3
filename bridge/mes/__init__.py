"""The MES layer: one client for the deployed F2X NeuroHub (`MesClient`, given its own
`MesSettings`), the requests it sends and the answers it reads, and its error taxonomy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge._exports import find

if TYPE_CHECKING:
    from bridge.mes.client import MesClient
    from bridge.mes.errors import MesError, MesErrorCode
    from bridge.mes.instants import parse_instant, same_instant
    from bridge.mes.models import (
        CompleteProcess,
        Completion,
        ConvertToSerial,
        MesRequest,
        Recorded,
        Serial,
        StartProcess,
        WipItem,
        WipStatus,
        WipTrace,
    )
    from bridge.mes.settings import MesSettings

__all__ = [
    "CompleteProcess",
    "Completion",
    "ConvertToSerial",
    "MesClient",
    "MesError",
    "MesErrorCode",
    "MesRequest",
    "MesSettings",
    "Recorded",
    "Serial",
    "StartProcess",
    "WipItem",
    "WipStatus",
    "WipTrace",
    "parse_instant",
    "same_instant",
]


def __getattr__(name: str) -> object:
    return find(__name__, __all__, name)
