"""Client-side pacing: keep this process under the MES's per-IP request limit."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger(__name__)


class SendLog:
    """The pacer's recent sends on disk, so that a process started after a `kill -9` knows what
    the MES still counts against this IP (an empty window would spend the budget twice).

    One line `<key> <unix time> s` is appended when a request goes out and `<key> <unix time> a`
    when its answer is in: the answer's stamp is the one that counts, as in the pacer. A request
    the killed process sent and never saw answered may have reached the MES any time before its
    timeout: it counts from `unanswered_s` after it was sent. Wall-clock time, because a
    monotonic clock starts afresh with each process. The file is rewritten with only the
    window's sends when it has grown to a few windows' worth. No fsync: the page cache outlives
    a killed process, and after a power cut the box takes longer than a window to boot.
    """

    def __init__(
        self,
        path: Path,
        *,
        window_s: float,
        unanswered_s: float = 0.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._window_s = window_s
        self._unanswered_s = unanswered_s
        self._wall = wall
        self._lines = 0
        self._failed = False

    def recent(self) -> dict[int, float]:
        """Key -> age in seconds of each send still in the window (unreadable: none)."""
        try:
            text = self._path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return {}
        except OSError as error:
            _log.warning(
                "cannot read the MES send log %s: pacing from empty: %s", self._path, error
            )
            return {}
        sent: dict[int, float] = {}
        answered: dict[int, float] = {}
        for line in text.splitlines():
            match line.split(" "):
                case [key, stamp, "s" | "a" as kind]:
                    try:
                        number, at = int(key), float(stamp)
                    except ValueError:
                        continue
                    stamps = answered if kind == "a" else sent
                    stamps[number] = max(stamps.get(number, at), at)
                case _:
                    continue  # a line cut short by the kill
        stamps = {key: at + self._unanswered_s for key, at in sent.items()}
        stamps.update(answered)
        now = self._wall()
        # An unanswered send counts from up to `unanswered_s` ahead; anything further ahead is
        # the clock having been set back, and must not hold the pacer for as long.
        ages = {key: max(now - at, -self._unanswered_s) for key, at in stamps.items()}
        return {key: age for key, age in ages.items() if age < self._window_s}

    def note(self, key: int, *, answered: bool) -> None:
        self._append(f"{key} {self._wall():.3f} {'a' if answered else 's'}\n")

    def rewrite(self, ages: dict[int, tuple[float, bool]]) -> None:
        """Replace the file with these sends (key -> age in seconds, and whether answered)."""
        now = self._wall()
        text = "".join(
            f"{key} {now - age:.3f} {'a' if answered else 's'}\n"
            for key, (age, answered) in ages.items()
        )
        partial = self._path.with_name(self._path.name + ".new")
        try:
            if not text:
                self._path.unlink(missing_ok=True)
            else:
                partial.write_text(text, encoding="ascii")
                os.replace(partial, self._path)
        except OSError as error:
            self._warn(error)
            return
        self._lines = len(ages)

    @property
    def lines(self) -> int:
        return self._lines

    def _append(self, line: str) -> None:
        try:
            with self._path.open("a", encoding="ascii") as file:
                file.write(line)
        except OSError as error:
            self._warn(error)
            return
        self._lines += 1

    def _warn(self, error: OSError) -> None:
        # Pacing goes on from memory: a full disk must not stop deliveries.
        if not self._failed:
            _log.warning("cannot write the MES send log %s: %s", self._path, error)
        self._failed = True


class Pacer:
    """A sliding-window limit shared by every caller of one client.

    The MES counts requests per client IP over a sliding 60 s window; counting the same way here
    keeps the whole edge box below it. A request counts from when it is sent, and is stamped
    again when its answer is in: the MES counted it on arrival, somewhere in between, so the
    later stamp keeps our window from ever ending before the MES's does.

    `hold` is how a 429 is waited out: every caller pauses until the MES's `Retry-After` has
    passed, instead of each one retrying on its own. A 429 means the MES counts more than we
    do (another process on this IP), so for a window after the hold the requests go out at the
    configured pace (`window_s / limit` apart) rather than as fast as our own count allows:
    the MES frees its slots one at a time, and a burst would meet 429s again.

    With a `log`, the sends of an earlier process (one killed mid-run) count as well.
    """

    def __init__(
        self,
        *,
        limit: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        log: SendLog | None = None,
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a pacer needs limit >= 1 and window_s > 0")
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._log = log
        self._hold_until = 0.0
        self._paced_until = 0.0
        self._lock = asyncio.Lock()  # waiters are served in arrival order
        self._sent: list[_Send] = []  # the requests in the window
        if log is not None:
            ages = log.recent()
            now = clock()  # after the read: an age only grows meanwhile
            self._sent = [_Send(now - age, key, answered=True) for key, age in sorted(ages.items())]
            log.rewrite({key: (age, True) for key, age in ages.items()})
        self._next_key = max((send.key for send in self._sent), default=-1) + 1

    def hold(self, seconds: float) -> None:
        self._hold_until = max(self._hold_until, self._clock() + seconds)
        self._paced_until = self._hold_until + self._window_s

    def delay(self) -> float:
        """Seconds until the next request may go out (0 when it may go now)."""
        now = self._clock()
        self._sent = [send for send in self._sent if now - send.at < self._window_s]
        wait = self._hold_until - now
        if len(self._sent) >= self._limit:
            oldest = min(send.at for send in self._sent)
            wait = max(wait, oldest + self._window_s - now)
        if now < self._paced_until and self._sent:
            latest = max(send.at for send in self._sent)
            wait = max(wait, latest + self._window_s / self._limit - now)
        return max(wait, 0.0)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for room in the window, then send the request inside this block."""
        async with self._lock:
            # Waiting for a point in time, not for an event: a sleep is the right tool.
            while (wait := self.delay()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            send = _Send(self._clock(), self._next_key)
            self._next_key += 1
            self._sent.append(send)
            self._noted(send)
        try:
            yield
        finally:
            send.at = self._clock()
            send.answered = True
            self._noted(send)

    def _noted(self, send: _Send) -> None:
        if self._log is None:
            return
        self._log.note(send.key, answered=send.answered)
        if self._log.lines > 4 * self._limit:
            now = self._clock()
            self._log.rewrite({s.key: (now - s.at, s.answered) for s in self._sent})


@dataclass(slots=True)
class _Send:
    """One request in the window: `at` is when it went out, then when its answer was in."""

    at: float
    key: int
    answered: bool = False
