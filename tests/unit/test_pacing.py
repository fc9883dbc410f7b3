"""The pacer, on a clock the test moves: no sleeps, no wall-clock thresholds."""

from __future__ import annotations

import pytest

from bridge.mes.pacing import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def send(pacer: Pacer, clock: FakeClock, *, takes: float = 0.0) -> None:
    async with pacer.slot():
        clock.now += takes


async def test_allows_limit_requests_per_window_then_asks_to_wait() -> None:
    clock = FakeClock()
    pacer = Pacer(limit=3, window_s=60, clock=clock)
    for _ in range(3):
        assert pacer.delay() == 0
        await send(pacer, clock)
    assert pacer.delay() == pytest.approx(60)
    clock.now += 45
    assert pacer.delay() == pytest.approx(15)
    clock.now += 15
    assert pacer.delay() == 0


async def test_window_slides_one_request_at_a_time() -> None:
    clock = FakeClock()
    pacer = Pacer(limit=2, window_s=10, clock=clock)
    await send(pacer, clock)
    clock.now += 4
    await send(pacer, clock)
    assert pacer.delay() == pytest.approx(6)
    clock.now += 6
    assert pacer.delay() == 0
    await send(pacer, clock)
    assert pacer.delay() == pytest.approx(4)


async def test_a_request_counts_until_a_window_after_its_answer() -> None:
    # The MES counted it on arrival, at the latest when the answer left: so count from there.
    clock = FakeClock()
    pacer = Pacer(limit=1, window_s=10, clock=clock)
    await send(pacer, clock, takes=3)
    assert pacer.delay() == pytest.approx(10)


async def test_requests_in_flight_count() -> None:
    clock = FakeClock()
    pacer = Pacer(limit=1, window_s=10, clock=clock)
    async with pacer.slot():
        assert pacer.delay() == pytest.approx(10)


async def test_hold_pauses_everyone_until_retry_after() -> None:
    clock = FakeClock()
    pacer = Pacer(limit=100, window_s=60, clock=clock)
    pacer.hold(7)
    assert pacer.delay() == pytest.approx(7)
    pacer.hold(2)  # a shorter hold never shortens a longer one
    assert pacer.delay() == pytest.approx(7)
    clock.now += 7
    assert pacer.delay() == 0


@pytest.mark.parametrize(("limit", "window"), [(0, 60), (1, 0), (-1, 1)])
def test_rejects_nonsense(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        Pacer(limit=limit, window_s=window)
