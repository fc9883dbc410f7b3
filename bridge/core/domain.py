"""The words the bridge, its stations and the MES share (pure): results, process numbers, WIP ids,
instants in UTC, and what the bridge knows of the MES's state.

The MES client speaks these words too (`bridge.mes.models` builds its requests from them); they
live here so that the core does not depend on the client.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, Field, PlainSerializer


def format_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, the form the deployed MES stores without surprises."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def compact_json(value: Any) -> str:
    """JSON as the bridge writes it: compact, non-ASCII kept as it is."""
    return _COMPACT.encode(value)


# Made once: json.dumps with options builds a new encoder on every call, several times a message.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


UtcDatetime = Annotated[AwareDatetime, PlainSerializer(format_utc, return_type=str)]
WipString = Annotated[str, Field(min_length=1, max_length=50)]
# The process number as the station knows it (1..6 on the MES today), never the MES's row id.
ProcessNumber = Annotated[int, Field(ge=1, le=100)]
UserId = Annotated[int, Field(gt=0)]


class Result(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    REWORK = "REWORK"


class MesState(StrEnum):
    """The MES as the bridge last found it; shown in the status and on the status page."""

    UNKNOWN = "unknown"
    ONLINE = "online"
    OFFLINE = "offline"
    AUTH_FAILED = "auth_failed"
    TLS_FAILED = "tls_failed"
