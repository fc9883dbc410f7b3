"""A bridge config for the benchmarks with many stations and the MES down, and an outbox filled
before the bridge starts (imports nothing but the bridge, so that bench/memory.py measures only
what the bridge loads)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.adapters.store import Store
from bridge.config import BridgeConfig
from bridge.core.outbox import NEXT_SEQ_KEY, Change, Entry
from bridge.mes.models import StartProcess

MOSQUITTO = ("127.0.0.1", 1883)
OPERATOR = 2  # operator1 on the MES simulator


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def config(data_dir: Path, tag: str, stations: int) -> BridgeConfig:
    return BridgeConfig(
        bridge_id=f"bench-{tag}",
        data_dir=data_dir,
        log_level="WARNING",
        mqtt={"host": MOSQUITTO[0], "port": MOSQUITTO[1], "topic_prefix": f"bench-{tag}"},
        mes={"url": f"http://127.0.0.1:{closed_port()}", "username": "a", "password": "b"},
        outbox={"max_pending": 1_000_000},
        stations=[{"id": f"S{n:02d}"} for n in range(stations)],
    )


async def fill(config: BridgeConfig, pending: int) -> None:
    """N pending starts on disk, as the bridge writes them, before it starts."""
    now = datetime.now(UTC)
    stations = [station.id for station in config.stations]
    entries = [
        Entry(
            seq=seq,
            request=StartProcess(
                wip_id=f"OLD-{seq:06d}", process=1, operator_id=OPERATOR, started_at=now
            ),
            station_id=stations[seq % len(stations)],
            batch_id=f"OLD-{seq:06d}",
            batch_uid=f"old-{seq}",
            enqueued_at=now,
            attempts=1,
            announced=True,
            next_attempt_at=now + timedelta(hours=1),
            last_error={"code": "NETWORK", "message": "connection refused"},
        )
        for seq in range(1, pending + 1)
    ]
    store = Store(config.store_dir)
    await store.open()
    try:
        writes = Change(entries=entries).writes()
        writes[NEXT_SEQ_KEY] = str(pending + 1)
        await store.commit(writes)
    finally:
        await store.close()
