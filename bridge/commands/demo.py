"""`station-bridge demo`: the whole bridge in one command.

An embedded MQTT broker, the MES simulator, the bridge as `station-bridge run` runs it, a serial
balance on a pseudo-terminal, and three stations (real MQTT clients) taking WIPs through
processes 1-6 to serial numbers, while the MES goes down for a while, loses an answer and
expires its tokens, and one unit needs a rework. Every outcome the tablets see is printed as it
arrives; the exit code is 0 only when every WIP was converted, the MES holds exactly one PASS per
process and WIP, and nothing is left in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import aiomqtt

from bridge.adapters.broker import find_free_port
from bridge.app import run_bridge, stop
from bridge.config import BridgeConfig
from bridge.core.topics import Inbound, Topics
from devices import GaugeSimulator
from mes_sim import MesSimulator

OPERATOR = 2  # operator1 on the simulator
TEST_TIME_S = 0.4
STATION_OF = {1: "1", 2: "1", 3: "2", 4: "2", 5: "3", 6: "3"}
Outcome = dict[str, Any]


def _config(sim: MesSimulator, data_dir: Path, gauge_port: str) -> BridgeConfig:
    return BridgeConfig(
        bridge_id="demo",
        data_dir=data_dir,
        mqtt={"host": "127.0.0.1", "port": find_free_port(), "embedded": True},
        mes={"url": sim.url, "username": "admin", "password": "admin-pass", "timeout_s": 2},
        # settle_s: the simulator is done with a request once it answers or drops it.
        outbox={"retry_min_s": 0.2, "retry_max_s": 1.0, "probe_interval_s": 0.5, "settle_s": 0.5},
        stations=[
            {
                "id": "1",
                "processes": [1, 2],
                "limits": {
                    1: {
                        "torque_nm": {
                            "min": 1.0,
                            "max": 2.0,
                            "unit": "Nm",
                            "defect": "TORQUE_OUT_OF_RANGE",
                        }
                    }
                },
            },
            {
                "id": "2",
                "processes": [3, 4],
                "limits": {
                    3: {
                        "mass_g": {
                            "min": 100,
                            "max": 200,
                            "unit": "g",
                            "defect": "MASS_OUT_OF_RANGE",
                        }
                    }
                },
            },
            {"id": "3", "processes": [5, 6], "auto_convert": True},
        ],
        devices=[
            {
                "name": "balance",
                "port": gauge_port,
                "station": "2",
                "measurement": "mass_g",
                "format": "and",
                "unit": "g",
                "reconnect_min_s": 0.2,
                "reconnect_max_s": 1.0,
            }
        ],
    )


class _Floor:
    """The stations and tablets: one MQTT client that publishes what they send and prints what
    they are told."""

    def __init__(self, client: aiomqtt.Client, topics: Topics, out: TextIO) -> None:
        self.client = client
        self.topics = topics
        self.out = out
        self.seen: list[Outcome] = []
        self.changed = asyncio.Condition()
        self.status: dict[str, Outcome] = {}
        self.stations = {sid: asyncio.Lock() for sid in ("1", "2", "3")}

    def say(self, where: str, what: str, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3]
        print(f"{stamp}  {where:<10} {what:<26} {text}", file=self.out, flush=True)

    def banner(self, text: str) -> None:
        print(f"\n-- {text} --", file=self.out, flush=True)

    async def listen(self) -> None:
        async for message in self.client.messages:
            topic = message.topic.value
            assert isinstance(message.payload, bytes)
            body = json.loads(message.payload)
            station = topic.split("/")[1]
            if "/device/" in topic:
                self.say(f"station {station}", f"gauge {body['device']}", body["state"])
                continue
            if topic.endswith("/status"):
                async with self.changed:
                    self.status[station] = body
                    self.changed.notify_all()
                continue
            if topic.endswith("/measurement/live"):
                body["event"] = "LIVE"
            else:  # the Korean sentence repeats the WIP: show it once
                korean = body["message_ko"].removeprefix(f"{body.get('wip_id')}: ")
                text = f"{body['message']} / {korean}"
                if "error" in body:
                    text += f" [{body.get('wip_id', '')} {body['error'].get('detail', '')}]"
                self.say(f"station {station}", body["event"], text)
            async with self.changed:
                self.seen.append(body)
                self.changed.notify_all()

    async def wait(
        self, match: Callable[[Outcome], bool], *, after: int = 0, within: float = 60
    ) -> Outcome:
        """The first outcome matching, among those that came after the `after`-th."""

        def found() -> Outcome | None:
            return next((o for o in self.seen[after:] if match(o)), None)

        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(lambda: found() is not None)
        outcome = found()
        assert outcome is not None
        return outcome

    async def drained(self, within: float = 10) -> None:
        """Until every station's status says the outbox is empty."""

        def empty() -> bool:
            return len(self.status) == 3 and all(
                s["outbox"]["pending"] == 0 for s in self.status.values()
            )

        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(empty)

    async def send(self, station: str, kind: Inbound, body: dict[str, Any]) -> None:
        await self.client.publish(self.topics.inbound(station, kind), json.dumps(body), qos=1)

    async def run_process(self, wip: str, process: int, *, rework: bool = False) -> None:
        """One station's work on one WIP: scan, measure, finish (a station tests one at a time)."""
        station = STATION_OF[process]
        where = f"station {station}"
        async with self.stations[station]:
            mark = len(self.seen)
            scan = {"wip_id": wip, "process_id": process, "operator_id": OPERATOR}
            await self.send(station, Inbound.START, scan)
            started = await self.wait(
                lambda o: o["event"].startswith("PROCESS_STARTED") and o["wip_id"] == wip,
                after=mark,
            )
            batch = started["batch_id"]
            await asyncio.sleep(TEST_TIME_S)  # the station runs its test sequence
            if station == "1":
                torque = {"name": "torque_nm", "value": 1.2 + process / 10, "unit": "Nm"}
                await self.send(station, Inbound.MEASUREMENT, {"batch_id": batch, **torque})
            elif station == "2":  # the balance's reading goes into the batch by itself
                live = await self.wait(
                    lambda o: o["event"] == "LIVE" and o.get("batch_id") == batch
                )
                mass = live["measurements"]["mass_g"]
                self.say(where, "gauge balance", f"{mass['value']} {mass['unit']} → batch {batch}")
            else:
                values = {"voltage_v": 3.7, "leak_test": "PASS"}
                await self.send(
                    station, Inbound.MEASUREMENT, {"batch_id": batch, "measurements": values}
                )
            finish: dict[str, Any] = {"batch_id": batch}
            if rework:
                finish.update(result="REWORK", notes="connector reseated")
            await self.send(station, Inbound.COMPLETE, finish)
            await self.wait(
                lambda o: o["event"].startswith("SEQUENCE_COMPLETE") and o.get("batch_id") == batch,
                after=mark,
            )

    async def run_wip(self, wip: str, *, rework_at: int | None) -> None:
        for process in range(1, 7):
            if process == rework_at:
                await self.run_process(wip, process, rework=True)
            await self.run_process(wip, process)
        await self.wait(lambda o: o["event"] == "SERIAL_CREATED" and o["wip_id"] == wip, within=120)


