"""The `station-bridge` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.commands.live_admin import Plan
    from bridge.config import BridgeConfig
    from bridge.core.outbox import Change


def _mes_sim(args: argparse.Namespace) -> int:
    from mes_sim import serve

    try:
        serve(
            host=args.host,
            port=args.port,
            wips=args.wips,
            lot=args.lot,
            semantics=args.semantics,
            process_id_offset=args.process_id_offset,
            out=sys.stdout,
        )
    except (ValueError, OSError) as error:  # a bad seed option, or the port is taken
        print(f"station-bridge mes-sim: {error}", file=sys.stderr)
        return 2
    return 0


def _with_config(
    command: Callable[[argparse.Namespace, BridgeConfig], int],
) -> Callable[[argparse.Namespace], int]:
    """A command that needs `--config`: a file that does not load is exit 2, with its errors."""

    def run(args: argparse.Namespace) -> int:
        from bridge.config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 2
        return command(args, config)

    return run


@_with_config
def _mes_check(args: argparse.Namespace, config: BridgeConfig) -> int:
    from bridge.commands.mes_check import check_mes

    return asyncio.run(check_mes(config.mes, wip_id=args.wip, out=sys.stdout))


@_with_config
def _run(args: argparse.Namespace, config: BridgeConfig) -> int:
    from bridge.adapters.logs import setup
    from bridge.app import main as run_main

    setup(config.log_level, environ=os.environ)  # UTC, escaped lines; journald priorities
    return run_main(config)


@_with_config
def _check(args: argparse.Namespace, config: BridgeConfig) -> int:
    from bridge.commands.admin import show_config

    show_config(config, out=sys.stdout)
    return 0


@_with_config
def _outbox_list(args: argparse.Namespace, config: BridgeConfig) -> int:
    from bridge.adapters.store import StoreError
    from bridge.commands.admin import show_outbox

    try:
        show_outbox(config, out=sys.stdout, as_json=args.json)
    except StoreError as error:
        print(f"station-bridge outbox: {error}", file=sys.stderr)
        return 2
    return 0


def _gauge_sim(args: argparse.Namespace) -> int:
    from devices import run_gauge_sim
    from devices.line import LineSettings

    try:
        line = LineSettings.of(args.baud, args.framing) if args.baud else None
    except ValueError as error:
        print(f"station-bridge gauge-sim: {error}", file=sys.stderr)
        return 2
    return run_gauge_sim(
        format=args.format,
        rate_hz=args.rate,
        out=sys.stdout,
        line=line,
        terminator={"crlf": "\r\n", "cr": "\r", "lf": "\n"}[args.terminator],
        stream=False if args.polled else None,
        decimal_comma=args.decimal_comma,
    )


def _discover(args: argparse.Namespace) -> int:
    from devices.discover import run_discover
    from devices.discovery import SWEEP_FRAMINGS
    from devices.line import STANDARD_BAUDRATES

    return run_discover(
        args.port,
        timeout_s=args.timeout,
        baudrates=args.baud or STANDARD_BAUDRATES,
        framings=args.framing or SWEEP_FRAMINGS,
        out=sys.stdout,
        err=sys.stderr,
    )


def _baud_rates(text: str) -> list[int]:
    try:
        return [int(rate) for rate in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not baud rates: {text!r} (e.g. 2400,9600)") from None


@_with_config
def _gauge_watch(args: argparse.Namespace, config: BridgeConfig) -> int:
    from devices.watch import watch_gauge

    station, _, name = args.name.rpartition("/")
    found = [d for d in config.devices if d.name == name and station in ("", d.station)]
    if len(found) != 1:
        known = ", ".join(f"{d.station}/{d.name}" for d in config.devices) or "none"
        problem = "no device" if not found else "several devices (give STATION/NAME)"
        message = f"{problem} named {args.name}; configured: {known}"
        print(f"station-bridge gauge-watch: {message}", file=sys.stderr)
        return 2
    return asyncio.run(watch_gauge(found[0], out=sys.stdout, count=args.count))


@_with_config
def _outbox_change(args: argparse.Namespace, config: BridgeConfig) -> int:
    from bridge.commands.admin import check_alone, plan_drop, plan_retry

    seqs: list[int] = args.seq
    command: str = args.outbox_command
    plan = plan_retry if command == "retry" else plan_drop
    return _change(
        config,
        f"outbox {command}",
        f"/outbox/{command}",
        {"seqs": seqs},
        lambda _, outbox: plan(outbox, seqs),
        check=(lambda change: check_alone(config, change)) if command == "retry" else None,
    )


@_with_config
def _batch_list(args: argparse.Namespace, config: BridgeConfig) -> int:
    from bridge.adapters.store import StoreError
    from bridge.commands.admin import show_batches

    try:
        show_batches(config, out=sys.stdout, as_json=args.json)
    except StoreError as error:
        print(f"station-bridge batch list: {error}", file=sys.stderr)
        return 2
    return 0


@_with_config
def _batch_end(args: argparse.Namespace, config: BridgeConfig) -> int:
    from bridge.commands.admin import plan_end_batch

    batch_id: str = args.batch_id
    station_id: str | None = args.station
    return _change(
        config,
        "batch end",
        "/batch/end",
        {"batch_id": batch_id, "station_id": station_id},
        lambda batches, outbox: plan_end_batch(batches, outbox, batch_id, station_id),
    )


def _change(
    config: BridgeConfig,
    command: str,
    path: str,
    body: dict[str, Any],
    plan: Plan,
    *,
    check: Callable[[Change], Awaitable[None]] | None = None,
) -> int:
    """Made by the running bridge when one answers on its admin socket, else written to the
    store of the stopped one: both decide with the same `plan` (and the same `check`)."""
    from bridge.adapters.store import StoreError
    from bridge.commands.admin import AdminError, change_stopped_bridge, report_change
    from bridge.commands.live_admin import ask_running_bridge

    try:
        change = ask_running_bridge(config, path, body)
        if change is None:
            change = asyncio.run(change_stopped_bridge(config, plan, check=check))
    except (AdminError, StoreError) as error:
        print(f"station-bridge {command}: {error}", file=sys.stderr)
        return 2
    report_change(change, out=sys.stdout)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bridge.commands.demo import run_demo

    return asyncio.run(run_demo(wips=args.wips, out=sys.stdout))


def _version() -> str:
    from bridge.version import bridge_version

    return f"station-bridge {bridge_version()}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="station-bridge",
        description="MQTT edge bridge between factory test stations and the F2X NeuroHub MES.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sim = commands.add_parser(
        "mes-sim",
        help="run an MES simulator that behaves like the deployed F2X NeuroHub",
        description="Serve the MES's API as deployed (quirks included) or as the integration "
        "spec describes it, with /sim/ledger, /sim/faults and /sim/reset for tests.",
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8080)
    sim.add_argument("--wips", type=int, default=20, help="how many WIPs to seed (1..999)")
    sim.add_argument("--lot", default="KR01PSA261102", help="13-character lot number")
    sim.add_argument("--semantics", choices=("deployed", "spec"), default="deployed")
    sim.add_argument(
        "--process-id-offset",
        type=int,
        default=0,
        help="MES process id = process number + offset (to exercise the number->id mapping)",
    )
    sim.set_defaults(run=_mes_sim)

    check = commands.add_parser(
        "mes-check",
        help="check that this box reaches the MES with the configured account",
        description="Health, process list, login and (with --wip) a scan and a trace, against "
        "the MES named in the config file. Secrets are never printed.",
    )
    check.add_argument("--config", type=Path, required=True, help="the bridge's YAML config")
    check.add_argument("--wip", help="a WIP id to scan and trace")
    check.set_defaults(run=_mes_check)

    run = commands.add_parser(
        "run",
        help="run the bridge",
        description="Subscribe to the stations' topics, send 착공/완공/serial conversions to the "
        "MES through the durable outbox, and publish every outcome. SIGTERM stops it cleanly.",
    )
    run.add_argument("--config", type=Path, required=True, help="the bridge's YAML config")
    run.set_defaults(run=_run)

    check_config = commands.add_parser(
        "check",
        help="validate a config file and print the effective settings (secrets hidden)",
        description="The file with the STATION_BRIDGE_* environment applied over it.",
    )
    check_config.add_argument("--config", type=Path, required=True)
    check_config.set_defaults(run=_check)

    outbox = commands.add_parser("outbox", help="inspect the outbox of MES requests")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    listing = outbox_commands.add_parser(
        "list",
        help="pending and dead-lettered requests, with their reasons",
        description="Reads the bridge's data_dir; safe while the bridge runs.",
    )
    listing.add_argument("--config", type=Path, required=True)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=_outbox_list)
    for name, text in (
        ("retry", "put dead letters back in the queue (a refused 착공 with what it blocked)"),
        ("drop", "delete dead letters for good"),
    ):
        command = outbox_commands.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}. A running bridge does it itself (over "
            "its admin socket in data_dir); a stopped one's store is changed directly.",
        )
        command.add_argument("--config", type=Path, required=True)
        command.add_argument("seq", type=int, nargs="+", help="request numbers, as `list` shows")
        command.set_defaults(run=_outbox_change)

    batch = commands.add_parser("batch", help="the stations' active batches")
    batch_commands = batch.add_subparsers(dest="batch_command", required=True, metavar="ACTION")
    batches = batch_commands.add_parser(
        "list",
        help="active batches",
        description="Reads the bridge's data_dir; safe while the bridge runs.",
    )
    batches.add_argument("--config", type=Path, required=True)
    batches.add_argument("--json", action="store_true", help="one JSON object per line")
    batches.set_defaults(run=_batch_list)
    end = batch_commands.add_parser(
        "end",
        help="end a stuck batch (e.g. of a station removed from the config)",
        description="Ends the batch as an abort would: its 착공 not yet sent is dropped; the MES "
        "is not told. A running bridge does it itself and tells the station's tablet "
        "(BATCH_ABORTED); a stopped one's store is changed directly.",
    )
    end.add_argument("--config", type=Path, required=True)
    end.add_argument("batch_id", help="as `batch list` shows it")
    end.add_argument(
        "--station", help="the batch's station, when two stations use the same batch id"
    )
    end.set_defaults(run=_batch_end)

    gauge = commands.add_parser(
        "gauge-sim",
        help="play a serial gauge on a pseudo-terminal (for trying a device config)",
        description="Opens a pseudo-terminal, prints its path (point a device's `port` at it) "
        "and plays an A&D balance, a Mettler Toledo MT-SICS balance (answers SI/S polls) or a "
        "key=value instrument on it until Ctrl-C.",
    )
    gauge.add_argument("--format", choices=("and", "sics", "keyvalue", "noise"), required=True)
    gauge.add_argument("--rate", type=float, default=2.0, help="lines per second (streaming)")
    gauge.add_argument(
        "--baud", type=int, help="talk at this baud rate only; others read garbage (as on a wire)"
    )
    gauge.add_argument("--framing", default="8N1", help="with --baud: 7E1, 8N1, 8E1, 7O1, ...")
    gauge.add_argument("--terminator", choices=("crlf", "cr", "lf"), default="crlf")
    gauge.add_argument("--polled", action="store_true", help="and: send only when asked (Q)")
    gauge.add_argument("--decimal-comma", action="store_true", help="print +00123,45")
    gauge.set_defaults(run=_gauge_sim)

    discover = commands.add_parser(
        "discover",
        help="find a gauge's serial settings and format on a port",
        description="Listen on PORT at each baud rate and framing; where the gauge stays quiet, "
        "send the polled protocols' harmless queries (MT-SICS SI, A&D Q) and nothing else. "
        "Prints what was found and a devices: entry. Refuses a port a running bridge reads.",
    )
    discover.add_argument("port", help="e.g. /dev/serial/by-id/usb-FTDI_...")
    discover.add_argument(
        "--timeout", type=float, default=1.0, help="seconds to listen at each setting (1)"
    )
    discover.add_argument(
        "--baud",
        type=_baud_rates,
        help="baud rates to try, comma-separated (default: the 8 from 1200 to 115200)",
    )
    discover.add_argument(
        "--framing",
        type=lambda text: text.split(","),
        help="framings to try, comma-separated (default 8N1,7E1,8E1,7O1)",
    )
    discover.set_defaults(run=_discover)

    watch = commands.add_parser(
        "gauge-watch",
        help="show a configured gauge's live readings (value, unit, stable, raw line)",
        description="Open the device as the bridge would (stop the bridge first) and print "
        "every line with what it parses to, and every change of status, until Ctrl-C.",
    )
    watch.add_argument("--config", type=Path, required=True, help="the bridge's YAML config")
    watch.add_argument("name", help="the device's name (STATION/NAME when names repeat)")
    watch.add_argument("--count", type=int, help="stop after this many lines")
    watch.set_defaults(run=_gauge_watch)

    demo = commands.add_parser(
        "demo",
        help="take WIPs through processes 1-6 and conversion against a simulated MES",
    )
    demo.add_argument("--wips", type=int, default=3)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `station-bridge outbox list | head`
        sys.stderr.close()
        return 0
    return result
