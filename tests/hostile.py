"""Hostile payloads, each with the refusal docs/topics.md promises for it, for a station that has
no active batch (shared by the in-process fuzz test and the one through a real broker)."""

from __future__ import annotations

from bridge.core.problems import ProblemCode
from bridge.core.topics import Inbound

In, P = Inbound, ProblemCode
OPERATOR = b'"operator_id":2'


def deep(depth: int) -> bytes:
    return b'{"name":"n","value":' + b"[" * depth + b"]" * depth + b"}"


def start(wip: bytes, *extra: bytes) -> bytes:
    return b",".join([b'{"wip_id":"' + wip + b'"', b'"process_id":1', OPERATOR, *extra]) + b"}"


CORPUS: list[tuple[Inbound, bytes, ProblemCode]] = [
    # not JSON, not UTF-8, not an object
    (In.START, bytes(range(256)), P.INVALID_JSON),
    (In.MEASUREMENT, b"\xff\xfe{\x00}", P.INVALID_JSON),
    (In.COMPLETE, b'{"notes":"\xc3\x28"}', P.INVALID_JSON),
    (In.ABORT, b"", P.INVALID_JSON),
    (In.CONVERT, b"[]", P.INVALID_PAYLOAD),
    (In.START, b'"just a string"', P.INVALID_PAYLOAD),
    (In.START, b'{"wip_id":"W","wip_id":"W2"', P.INVALID_JSON),
    # depth
    (In.MEASUREMENT, deep(1_000), P.INVALID_JSON),
    (In.MEASUREMENT, deep(20_000), P.INVALID_JSON),
    # numbers
    (In.MEASUREMENT, b'{"name":"n","value":NaN}', P.INVALID_JSON),
    (In.MEASUREMENT, b'{"name":"n","value":-Infinity}', P.INVALID_JSON),
    (In.MEASUREMENT, b'{"name":"n","value":1e999}', P.INVALID_JSON),
    (In.START, start(b"W", b'"operator_id":1' + b"0" * 400), P.INVALID_JSON),
    (In.START, b'{"wip_id":"W","process_id":1,"operator_id":1' + b"0" * 400 + b"}", P.INVALID_JSON),
    (In.CONVERT, b'{"wip_id":"W","operator_id":9' + b"9" * 5000 + b"}", P.INVALID_JSON),
    (In.START, start(b"W", b'"equipment_id":4294967296'), P.INVALID_PAYLOAD),
    (In.START, b'{"wip_id":"W","process_id":1.0,"operator_id":2}', P.INVALID_PAYLOAD),
    (In.START, b'{"wip_id":"W","process_id":true,"operator_id":2}', P.INVALID_PAYLOAD),
    # datetimes
    (In.START, start(b"W", b'"started_at":"9999-12-31T23:59:59-14:00"'), P.INVALID_PAYLOAD),
    (In.START, start(b"W", b'"started_at":"0001-01-01T00:00:00+14:00"'), P.INVALID_PAYLOAD),
    (In.START, start(b"W", b'"started_at":0'), P.INVALID_PAYLOAD),
    (In.START, start(b"W", b'"started_at":1.5'), P.INVALID_PAYLOAD),
    (In.START, start(b"W", b'"started_at":"1700000000"'), P.INVALID_PAYLOAD),
    (In.START, start(b"W", b'"started_at":"2026-11-26T09:00:00"'), P.INVALID_PAYLOAD),
    (In.COMPLETE, b'{"completed_at":"9999-12-31T23:59:59-14:00"}', P.INVALID_PAYLOAD),
    # strings that cannot be sent, WIP ids that are not barcodes
    (In.START, start(b"\\ud800"), P.INVALID_JSON),
    (In.MEASUREMENT, b'{"measurements":{"\\udc00":1}}', P.INVALID_JSON),
    (In.START, start(b"WIP\\r\\n2026-11-26 ERROR forged"), P.INVALID_PAYLOAD),
    (In.START, start(b"WIP\xe2\x80\x8f-RTL"), P.INVALID_PAYLOAD),
    (In.START, start(b"WIP\\u202e-override"), P.INVALID_PAYLOAD),
    (In.CONVERT, b'{"wip_id":"W\\u0000","operator_id":2}', P.INVALID_PAYLOAD),
    (In.START, start(b"W" * 51), P.INVALID_PAYLOAD),
    (In.START, start(b""), P.INVALID_PAYLOAD),
    # forms and fields
    (In.MEASUREMENT, b'{"value":1,"defects":["X"]}', P.INVALID_PAYLOAD),
    (In.MEASUREMENT, b'{"name":"n","value":null}', P.INVALID_PAYLOAD),
    (In.START, start(b"W", b'"__proto__":{}'), P.INVALID_PAYLOAD),
    (In.ABORT, b'{"reason":""}', P.INVALID_PAYLOAD),
    (In.COMPLETE, b'{"result":"pass"}', P.INVALID_PAYLOAD),
    # valid, but no batch is running on the station
    (In.MEASUREMENT, b'{"name":"n","value":1}', P.NO_ACTIVE_BATCH),
    (In.COMPLETE, b'{"batch_id":"../../etc"}', P.INVALID_PAYLOAD),
    (In.COMPLETE, b'{"batch_id":"B-1"}', P.UNKNOWN_BATCH),
    (In.ABORT, b'{"reason":"r"}', P.NO_ACTIVE_BATCH),
]

# Printable WIP ids a URL would misread: accepted, quoted as one path segment, refused by the MES
# as unknown (WIP_NOT_FOUND), never anything else.
ODD_WIPS = ["../../admin", "WIP%2F..%2F1", "WIP#frag", "WIP?x=1&y=2", "WIP/1", ".", ".."]