async def _trouble(floor: _Floor, sim: MesSimulator, wips: list[str]) -> None:
    """What the MES does to the stations while they work."""

    def started(wip: str, process: int) -> Callable[[Outcome], bool]:
        return lambda o: (
            o["event"].startswith("PROCESS_STARTED")
            and (o["wip_id"], o["process_id"]) == (wip, process)
        )

    await floor.wait(started(wips[0], 2))
    floor.banner("the MES goes down for 2.5 seconds: the stations keep working")
    sim.set_faults(mode="unavailable")
    await asyncio.sleep(2.5)  # the length of the outage is the point here
    floor.banner("the MES is back: the outbox delivers what waited, in order")
    sim.set_faults(mode="ok")
    await floor.wait(started(wips[-1], 5), within=120)
    floor.banner("the MES records the next 완공 but its answer is lost")
    sim.set_faults(mode="drop_response", path_contains="/complete-process", times=1)
    await floor.wait(started(wips[-1], 6), within=120)
    floor.banner("30 minutes pass: the MES expires every access token")
    sim.set_faults(expire_tokens=True)


def _summary(floor: _Floor, sim: MesSimulator, wips: list[str], out: TextIO) -> bool:
    ledger = sim.ledger()
    print("\n-- summary --", file=out)
    ok = True
    serials = {
        o["wip_id"]: o.get("serial_number") for o in floor.seen if o["event"] == "SERIAL_CREATED"
    }
    for wip in wips:
        rows = [h for h in ledger["history"] if h["wip_id"] == wip]
        passes = sorted(h["process_number"] for h in rows if h["result"] == "PASS")
        [record] = [w for w in ledger["wips"] if w["wip_id"] == wip]
        masses = [h["measurements"].get("mass_g") for h in rows if h["process_number"] in (3, 4)]
        good = bool(
            passes == [1, 2, 3, 4, 5, 6]
            and record["status"] == "CONVERTED"
            and record["serial_number"] is not None
            and serials.get(wip) == record["serial_number"]
            and all(isinstance(mass, float) for mass in masses)
        )
        ok &= good
        fails = len(rows) - len(passes)
        print(
            f"  {wip}  PASS on {passes}{f' (+{fails} FAIL)' if fails else ''}, balance "
            f"{masses} g, {record['status']}, serial {record['serial_number']}  "
            f"{'✓' if good else '✗'}",
            file=out,
        )
    pending: int = sum(s["outbox"]["pending"] for s in floor.status.values())
    dead: int = sum(s["outbox"]["dead_letters"] for s in floor.status.values())
    ok &= pending == 0 and dead == 0
    print(
        f"  outbox: {pending} pending, {dead} dead letters; MES requests {ledger['requests']}, "
        f"logins {ledger['logins']}, token refreshes {ledger['refreshes']}",
        file=out,
    )
    print(f"\n{'OK' if ok else 'FAILED'}: {len(wips)} WIPs", file=out, flush=True)
    return ok


