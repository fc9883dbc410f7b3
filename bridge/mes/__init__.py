"""The MES layer: one client for the deployed F2X NeuroHub, and its error taxonomy."""

from bridge.mes.client import MesClient
from bridge.mes.errors import MesError, MesErrorCode
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

__all__ = [
    "CompleteProcess",
    "Completion",
    "ConvertToSerial",
    "MesClient",
    "MesError",
    "MesErrorCode",
    "MesRequest",
    "Recorded",
    "Serial",
    "StartProcess",
    "WipItem",
    "WipStatus",
    "WipTrace",
]
