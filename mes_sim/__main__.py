"""`python -m mes_sim`: the same options as `station-bridge mes-sim`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .model import DEFAULT_LOT, SEMANTICS
from .server import serve


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mes_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--wips", type=int, default=20)
    parser.add_argument("--lot", default=DEFAULT_LOT)
    parser.add_argument("--semantics", choices=SEMANTICS, default="deployed")
    parser.add_argument("--process-id-offset", type=int, default=0)
    args = parser.parse_args(argv)
    serve(
        host=args.host,
        port=args.port,
        wips=args.wips,
        lot=args.lot,
        semantics=args.semantics,
        process_id_offset=args.process_id_offset,
    )


if __name__ == "__main__":
    main()
