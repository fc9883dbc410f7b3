"""The outgoing queue (`bridge.adapters.outgoing`): outcomes in order and never dropped while
connected, statuses coalesced per topic, what was in flight sent again after a broken connection."""

from __future__ import annotations

from bridge.adapters.outgoing import Message, Outgoing


def outcome(topic: str) -> Message:
    return Message(topic, topic.encode())


def status(topic: str, body: str) -> Message:
    return Message(topic, body.encode(), retain=True)


def drain(queue: Outgoing) -> list[Message]:
    sent = []
    while (taken := queue.take()) is not None:
        token, message = taken
        queue.acknowledged(token)
        sent.append(message)
    return sent


def test_while_connected_no_outcome_is_dropped_however_many_wait() -> None:
    queue = Outgoing(limit=3)
    for n in range(10):
        assert queue.add(outcome(f"o{n}"), connected=True)
    assert [m.topic for m in drain(queue)] == [f"o{n}" for n in range(10)]
    assert queue.dropped == 0


def test_while_the_broker_is_away_the_oldest_waiting_outcome_is_dropped_and_counted() -> None:
    queue = Outgoing(limit=3)
    kept = [queue.add(outcome(f"o{n}"), connected=False) for n in range(5)]
    assert kept == [True, True, True, False, False]
    assert [m.topic for m in drain(queue)] == ["o2", "o3", "o4"]
    assert queue.dropped == 2


def test_statuses_keep_only_the_latest_per_topic_and_never_crowd_out_outcomes() -> None:
    queue = Outgoing(limit=1)
    queue.add(status("s1", "old"), connected=False)
    queue.add(status("s2", "only"), connected=False)
    queue.add(outcome("o1"), connected=False)
    queue.add(status("s1", "new"), connected=False)
    assert queue.dropped == 0
    sent = drain(queue)
    assert [(m.topic, m.body) for m in sent] == [
        ("o1", b"o1"),
        ("s2", b"only"),
        ("s1", b"new"),
    ]


def test_what_was_in_flight_goes_out_again_first_in_order_after_a_broken_connection() -> None:
    queue = Outgoing(limit=10)
    for topic in ("a", "b", "c"):
        queue.add(outcome(topic), connected=True)
    queue.add(status("s", "sent"), connected=True)
    first = queue.take()
    second = queue.take()
    assert first is not None and second is not None
    queue.acknowledged(first[0])  # "a" arrived; "b" was in flight
    queue.connection_lost()
    assert [m.topic for m in drain(queue)] == ["b", "c", "s"]


def test_a_status_in_flight_at_the_break_is_not_sent_again_when_a_newer_one_waits() -> None:
    queue = Outgoing(limit=10)
    queue.add(status("s", "old"), connected=True)
    assert queue.take() is not None  # in flight, never acknowledged
    queue.add(status("s", "new"), connected=True)
    queue.connection_lost()
    assert [m.body for m in drain(queue)] == [b"new"]
