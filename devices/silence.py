"""When a connected gauge has gone quiet: a pure decision, fed the time and what happened.

The port can be open and the gauge still gone: switched off, the cable pulled on the gauge's side
of a USB adapter, a balance left in a menu. Only its silence shows it.

- A polled gauge is asked every `poll.interval_s`. A poll is missed when the next one is sent and
  no line came in between; after `poll.stale_after` missed polls in a row the gauge is `stale`,
  after `poll.error_after` it is `error`.
- A streaming gauge (with `max_silence_s`) is `stale` once no line came for longer than
  `max_silence_s`, and `error` after `silence_error_s` (when set).

Any line counts as an answer (a value, a gauge error, an unstable value, even garbage): the
question is whether something is talking, not whether it makes sense. The detail of a verdict names
the threshold, not the running count, so that the status changes twice, not at every poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from devices.config import DeviceConfig

QuietLevel = Literal["stale", "error"]


@dataclass(frozen=True)
class Quiet:
    """The gauge has gone quiet: the status to show while it stays so."""

    level: QuietLevel
    detail: str


class SilenceWatch:
    """One connected session of one gauge: `heard`, `polled` and `verdict(now)`.

    `verdict` is None while the gauge talks (or when the device asks for no watching).
    """

    def __init__(self, device: DeviceConfig, *, started: datetime) -> None:
        self._poll = device.poll
        self._max_silence_s = device.max_silence_s
        self._silence_error_s = device.silence_error_s
        self._last_heard = started
        self._missed = 0
        self._awaiting = False  # a poll was sent and nothing has come since

    def heard(self, now: datetime) -> None:
        self._last_heard = now
        self._missed = 0
        self._awaiting = False

    def polled(self, now: datetime) -> None:
        if self._awaiting:
            self._missed += 1
        self._awaiting = True

    def verdict(self, now: datetime) -> Quiet | None:
        if self._poll is not None:
            if self._missed >= self._poll.error_after:
                return Quiet("error", f"no answer to {self._poll.error_after} polls in a row")
            if self._missed >= self._poll.stale_after:
                return Quiet("stale", f"no answer to {self._poll.stale_after} polls in a row")
            return None
        if self._max_silence_s is None:
            return None
        silent_s = (now - self._last_heard).total_seconds()
        if self._silence_error_s is not None and silent_s > self._silence_error_s:
            return Quiet("error", f"silent for more than {self._silence_error_s:g} s")
        if silent_s > self._max_silence_s:
            return Quiet("stale", f"silent for more than {self._max_silence_s:g} s")
        return None
