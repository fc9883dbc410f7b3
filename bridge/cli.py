"""The `station-bridge` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path


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


def _mes_check(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .mes_check import check_mes

    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    return asyncio.run(check_mes(config.mes, wip_id=args.wip, out=sys.stdout))


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return asyncio.run(run_demo(wips=args.wips, out=sys.stdout))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="station-bridge",
        description="MQTT edge bridge between factory test stations and the F2X NeuroHub MES.",
    )
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
    return result


if __name__ == "__main__":
    sys.exit(main())
