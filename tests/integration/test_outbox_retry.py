"""`station-bridge outbox retry` against the simulated MES: a dead letter is put back only when
the MES recorded nothing newer of the same WIP and process since (a stale FAIL replayed after a
newer PASS would leave the WIP FAILED)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.adapters.store import Store, read_directory
from bridge.commands.admin import (
    AdminError,
    change_stopped_bridge,
    check_alone,
    plan_retry,
    report_change,
)
from bridge.config import BridgeConfig
from bridge.core.domain import Result
from bridge.core.outbox import Change, Entry, load_state
from bridge.mes import CompleteProcess, MesClient, StartProcess
from mes_sim import MesSimulator

T = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
OPERATOR = 2


@pytest.fixture
def config(sim: MesSimulator, tmp_path: Path) -> BridgeConfig:
    return BridgeConfig(
        data_dir=tmp_path / "data",
        mes={"url": sim.url, "username": "admin", "password": "admin-pass", "timeout_s": 5},
        stations=[{"id": "1"}],
    )


@pytest.fixture
async def mes(config: BridgeConfig) -> AsyncIterator[MesClient]:
    async with MesClient(config.mes) as client:
        yield client


def complete(wip: str, result: Result, at: datetime) -> CompleteProcess:
    return CompleteProcess(
        wip_id=wip,
        process=1,
        operator_id=OPERATOR,
        result=result,
        started_at=at - timedelta(minutes=1),
        completed_at=at,
    )


async def dead_letter(config: BridgeConfig, request: CompleteProcess) -> Entry:
    """What a bridge leaves behind when the MES refused a request (the bridge stopped since)."""
    entry = Entry(
        seq=7,
        request=request,
        station_id="1",
        enqueued_at=request.completed_at,
        attempts=1,
        dead_at=request.completed_at,
        dead_reason={"code": "CONFLICT", "detail": "Database constraint violation"},
    )
    store = Store(config.store_dir)
    await store.open()
    await store.commit(Change(entries=[entry]).writes())
    await store.close()
    return entry


async def test_a_stale_fail_is_not_replayed_after_a_newer_pass(
    sim: MesSimulator, config: BridgeConfig, mes: MesClient
) -> None:
    wip = sim.wip_ids[0]
    await dead_letter(config, complete(wip, Result.FAIL, T))
    # Since then, a rework of the same process passed and was delivered.
    later = T + timedelta(minutes=30)
    await mes.start_process(
        StartProcess(wip_id=wip, process=1, operator_id=OPERATOR, started_at=later)
    )
    await mes.complete_process(complete(wip, Result.PASS, later + timedelta(minutes=5)))

    with pytest.raises(AdminError, match=r"#7 .* not put back: the MES holds a PASS of process 1"):
        await retry(config, [7])
    [entry] = load_state(read_directory(config.store_dir))[1]
    assert entry.dead  # still a dead letter: nothing was changed


async def test_a_dead_letter_with_only_older_records_at_the_mes_is_put_back(
    sim: MesSimulator, config: BridgeConfig, mes: MesClient
) -> None:
    wip = sim.wip_ids[1]
    earlier = T - timedelta(hours=1)
    await mes.start_process(
        StartProcess(wip_id=wip, process=1, operator_id=OPERATOR, started_at=earlier)
    )
    await mes.complete_process(complete(wip, Result.FAIL, earlier + timedelta(minutes=5)))
    await dead_letter(config, complete(wip, Result.PASS, T))

    out = io.StringIO()
    report_change(await retry(config, [7]), out=out)
    # The trace read is in the bridge's send log: the bridge, started again, paces with it.
    assert " s\n" in config.mes_send_log.read_text()
    assert "back in the queue: #7 complete process 1" in out.getvalue()
    [entry] = load_state(read_directory(config.store_dir))[1]
    assert not entry.dead


async def test_retry_refuses_when_the_mes_cannot_be_asked(
    sim: MesSimulator, config: BridgeConfig
) -> None:
    await dead_letter(config, complete(sim.wip_ids[2], Result.FAIL, T))
    sim.set_faults(mode="unavailable")
    with pytest.raises(AdminError, match="cannot check #7 against the MES's trace"):
        await retry(config, [7])
    [entry] = load_state(read_directory(config.store_dir))[1]
    assert entry.dead


async def retry(config: BridgeConfig, seqs: list[int]) -> Change:
    """`station-bridge outbox retry` with the bridge stopped."""
    return await change_stopped_bridge(
        config,
        lambda _, outbox: plan_retry(outbox, seqs),
        check=lambda change: check_alone(config, change),
    )
