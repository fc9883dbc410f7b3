"""The status page (`/`): the overview's snapshot as one small HTML page, readable on a phone next
to the line. No scripts: it reloads itself every 10 seconds. Pure: snapshot in, text out."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font:16px/1.4 system-ui,sans-serif;margin:0;padding:12px;background:#f4f5f7;color:#222}
h1{font-size:1.3em;margin:0 0 4px}h2{font-size:1.1em;margin:18px 0 6px}
.meta{color:#555;font-size:.9em}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:8px}
.card{background:#fff;border-radius:8px;padding:10px;box-shadow:0 1px 2px #0002}
.card b{display:block;font-size:1.1em}
.ok{border-left:6px solid #2e7d32}.bad{border-left:6px solid #c62828}
.warn{border-left:6px solid #ef6c00}
table{width:100%;border-collapse:collapse;background:#fff;font-size:.9em}
td,th{padding:6px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
.reason{color:#c62828}.none{color:#777;font-style:italic}
"""


def render(snapshot: dict[str, Any]) -> str:
    broker, mes = snapshot["broker"], snapshot["mes"]
    outbox = snapshot["outbox"]
    dead, pending = outbox["dead"], outbox["pending"]
    dead_count, pending_count = outbox["dead_count"], outbox["pending_count"]
    broker_where = f"{broker['host']}:{broker['port']}" + (
        " (embedded)" if broker["embedded"] else ""
    )
    cards = [
        _card(
            "Broker",
            "connected" if broker["connected"] else "disconnected",
            broker_where + (f": {broker['last_error']}" if broker.get("last_error") else ""),
            "ok" if broker["connected"] else "bad",
        ),
        _card(
            "MES",
            mes["state"],
            f"last answer {_time(mes['confirmed_at'])}",
            {"online": "ok", "unknown": "warn"}.get(mes["state"], "bad"),
        ),
        _card(
            "Outbox",
            f"{pending_count} pending",
            f"{dead_count} dead letter(s)",
            "bad" if dead_count else ("warn" if pending_count else "ok"),
        ),
    ]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        "<meta http-equiv='refresh' content='10'>",
        f"<title>station-bridge {_e(snapshot['bridge_id'])}</title><style>{_STYLE}</style>",
        "</head><body>",
        f"<h1>station-bridge {_e(snapshot['bridge_id'])}</h1>",
        f"<div class='meta'>version {_e(snapshot['version'])} · MES {_e(mes['url'])}"
        f" · up since {_time(snapshot['started_at'])} · {_time(snapshot['at'])}</div>",
        f"<h2>State</h2><div class='cards'>{''.join(cards)}</div>",
        "<h2>Stations</h2>",
        _stations(snapshot["stations"]),
        "<h2>Dead letters</h2>",
        _entries(dead, total=dead_count, empty="none"),
        "<h2>Waiting for the MES</h2>",
        _entries(pending, total=pending_count, empty="nothing waits"),
        "<h2>Gauges</h2>",
        _devices(snapshot["devices"]),
        "</body></html>",
    ]
    return "\n".join(parts)


def _card(title: str, value: str, detail: str, tone: str) -> str:
    return (
        f"<div class='card {tone}'>{_e(title)}<b>{_e(value)}</b>"
        f"<span class='meta'>{_e(detail)}</span></div>"
    )


def _stations(stations: list[dict[str, Any]]) -> str:
    rows = []
    for station in stations:
        batches = station["active_batches"]
        shown = (
            "<br>".join(
                f"{_e(b['wip_id'])} · process {_e(b['process_id'])}"
                f" · {_e(b['measurements'])} value(s) · since {_time(b['started_at'])}"
                for b in batches
            )
            or "<span class='none'>idle</span>"
        )
        name = _e(station["station_id"])
        if not station["configured"]:
            name += " <span class='reason'>(not in the config)</span>"
        rows.append(
            f"<tr><td>{name}</td><td>{shown}</td>"
            f"<td>{station['pending']}</td><td>{station['dead']}</td></tr>"
        )
    head = "<tr><th>station</th><th>active batch</th><th>pending</th><th>dead</th></tr>"
    return _table(head, rows, empty="no stations")


def _entries(entries: list[dict[str, Any]], *, total: int, empty: str) -> str:
    rows = []
    for entry in entries:
        reason = entry["reason"]
        why = (
            f"<span class='reason'>{_e(reason.get('code', '?'))}"
            f"{': ' + _e(reason['detail']) if reason.get('detail') else ''}</span>"
            if reason
            else ""
        )
        rows.append(
            f"<tr><td>{_e(entry['what'])}<br><span class='meta'>station {_e(entry['station_id'])}"
            f" · {entry['attempts']} attempt(s) · queued {_time(entry['enqueued_at'])}</span></td>"
            f"<td>{why}</td></tr>"
        )
    if total > len(entries):
        rows.append(
            f"<tr><td colspan='2' class='none'>and {total - len(entries)} more: "
            "station-bridge outbox list</td></tr>"
        )
    return _table("<tr><th>request</th><th>reason</th></tr>", rows, empty=empty)


def _devices(devices: list[dict[str, Any]]) -> str:
    rows = [
        f"<tr><td>{_e(d['device'])}<br><span class='meta'>station {_e(d['station_id'])}</span>"
        f"</td><td>{_e(d['state'])}{' · ' + _e(d['detail']) if d['detail'] else ''}</td>"
        f"<td>{_time(d['last_reading_at'])}</td></tr>"
        for d in devices
    ]
    head = "<tr><th>gauge</th><th>state</th><th>last reading</th></tr>"
    return _table(head, rows, empty="no gauges configured")


def _table(head: str, rows: list[str], *, empty: str) -> str:
    if not rows:
        return f"<p class='none'>{_e(empty)}</p>"
    return f"<table>{head}{''.join(rows)}</table>"


def _time(at: str | None) -> str:
    """`2026-11-29T16:50:01.123Z` as `2026-11-29 16:50:01 UTC`; `never` for none."""
    if not at:
        return "never"
    return _e(f"{at[:10]} {at[11:19]} UTC")


def _e(value: object) -> str:
    return escape(str(value), quote=True)
