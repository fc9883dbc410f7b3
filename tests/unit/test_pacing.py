"""The pacer, on a clock the test moves: no sleeps, no wall-clock thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.mes.pacing import Pacer, SendLog


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


async def test_after_a_hold_requests_go_at_the_pace_for_a_window() -> None:
    # A 429 means the MES counts more than we do: when the hold ends, one request per
    # window / limit, not every waiting request at once.
    clock = FakeClock()
    pacer = Pacer(limit=10, window_s=60, clock=clock)
    pacer.hold(5)
    clock.now += 5
    assert pacer.delay() == 0
    await send(pacer, clock)
    assert pacer.delay() == pytest.approx(6)
    clock.now += 6
    await send(pacer, clock)
    clock.now += 60  # a window after the hold: our own count decides again
    await send(pacer, clock)
    assert pacer.delay() == 0


class FakeWall:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_new_pacer_counts_the_sends_an_earlier_process_logged(tmp_path: Path) -> None:
    path, wall = tmp_path / "sends.log", FakeWall()
    before = Pacer(
        limit=3, window_s=60, clock=FakeClock(), log=SendLog(path, window_s=60, wall=wall)
    )
    for _ in range(3):
        async with before.slot():
            wall.now += 1  # answered a second later: that stamp is the one kept
    wall.now += 10  # killed; started again (a new monotonic clock)
    after = Pacer(
        limit=3, window_s=60, clock=FakeClock(), log=SendLog(path, window_s=60, wall=wall)
    )
    assert after.delay() == pytest.approx(60 - 12)
    wall.now += 60
    again = Pacer(
        limit=3, window_s=60, clock=FakeClock(), log=SendLog(path, window_s=60, wall=wall)
    )
    assert again.delay() == 0
    assert not path.exists()  # nothing left in the window: nothing kept


async def test_the_send_log_is_compacted_and_survives_a_torn_line(tmp_path: Path) -> None:
    path, wall, clock = tmp_path / "sends.log", FakeWall(), FakeClock()
    pacer = Pacer(limit=2, window_s=10, clock=clock, log=SendLog(path, window_s=10, wall=wall))
    for _ in range(20):
        await send(pacer, clock)
        wall.now += 6
        clock.now += 6
    assert len(path.read_text().splitlines()) <= 4 * 2 + 2
    with path.open("a") as file:
        file.write("17 18000")  # cut short by a kill
    restarted = Pacer(limit=1, window_s=10, clock=clock, log=SendLog(path, window_s=10, wall=wall))
    assert restarted.delay() == pytest.approx(4)  # the last send, 6 s ago, still counts


def test_an_unreadable_or_unwritable_log_does_not_stop_pacing(tmp_path: Path) -> None:
    missing_dir = tmp_path / "absent" / "sends.log"
    pacer = Pacer(limit=1, window_s=10, log=SendLog(missing_dir, window_s=10))
    assert pacer.delay() == 0


async def test_a_send_killed_before_its_answer_counts_from_its_timeout(tmp_path: Path) -> None:
    # It may have reached the MES any time before the client would have given up on it.
    path, wall = tmp_path / "sends.log", FakeWall()
    before = Pacer(
        limit=1, window_s=60, clock=FakeClock(), log=SendLog(path, window_s=60, wall=wall)
    )
    killed = before.slot()
    await killed.__aenter__()  # sent; the process dies before the answer
    wall.now += 1
    after = Pacer(
        limit=1,
        window_s=60,
        clock=FakeClock(),
        log=SendLog(path, window_s=60, unanswered_s=10, wall=wall),
    )
    assert after.delay() == pytest.approx(60 + 10 - 1)
