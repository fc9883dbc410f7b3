"""Several bridges on one broker, each serving its own stations, against one MES whose per-IP
rate limit they share (docs/configuration.md: splitting `mes.rate_limit`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridge.core.topics import Inbound, ResultKind
from mes_sim import MesSimulator

from .harness import MOSQUITTO, OPERATOR, Tablet, bridge_config, event, mosquitto_running, running

pytestmark = pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")

WINDOW_S = 2.0
MES_LIMIT = 12  # requests per window, for both bridges together (one IP)


async def test_two_bridges_share_a_broker_and_the_mes_budget(
    sim: MesSimulator, tmp_path: Path
) -> None:
    sim.set_faults(rate_limit_per_min=MES_LIMIT, rate_limit_window_s=WINDOW_S)
    host, port = MOSQUITTO
    # Each bridge gets less than half the MES's budget: two pacers that do not know of each
    # other must stay under the limit together.
    mes_budget = {"rate_limit": MES_LIMIT // 2 - 1, "rate_window_s": WINDOW_S}
    first = bridge_config(
        sim, tmp_path / "a", host=host, port=port, stations=[{"id": "1"}, {"id": "2"}]
    )
    mes = {**first.mes.model_dump(), **mes_budget, "password": "admin-pass"}
    first = first.model_copy(update={"mes": first.mes.model_copy(update=mes_budget)})
    second = bridge_config(
        sim,
        tmp_path / "b",
        host=host,
        port=port,
        mqtt=first.mqtt.model_dump(),  # the same broker and topic prefix
        mes=mes,
        stations=[{"id": "3"}, {"id": "4"}],
    )
    served_by = {"1": first.bridge_id, "2": first.bridge_id}
    served_by |= {"3": second.bridge_id, "4": second.bridge_id}
    wips = dict(zip(served_by, sim.wip_ids, strict=False))

    async with Tablet(first) as tablet, running(first), running(second):
        for station, wip in wips.items():
            batch = f"{wip}-1"
            start = {"wip_id": wip, "process_id": 1, "operator_id": OPERATOR, "batch_id": batch}
            await tablet.send(station, Inbound.START, start)
            await tablet.send(station, Inbound.COMPLETE, {"batch_id": batch, "result": "PASS"})
        for station in wips:
            await tablet.expect(
                station, ResultKind.COMPLETED, where=event("SEQUENCE_COMPLETE"), within=30
            )
            await tablet.status(station, lambda s: s["outbox"]["pending"] == 0)

    # No bridge answered for a station of the other's (UNKNOWN_STATION), none got a 429.
    errors: list[Any] = [p for t, p in tablet.seen if t.endswith("/result/error")]
    assert errors == []
    assert sim.ledger()["rate_limited"] == 0
    for station, bridge_id in served_by.items():
        statuses = [p for t, p in tablet.seen if t == tablet.topics.status(station)]
        assert statuses and {s["bridge_id"] for s in statuses} == {bridge_id}
        started = tablet.results(station, ResultKind.STARTED)
        assert [p["event"] for p in started] == ["PROCESS_STARTED"]
