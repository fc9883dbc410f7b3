"""Pacing against the simulated MES's per-IP limit, counted in 429s and requests (never in
seconds): across a `kill -9` and restart, after a `Retry-After`, one process-list lookup for
every caller, and a recovery that does not wait for the next probe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, ResultKind
from bridge.mes import MesClient, MesError, MesErrorCode
from bridge.mes.settings import MesSettings
from mes_sim import MesSimulator

from .harness import MOSQUITTO, OPERATOR, Tablet, bridge_config, mosquitto_running, running
from .test_crash import BridgeProcess

R = ResultKind
PROCESS_LIST = "GET /api/v1/processes/active"


def api_requests(sim: MesSimulator) -> int:
    """Requests the MES counts against the limit (its /api/v1 paths but the login's)."""
    routes: dict[str, int] = sim.ledger()["requests_by_route"]
    return sum(n for route, n in routes.items() if "/api/v1/" in route and "/auth/" not in route)


async def eventually(check: Callable[[], bool], within: float = 30.0) -> None:
    # The simulator's state lives in its server thread, which offers no event to await.
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., MesClient]]:
    clients: list[MesClient] = []

    def make(sim: MesSimulator, **config: Any) -> MesClient:
        fields: dict[str, Any] = {"url": sim.url, "username": "admin", "password": "admin-pass"}
        client = MesClient(MesSettings(**fields, **config))
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")
@pytest.mark.timeout(180)
async def test_a_bridge_killed_and_restarted_stays_under_the_mes_limit(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # The first bridge fills the MES's window and is killed; the second must count those
    # requests too (mes-sends.log in data_dir) instead of pacing from an empty window.
    limit, window_s = 6, 8.0
    sim.set_faults(rate_limit_per_min=limit, rate_limit_window_s=window_s)
    host, port = MOSQUITTO
    config = bridge_config(
        sim,
        tmp_path / "data",
        host=host,
        port=port,
        mes={
            "url": sim.url,
            "username": "admin",
            "password": "admin-pass",
            "timeout_s": 5,
            "rate_limit": limit,
            "rate_window_s": window_s,
        },
    )
    config_file = tmp_path / "bridge.yaml"
    data = config.model_dump(mode="json")
    data["mes"]["password"] = "admin-pass"  # model_dump hides secrets
    config_file.write_text(yaml.safe_dump(data))
    bridge = BridgeProcess(config_file, tmp_path / "bridge.log")
    wips = sim.wip_ids[:4]
    availability = f"{config.mqtt.topic_prefix}/bridge/{config.bridge_id}/availability"
    try:
        async with Tablet(config) as tablet:
            bridge.start()
            await tablet.latest(availability, lambda p: p == "online", within=30)
            for station, wip in zip(("1", "2", "3", "1"), wips, strict=True):
                batch = f"{wip}-1"
                start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
                await tablet.send(station, Inbound.START, {**start, "batch_id": batch})
                await tablet.send(station, Inbound.COMPLETE, {"batch_id": batch, "result": "PASS"})
            await eventually(lambda: api_requests(sim) >= limit)
            bridge.kill()
            assert api_requests(sim) < 3 * len(wips), "the kill came too late to test anything"
            bridge.start()
            for station in ("1", "2", "3"):
                await tablet.status(
                    station, lambda s: s["outbox"]["pending_total"] == 0, within=120
                )
    finally:
        bridge.stop()
    assert {row["wip_id"] for row in sim.ledger()["history"]} == set(wips)
    assert sim.ledger()["rate_limited"] == 0


async def test_after_a_retry_after_requests_resume_at_the_pace_not_in_a_burst(
    sim_factory: Callable[..., MesSimulator], make_client: Callable[..., MesClient]
) -> None:
    # Another client on this IP has spent the MES's window, its requests spread out: the MES
    # frees one slot at a time. Our client learns of it from one 429; the requests waiting
    # behind that must then go out one per window / limit, not all when the hold ends.
    sim = sim_factory()
    sim.set_faults(rate_limit_per_min=10, rate_limit_window_s=4)
    client = make_client(sim, rate_limit=10, rate_window_s=4)  # one every 0.4 s
    async with httpx.AsyncClient(base_url=sim.url) as other:
        for _ in range(10):
            assert (await other.get("/api/v1/processes/active")).status_code == 200
            await asyncio.sleep(0.15)  # spread: the MES frees them one at a time
    first = asyncio.create_task(client.probe())
    await eventually(lambda: sim.ledger()["rate_limited"] == 1)
    waiting = [asyncio.create_task(client.probe()) for _ in range(9)]
    await asyncio.gather(first, *waiting)  # none of them was refused for good
    assert sim.ledger()["rate_limited"] == 1


async def test_callers_share_one_lookup_of_the_process_list(
    sim: MesSimulator, make_client: Callable[..., MesClient]
) -> None:
    client = make_client(sim)
    sim.set_faults(mode="error_500", path_contains="processes/active", times=1)
    failed = await asyncio.gather(
        *(client.scan(wip, process=1) for wip in sim.wip_ids[:10]), return_exceptions=True
    )
    assert all(isinstance(f, MesError) and f.code is MesErrorCode.SERVER for f in failed)
    assert sim.ledger()["requests_by_route"][PROCESS_LIST] == 1  # one failure, shared

    await asyncio.gather(*(client.scan(wip, process=1) for wip in sim.wip_ids[:10]))
    await client.scan(sim.wip_ids[10], process=1)
    assert sim.ledger()["requests_by_route"][PROCESS_LIST] == 2  # tried again once, then kept


@pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")
async def test_the_first_delivery_after_an_outage_does_not_wait_for_the_probe_interval(
    sim: MesSimulator, tmp_path: Path
) -> None:
    # With an hour between probes, only the free /health knock can notice the MES is back.
    host, port = MOSQUITTO
    fast = {"retry_min_s": 0.05, "retry_max_s": 0.2, "probe_interval_s": 3600, "settle_s": 0.3}
    config: BridgeConfig = bridge_config(sim, tmp_path / "data", host=host, port=port, outbox=fast)
    wips = sim.wip_ids[:4]
    async with Tablet(config) as tablet, running(config):
        sim.set_faults(mode="unavailable")
        for station, wip in zip(("1", "2", "3", "1"), wips, strict=True):
            start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR}
            await tablet.send(station, Inbound.START, start)
        await tablet.status("1", lambda s: s["mes"] == "offline")
        sim.set_faults(mode="ok")
        synced = await tablet.expect("1", R.SYNCED, within=30)
        assert synced["action"] == "start"