async def run_demo(*, wips: int, out: TextIO) -> int:
    count = max(wips, 2)
    with (
        MesSimulator(port=0, wips=count) as sim,
        GaugeSimulator(format="and", rate_hz=5, value=152.3, unit="g", wander=True) as gauge,
        tempfile.TemporaryDirectory(prefix="station-bridge-demo-") as data,
    ):
        config = _config(sim, Path(data), gauge.path)
        print(
            f"MES simulator at {sim.url}; embedded MQTT broker on 127.0.0.1:"
            f"{config.mqtt.port}; A&D balance on {gauge.path}",
            file=out,
        )
        ready = asyncio.Event()
        bridge = asyncio.create_task(run_bridge(config, ready=ready))
        try:
            async with asyncio.timeout(30):
                await ready.wait()
            topics = Topics()
            client = aiomqtt.Client("127.0.0.1", config.mqtt.port, identifier="demo-floor")
            async with client:
                for topic in (
                    topics.results(),
                    topics.status("+"),
                    topics.live("+"),
                    topics.device_status("+", "+"),
                ):
                    await client.subscribe(topic, qos=1)
                floor = _Floor(client, topics, out)
                listener = asyncio.create_task(floor.listen())
                names = sim.wip_ids[:count]
                try:
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(_trouble(floor, sim, names))
                        for index, wip in enumerate(names):
                            rework = 2 if index == 1 else None
                            tasks.create_task(floor.run_wip(wip, rework_at=rework))
                    with contextlib.suppress(TimeoutError):  # else the summary says what is left
                        await floor.drained()
                finally:
                    listener.cancel()
                ok = _summary(floor, sim, names, out)
        finally:
            await stop(bridge)
    return 0 if ok else 1
