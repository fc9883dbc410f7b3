"""A gauge that goes quiet: the decision (a table), then a reader on a pty whose gauge stops
answering and comes back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices import GaugeReader, GaugeSimulator
from devices.silence import SilenceWatch

from .support import Recorder, make_device, running

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
POLLED = {"format": "sics", "poll": {"interval_s": 1, "stale_after": 2, "error_after": 4}}
STREAMING = {"max_silence_s": 5, "silence_error_s": 20}

# Events at seconds after the session started: "poll", "line" or "tick"; the verdict after each.
STALE_POLLS = "stale: no answer to 2 polls in a row"
ERROR_POLLS = "error: no answer to 4 polls in a row"
STALE_SILENT = "stale: silent for more than 5 s"
ERROR_SILENT = "error: silent for more than 20 s"


@pytest.mark.parametrize(
    ("device", "events"),
    [
        pytest.param(
            POLLED, [(0, "poll", None), (0.1, "line", None), (1, "poll", None)], id="answered"
        ),
        pytest.param(
            POLLED,
            [(0, "poll", None), (1, "poll", None), (2, "poll", STALE_POLLS)],
            id="two-missed-polls-are-stale",
        ),
        pytest.param(
            POLLED,
            [(t, "poll", None) for t in range(2)]
            + [(t, "poll", STALE_POLLS) for t in range(2, 4)]
            + [(4, "poll", ERROR_POLLS), (5, "poll", ERROR_POLLS), (5.5, "line", None)],
            id="four-missed-are-error-an-answer-clears",
        ),
        pytest.param(
            POLLED,
            [
                *[(0, "poll", None), (1, "poll", None), (1.5, "line", None)],
                *[(2, "poll", None), (3, "poll", None), (4, "poll", STALE_POLLS)],
            ],
            id="an-answer-restarts-the-count",
        ),
        pytest.param(
            POLLED, [(0, "tick", None), (600, "tick", None)], id="a-polled-gauge-has-no-clock"
        ),
        pytest.param(
            STREAMING,
            [(4.9, "tick", None), (5.0, "tick", None), (5.1, "tick", STALE_SILENT)],
            id="silent-longer-than-max-silence-is-stale",
        ),
        pytest.param(
            STREAMING,
            [(4, "line", None), (9, "tick", None), (9.1, "tick", STALE_SILENT)],
            id="silence-counts-from-the-last-line",
        ),
        pytest.param(
            STREAMING,
            [(20.1, "tick", ERROR_SILENT), (21, "line", None), (26.5, "tick", STALE_SILENT)],
            id="error-after-silence-error-then-a-line-clears",
        ),
        pytest.param(
            {"max_silence_s": 5}, [(3600, "tick", STALE_SILENT)], id="no-silence-error-stays-stale"
        ),
        pytest.param({}, [(3600, "tick", None)], id="not-watched"),
    ],
)
def test_silence_verdicts(
    device: dict[str, Any], events: list[tuple[float, str, str | None]]
) -> None:
    watch = SilenceWatch(make_device(**device), started=T0)
    for seconds, event, expected in events:
        now = T0 + timedelta(seconds=seconds)
        if event == "poll":
            watch.polled(now)
        elif event == "line":
            watch.heard(now)
        verdict = watch.verdict(now)
        got = f"{verdict.level}: {verdict.detail}" if verdict else None
        assert got == expected, f"after {event} at {seconds} s"


async def test_a_polled_gauge_that_stops_answering_goes_stale_then_error_and_comes_back() -> None:
    with GaugeSimulator(format="sics", value=20.0) as sim:
        events = Recorder()
        poll = {"interval_s": 0.05, "stale_after": 2, "error_after": 4}
        device = make_device(port=sim.path, format="sics", poll=poll)
        async with running(GaugeReader(device, events)):
            await events.wait_state("connected")
            await events.next_reading()
            sim.set_silent()
            stale = await events.wait_state("stale")
            error = await events.wait_state("error")
            sim.set_silent(False)
            back = await events.wait_state("connected")
            assert await events.next_value() == 20.0
    assert stale.detail == "no answer to 2 polls in a row"
    assert error.detail == "no answer to 4 polls in a row"
    assert back.detail == "" and back.last_reading_at is not None
    assert events.states() == ["connected", "stale", "error", "connected"]


async def test_a_streaming_gauge_silent_too_long_goes_stale_then_error_and_comes_back() -> None:
    with GaugeSimulator(format="and", rate_hz=50, value=3.0) as sim:
        events = Recorder()
        device = make_device(port=sim.path, max_silence_s=0.2, silence_error_s=0.4)
        async with running(GaugeReader(device, events)):
            await events.wait_state("connected")
            await events.next_reading()
            sim.set_silent()
            stale = await events.wait_state("stale")
            error = await events.wait_state("error")
            sim.set_silent(False)
            await events.wait_state("connected")
    assert stale.detail == "silent for more than 0.2 s"
    assert error.detail == "silent for more than 0.4 s"
    assert events.states() == ["connected", "stale", "error", "connected"]
