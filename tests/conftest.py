"""Fixtures shared by every test tree: a simulated MES on a loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mes_sim import MesSimulator


@pytest.fixture
def sim() -> Iterator[MesSimulator]:
    """A started simulator with the defaults (deployed semantics, 20 WIPs), on a free port."""
    with MesSimulator() as simulator:
        yield simulator


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., MesSimulator]]:
    """Start simulators with MesSimulator's keyword arguments; all are stopped at teardown."""
    started: list[MesSimulator] = []

    def make(**options: object) -> MesSimulator:
        simulator = MesSimulator(**options)  # type: ignore[arg-type]
        simulator.start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()
