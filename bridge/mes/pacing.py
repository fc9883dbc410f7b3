"""Client-side pacing: keep this process under the MES's per-IP request limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class Pacer:
    """A sliding-window limit shared by every caller of one client.

    The MES counts requests per client IP over a sliding 60 s window; counting the same way here
    keeps the whole edge box below it. A request counts from when it is sent, and is stamped
    again when its answer is in: the MES counted it on arrival, somewhere in between, so the
    later stamp keeps our window from ever ending before the MES's does.

    `hold` is how a 429 is waited out: every caller pauses until the MES's `Retry-After` has
    passed, instead of each one retrying on its own.
    """

    def __init__(
        self, *, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a pacer needs limit >= 1 and window_s > 0")
        self._limit = limit
        self._window_s = window_s
        self._clock = clock
        self._sent: list[list[float]] = []  # one mutable stamp per request in the window
        self._hold_until = 0.0
        self._lock = asyncio.Lock()  # waiters are served in arrival order

    def hold(self, seconds: float) -> None:
        self._hold_until = max(self._hold_until, self._clock() + seconds)

    def delay(self) -> float:
        """Seconds until the next request may go out (0 when it may go now)."""
        now = self._clock()
        self._sent = [stamp for stamp in self._sent if now - stamp[0] < self._window_s]
        wait = self._hold_until - now
        if len(self._sent) >= self._limit:
            oldest = min(stamp[0] for stamp in self._sent)
            wait = max(wait, oldest + self._window_s - now)
        return max(wait, 0.0)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for room in the window, then send the request inside this block."""
        async with self._lock:
            # Waiting for a point in time, not for an event: a sleep is the right tool.
            while (wait := self.delay()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            stamp = [self._clock()]
            self._sent.append(stamp)
        try:
            yield
        finally:
            stamp[0] = self._clock()
