"""Fixtures for the simulator's own tests (the shared `sim` and `sim_factory` live one level up)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mes_sim import MesSimulator

from .support import Mes


@pytest.fixture
def mes(sim: MesSimulator) -> Iterator[Mes]:
    """A logged-in client of the default simulator."""
    client = Mes(sim)
    client.login()
    yield client
    client.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., Mes]]:
    """Clients for other simulators (from sim_factory); closed at teardown."""
    clients: list[Mes] = []

    def make(sim: MesSimulator, *, login: bool = True, timeout: float = 5.0) -> Mes:
        client = Mes(sim, timeout=timeout)
        if login:
            client.login()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
