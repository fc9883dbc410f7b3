"""What the bridge has to publish and the broker has not acknowledged yet (pure: the sending is
`bridge.adapters.mqtt`).

Two kinds, kept apart:
- outcomes (and everything else published without the retain flag): every one matters, in order;
  none is dropped while the broker is connected. While it is away they wait, up to a limit; past
  it the oldest waiting one is dropped, and counted.
- retained messages (statuses): only the latest per topic matters to anyone, so a newer one
  replaces one still waiting, and they never crowd out an outcome.

A message handed to the client is "in flight" until the broker acknowledged it; when the
connection breaks, what was in flight goes back to the front of the queue, in order, to be sent
again (QoS 1: at least once).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Message:
    topic: str
    body: bytes
    retain: bool = False


class Outgoing:
    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._outcomes: deque[Message] = deque()
        self._retained: dict[str, Message] = {}
        self._in_flight: dict[int, Message] = {}
        self._next_token = 0
        self.dropped = 0  # outcomes dropped while the broker was away

    def __len__(self) -> int:
        return len(self._outcomes) + len(self._retained)

    def add(self, message: Message, *, connected: bool) -> bool:
        """Queue a message; False when that dropped the oldest waiting outcome (the broker is
        away and the queue is full)."""
        if message.retain:
            self._retained.pop(message.topic, None)  # the newest goes last
            self._retained[message.topic] = message
            return True
        kept = True
        if not connected and len(self._outcomes) >= self._limit:
            self._outcomes.popleft()
            self.dropped += 1
            kept = False
        self._outcomes.append(message)
        return kept

    def take(self) -> tuple[int, Message] | None:
        """The next message to send, outcomes first, now in flight; None when nothing waits."""
        if self._outcomes:
            message = self._outcomes.popleft()
        elif self._retained:
            topic = next(iter(self._retained))
            message = self._retained.pop(topic)
        else:
            return None
        token = self._next_token
        self._next_token += 1
        self._in_flight[token] = message
        return token, message

    def acknowledged(self, token: int) -> None:
        self._in_flight.pop(token, None)

    def connection_lost(self) -> None:
        """What was in flight waits again, ahead of the rest, in the order it was sent; a
        retained message that has a newer one waiting is not needed any more."""
        in_flight = list(self._in_flight.values())
        self._in_flight.clear()
        self._outcomes.extendleft(reversed([m for m in in_flight if not m.retain]))
        retained = {m.topic: m for m in in_flight if m.retain}
        for topic, message in self._retained.items():
            retained.pop(topic, None)
            retained[topic] = message
        self._retained = retained
