"""What `station-bridge check` and `station-bridge outbox list` show the person keeping the box."""

from __future__ import annotations

from typing import Any, TextIO

import yaml

from .config import BridgeConfig
from .outbox import Entry, load_state
from .store import read_directory


def show_config(config: BridgeConfig, *, out: TextIO) -> None:
    """The effective configuration as YAML; secrets print as `**********`."""
    data = config.model_dump(mode="json")
    data["mes"]["url"] = config.mes.shown_url()
    data["mqtt"]["client_id"] = config.client_id
    print("# the effective configuration (file + STATION_BRIDGE_* environment)", file=out)
    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="", file=out)


def show_outbox(config: BridgeConfig, *, out: TextIO, as_json: bool) -> None:
    batches, outbox = load_state(read_directory(config.data_dir / "store"))
    pending, dead = outbox.pending(), outbox.dead()
    if as_json:
        for entry in [*pending, *dead]:
            print(entry.model_dump_json(), file=out)
        return
    print(
        f"{len(pending)} pending, {len(dead)} dead-lettered, {len(batches)} active batch(es)",
        file=out,
    )
    for title, entries in (("pending", pending), ("dead letters", dead)):
        if entries:
            print(f"\n{title}:", file=out)
            for entry in entries:
                print(f"  {_line(entry)}", file=out)


def _line(entry: Entry) -> str:
    parts = [
        entry.describe(),
        f"station {entry.station_id}",
        f"batch {entry.batch_id or '-'}",
        f"attempts {entry.attempts}",
        f"queued {entry.enqueued_at:%Y-%m-%d %H:%M:%S}Z",
    ]
    if entry.next_attempt_at is not None and not entry.dead:
        parts.append(f"next {entry.next_attempt_at:%H:%M:%S}Z")
    reason = entry.dead_reason if entry.dead else entry.last_error
    if reason:
        parts.append(_reason(reason))
    return "  ".join(parts)


def _reason(reason: dict[str, Any]) -> str:
    detail = f": {reason['detail']}" if reason.get("detail") else ""
    return f"[{reason.get('code', '?')}{detail}]"
