"""`station-bridge demo`: the MES layer end to end against the simulator, in one command.

WIPs go through processes 1-6 and serial conversion while the MES does what the deployed one
does to a station: tokens expire, an answer gets lost, it goes down for a moment, it refuses a
REWORK. Every step is printed as it happens; the exit code is 0 only when every WIP was converted
and the simulator's ledger holds exactly the records that were sent.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TextIO, TypeVar

from mes_sim import MesSimulator

from .config import MesConfig
from .mes import (
    CompleteProcess,
    ConvertToSerial,
    MesClient,
    MesError,
    MesRequest,
    Result,
    StartProcess,
)

_T = TypeVar("_T")
OPERATOR = 2  # operator1 on the simulator
PROCESSES = range(1, 7)


class _Demo:
    def __init__(self, sim: MesSimulator, client: MesClient, out: TextIO) -> None:
        self.sim = sim
        self.client = client
        self.out = out
        self.clock = datetime.now(UTC)
        self.expected_rows = 0
        self.serials: dict[str, str] = {}

    def say(self, wip: str, step: str, outcome: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        # Hangul takes two terminal columns: pad by what the eye sees, not by characters.
        width = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in step)
        step += " " * max(24 - width, 0)
        print(f"{stamp}  {wip:<24} {step} {outcome}", file=self.out, flush=True)

    def banner(self, text: str) -> None:
        print(f"\n-- {text} --", file=self.out, flush=True)

    def tick(self) -> datetime:
        # Station time moves on by a plausible cycle per step, in aware UTC.
        self.clock += timedelta(seconds=40)
        return self.clock

    async def deliver(
        self, wip: str, step: str, request: MesRequest, call: Callable[[], Awaitable[_T]]
    ) -> _T | None:
        """Send once; on a lost answer ask the MES; on a passing outage wait and resend."""
        for _attempt in range(10):
            try:
                return await call()
            except MesError as error:
                if not error.retryable:
                    raise
                self.say(wip, step, f"✗ {error.code}: {error.message} / {error.message_ko}")
                self.sim.set_faults(mode="ok")  # each trouble in this demo lasts one attempt
                if error.maybe_applied and await self.client.recorded(request):
                    self.say(wip, step, "✓ the MES had recorded it (trace): not sent again")
                    return None
                await asyncio.sleep(error.retry_after or 0.5)
        raise RuntimeError(f"{wip}: {step} did not get through")

    async def process(self, wip: str, number: int, result: Result = Result.PASS) -> None:
        started_at = self.tick()
        start = StartProcess(
            wip_id=wip, process=number, operator_id=OPERATOR, started_at=started_at
        )
        started = await self.deliver(
            wip, f"P{number} 착공 start", start, lambda: self.client.start_process(start)
        )
        if started is not None:
            self.say(wip, f"P{number} 착공 start", f"✓ {started.status}")
        complete = CompleteProcess(
            wip_id=wip,
            process=number,
            operator_id=OPERATOR,
            result=result,
            started_at=started_at,
            completed_at=self.tick(),
            measurements={"torque_nm": round(1.2 + number * 0.1, 2), "cycle_time_ms": 40000},
        )
        step = f"P{number} 완공 {result}"
        done = await self.deliver(
            wip, step, complete, lambda: self.client.complete_process(complete)
        )
        self.expected_rows += 1
        if done is not None:
            sent = "" if done.sent_result is result else f" (sent as {done.sent_result})"
            self.say(wip, step, f"✓ {done.wip_status}{sent}")

    async def convert(self, wip: str) -> None:
        request = ConvertToSerial(wip_id=wip, operator_id=OPERATOR)
        serial = await self.deliver(
            wip, "serial conversion", request, lambda: self.client.convert_to_serial(request)
        )
        if serial is not None:
            self.serials[wip] = serial.serial_number
            self.say(wip, "serial conversion", f"✓ {serial.serial_number}")

    async def run(self, count: int) -> bool:
        wips = self.sim.wip_ids[:count]
        for index, wip in enumerate(wips):
            scanned = await self.client.scan(wip, process=1)
            self.say(wip, "scan", f"✓ MES id {scanned.id}, {scanned.status}")
            for number in PROCESSES:
                if index == 0 and number == 3:
                    self.banner("30 minutes pass: the MES expires every access token")
                    self.sim.set_faults(expire_tokens=True)
                if index == 0 and number == 5:
                    self.banner("the MES records the next 완공 but its answer is lost")
                    self.sim.set_faults(
                        mode="drop_response", path_contains="/complete-process", times=1
                    )
                if index == 1 and number == 2:
                    self.banner("a REWORK: the deployed MES refuses REWORK, so it goes as FAIL")
                    await self.process(wip, number, Result.REWORK)
                    self.banner("the FAILED WIP re-starts the same process")
                if index == 1 and number == 4:
                    self.banner("the MES is unavailable for a moment")
                    self.sim.set_faults(mode="unavailable")
                await self.process(wip, number)
            await self.convert(wip)
        return self.summary(wips)

    def summary(self, wips: list[str]) -> bool:
        ledger = self.sim.ledger()
        statuses = {w["wip_id"]: w for w in ledger["wips"]}
        self.banner("summary")
        ok = True
        for wip in wips:
            rows = [h for h in ledger["history"] if h["wip_id"] == wip]
            passes = sorted(h["process_number"] for h in rows if h["result"] == "PASS")
            record = statuses[wip]
            good = (
                passes == list(PROCESSES)
                and record["status"] == "CONVERTED"
                and record["serial_number"] is not None
                and self.serials.get(wip, record["serial_number"]) == record["serial_number"]
            )
            ok &= good
            print(
                f"  {wip}  {len(rows)} records, PASS on {passes}, {record['status']}, "
                f"serial {record['serial_number']}  {'✓' if good else '✗'}",
                file=self.out,
            )
        rows_ok = len(ledger["history"]) == self.expected_rows
        ok &= rows_ok
        print(
            f"  MES records: {len(ledger['history'])} (sent {self.expected_rows}, "
            f"no duplicates: {'✓' if rows_ok else '✗'}); requests {ledger['requests']}, "
            f"logins {ledger['logins']}, token refreshes {ledger['refreshes']}",
            file=self.out,
        )
        print(f"\n{'OK' if ok else 'FAILED'}: {len(wips)} WIPs", file=self.out, flush=True)
        return ok


async def run_demo(*, wips: int, out: TextIO) -> int:
    with MesSimulator(port=0, wips=max(wips, 2)) as sim:
        print(f"MES simulator (deployed semantics) at {sim.url}", file=out)
        config = MesConfig(url=sim.url, username="admin", password="admin-pass", timeout_s=5)
        async with MesClient(config) as client:
            ok = await _Demo(sim, client, out).run(max(wips, 2))
    return 0 if ok else 1
