"""bridge.core.redelivery: the record a message leaves, and recognising it when it comes again."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from bridge.core import redelivery
from bridge.core.topics import Received

MESSAGE = Received("station/1/measurement", b'{"name":"t","value":1}', mid=7)


@pytest.mark.parametrize(
    "answers",
    [
        [],
        [("station/1/result/error", {"event": "SEQUENCE_ERROR", "error": {"code": "X"}})],
        [("a", {"note": '한 \u2028 "q" \\ \t'}), ("b", {"n": [1, 2.5, None, True]})],
    ],
    ids=["none", "one", "several-odd-text"],
)
def test_a_record_is_the_compact_json_of_its_digest_and_answers(
    answers: list[tuple[str, dict[str, Any]]],
) -> None:
    digest = hashlib.sha256(MESSAGE.topic.encode() + b"\0" + MESSAGE.payload).hexdigest()[:32]
    expected = json.dumps(
        {"digest": digest, "answers": [list(answer) for answer in answers]},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    record = redelivery.handled(MESSAGE, answers)
    assert record == expected
    again = Received(MESSAGE.topic, MESSAGE.payload, mid=MESSAGE.mid, redelivered=True)
    assert redelivery.answered_before(again, record) == answers
