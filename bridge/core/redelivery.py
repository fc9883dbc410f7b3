"""Recognising a message the broker delivers again (pure).

A QoS 1 message is acknowledged only after its effect is on disk; if the bridge dies, or the link
drops, between that commit and the acknowledgement, the broker sends it again, flagged DUP, with
the same packet id. So the commit that applies a message also writes a record of it — its packet
id, a digest of its topic and payload, and the answers it gave — and a redelivered message that
matches its record is answered as before instead of being applied twice.

Packet ids are 16-bit and the broker reuses them, so records are keyed by id: a new message
overwrites the record of the last one with its id, which bounds them to 65,535 rows. Only
messages flagged DUP are looked up: a new message with the id, topic and payload of an old one
(a gauge repeating a value) is never mistaken for a redelivery.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bridge.core.domain import compact_json
from bridge.core.topics import Received

Answer = tuple[str, dict[str, Any]]

PREFIX = "inbox/"  # not read at startup: only a redelivered message looks its record up


def record_key(message: Received) -> str | None:
    """Where the record of this message lives (None for QoS 0: never redelivered)."""
    return None if message.mid is None else f"{PREFIX}{message.mid}"


def digest(message: Received) -> str:
    return hashlib.sha256(message.topic.encode() + b"\0" + message.payload).hexdigest()[:32]


def handled(message: Received, answers: list[Answer]) -> str:
    """The record of a message whose effect is being committed."""
    # Written around the answers' JSON by hand, as the encoder would write the whole (a test
    # holds them equal): made for every message, and most have no answers, where the encoder's
    # way with a dict costs more than the rest of the record.
    encoded = compact_json([list(answer) for answer in answers]) if answers else "[]"
    return f'{{"digest":"{digest(message)}","answers":{encoded}}}'


def answered_before(message: Received, record: str | None) -> list[Answer] | None:
    """The answers this message got the first time, if it is a redelivery of a message already
    applied; None when it must be applied."""
    if not message.redelivered or record is None:
        return None
    try:
        stored = json.loads(record)
        if stored["digest"] != digest(message):
            return None  # the record of an older message that had the same packet id
        return [(str(topic), dict(payload)) for topic, payload in stored["answers"]]
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: applying again is the lesser harm than losing the message
