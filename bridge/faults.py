"""Seams where a fault can be put on purpose: the windows where a crash or a lost packet leaves
two sides disagreeing (after the disk commit and before the MQTT ack; inside a group commit;
after an MES request was sent and before its answer was read; at a lane's first await).

Product code calls `await faults.hit(FaultPoint.X)` at each seam. Nothing happens unless a test
armed that point: in-process tests arm an action (raise, cancel, wait on an event); a bridge run
as its own process is armed through `STATION_BRIDGE_FAULTS`, e.g. `after_commit=kill@3` (SIGKILL
itself at the third time it passes that point), so that a crash lands exactly in the window.
"""

from __future__ import annotations

import inspect
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

ENV = "STATION_BRIDGE_FAULTS"

Action = Callable[[], Awaitable[None] | None]


class FaultPoint(StrEnum):
    INSIDE_COMMIT = "inside_commit"  # a group's commit is being written
    AFTER_COMMIT = "after_commit"  # a group is on disk; its messages are not acknowledged yet
    AFTER_SEND = "after_send"  # an MES request went out; its answer has not been read
    LANE_START = "lane_start"  # a delivery lane's first await


def kill() -> None:
    """Die as a power cut would: no cleanup, no goodbye to the broker."""
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class _Armed:
    action: Action
    at: int  # fires at this hit (1 = the next one) ...
    times: int  # ... and on this many hits from there
    seen: int = 0


class Faults:
    """The armed seams of one bridge (none, unless a test or the environment armed some)."""

    def __init__(self) -> None:
        self._armed: dict[FaultPoint, list[_Armed]] = {}

    def arm(self, point: FaultPoint, action: Action, *, at: int = 1, times: int = 1) -> None:
        """Run `action` when `point` is passed for the `at`-th time, and `times` times from
        there. An exception it raises surfaces at the seam, as the real fault would."""
        self._armed.setdefault(point, []).append(_Armed(action, at, times))

    async def hit(self, point: FaultPoint) -> None:
        for armed in self._armed.get(point, ()):
            armed.seen += 1
            if armed.at <= armed.seen < armed.at + armed.times:
                result = armed.action()
                if inspect.isawaitable(result):
                    await result

    @classmethod
    def from_env(cls, text: str | None = None) -> Faults:
        """Parse `point=kill@N[xTIMES],…` (the only action a separate process can be given)."""
        faults = cls()
        text = os.environ.get(ENV, "") if text is None else text
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, _, rest = item.partition("=")
            action, _, when = rest.partition("@")
            at, _, times = when.partition("x")
            if action != "kill":
                raise ValueError(f"{ENV}: {item!r}: the only action is kill")
            faults.arm(FaultPoint(name), kill, at=int(at or 1), times=int(times or 1))
        return faults
