"""The pure core: what stations send and what the bridge decides of it, with no clock, no disk
and no sockets of its own (everything is given, tested with tables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge._exports import find

if TYPE_CHECKING:
    from bridge.core import redelivery
    from bridge.core.batches import (
        Batch,
        close_batch,
        is_redelivery,
        open_batch,
        record,
        select_batch,
        too_large_to_send,
        within_bounds,
    )
    from bridge.core.domain import (
        MesState,
        ProcessNumber,
        Result,
        UserId,
        UtcDatetime,
        WipString,
        format_utc,
    )
    from bridge.core.limits import Measured
    from bridge.core.outbox import NEXT_SEQ_KEY, Change, Entry, Outbox, load_state, new_entry
    from bridge.core.outcomes import LIVE_EVENT, OFFLINE_EVENT, TOPIC, Event, outcome
    from bridge.core.payloads import (
        BatchAbort,
        BatchComplete,
        BatchStart,
        MeasurementIn,
        Payload,
        WipConvert,
        parse_payload,
    )
    from bridge.core.permissions import UnknownStations, may_convert, shown_id
    from bridge.core.problems import Problem, ProblemCode
    from bridge.core.retry import OFFLINE_CODES, GiveUp, Outage, RetryPolicy, after_failure
    from bridge.core.topics import Inbound, Received, Topics

__all__ = [
    "LIVE_EVENT",
    "NEXT_SEQ_KEY",
    "OFFLINE_CODES",
    "OFFLINE_EVENT",
    "TOPIC",
    "Batch",
    "BatchAbort",
    "BatchComplete",
    "BatchStart",
    "Change",
    "Entry",
    "Event",
    "GiveUp",
    "Inbound",
    "Measured",
    "MeasurementIn",
    "MesState",
    "Outage",
    "Outbox",
    "Payload",
    "Problem",
    "ProblemCode",
    "ProcessNumber",
    "Received",
    "Result",
    "RetryPolicy",
    "Topics",
    "UnknownStations",
    "UserId",
    "UtcDatetime",
    "WipConvert",
    "WipString",
    "after_failure",
    "close_batch",
    "format_utc",
    "is_redelivery",
    "load_state",
    "may_convert",
    "new_entry",
    "open_batch",
    "outcome",
    "parse_payload",
    "record",
    "redelivery",
    "select_batch",
    "shown_id",
    "too_large_to_send",
    "within_bounds",
]


def __getattr__(name: str) -> object:
    return find(__name__, __all__, name)
