"""bridge.web.metrics and the gauge board: labels that stay bounded, and what a gauge's
events count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.adapters.store import StoreError
from bridge.config import HttpConfig
from bridge.web.metrics import BridgeMetrics, MeteredStore, endpoint
from bridge.web.overview import DeviceBoard
from devices import DeviceConfig, DeviceStatus, GaugeError, Reading

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/health", "/health"),
        ("/api/v1/wip-items/WIP-KR01-001/scan", "/api/v1/wip-items/{wip}/scan"),
        ("/api/v1/wip-items/17/complete-process", "/api/v1/wip-items/{wip}/complete-process"),
        ("/api/v1/wip-items/17", "/api/v1/wip-items/{wip}"),
        ("/api/v1/auth/login/json", "/api/v1/auth/login/json"),
        ("/mes/api/v1/wip-items/W-1/trace", "/mes/api/v1/wip-items/{wip}/trace"),
    ],
)
def test_endpoint_labels_leave_the_wip_out(path: str, label: str) -> None:
    assert endpoint(path) == label


class Recorded:
    """The bridge's side, as far as the board is concerned: it only has to be passed on."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def reading(self, device: DeviceConfig, reading: Reading, at: datetime) -> None:
        self.seen.append("reading")

    async def gauge_error(self, device: DeviceConfig, error: GaugeError, at: datetime) -> None:
        self.seen.append("error")

    async def status(self, device: DeviceConfig, status: DeviceStatus) -> None:
        self.seen.append(status.state)


async def test_the_board_keeps_the_state_and_counts_reconnects() -> None:
    metrics = BridgeMetrics()
    inner = Recorded()
    board = DeviceBoard(inner, metrics=metrics)
    device = DeviceConfig(
        name="balance", port="/dev/null", station="1", format="and", measurement="weight"
    )
    for state in ("disconnected", "connected", "disconnected", "connected"):
        await board.status(device, DeviceStatus(state=state, since=T0))
    assert inner.seen == ["disconnected", "connected", "disconnected", "connected"]
    assert board.statuses[("1", "balance")].state == "connected"
    text = metrics.exposition().decode()
    # The first connection is not a reconnect; the second is.
    assert 'station_bridge_gauge_reconnects_total{device="balance"} 1.0' in text


@pytest.mark.parametrize(
    ("listen", "address"),
    [(None, None), ("127.0.0.1:9108", ("127.0.0.1", 9108)), ("[::1]:9108", ("::1", 9108))],
)
def test_http_listen(listen: str | None, address: tuple[str, int] | None) -> None:
    assert HttpConfig(listen=listen).address == address


def test_http_listen_needs_a_port() -> None:
    with pytest.raises(ValueError, match="listen"):
        HttpConfig(listen="127.0.0.1")


async def test_the_store_remembers_a_failed_commit_and_times_every_commit(tmp_path: Path) -> None:
    metrics = BridgeMetrics()
    store = MeteredStore(tmp_path / "store", metrics=metrics)
    try:
        with pytest.raises(StoreError):
            await store.commit({"k": "1"})  # not open: refused like a full disk's commit
        assert store.last_commit_failed
        await store.open()
        await store.commit({"k": "1"})
        assert not store.last_commit_failed
    finally:
        await store.close()
    text = metrics.exposition().decode()
    assert "station_bridge_store_commit_seconds_count 2.0" in text


async def test_the_board_counts_readings_and_keeps_the_last_ones_time() -> None:
    metrics = BridgeMetrics()
    board = DeviceBoard(Recorded(), metrics=metrics)
    device = DeviceConfig(
        name="scale1", port="/dev/null", station="3", format="and", measurement="weight_g"
    )
    reading = Reading(values={})
    for seconds in (0, 5):
        await board.reading(device, reading, T0 + timedelta(seconds=seconds))
    assert board.last_readings[("3", "scale1")] == T0 + timedelta(seconds=5)
    text = metrics.exposition().decode()
    assert 'station_bridge_gauge_readings_total{device="scale1"} 2.0' in text
