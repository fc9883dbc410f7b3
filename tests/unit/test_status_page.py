"""bridge.web.status_page: what the page shows of a snapshot, escaped."""

from __future__ import annotations

from typing import Any

from bridge.web.status_page import render


def snapshot(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "bridge_id": "edge01",
        "version": "1.2.3",
        "started_at": "2026-11-29T08:00:00Z",
        "at": "2026-11-29T09:30:05.5Z",
        "ready": True,
        "store_writable": True,
        "broker": {"host": "127.0.0.1", "port": 1883, "embedded": False, "connected": True},
        "mes": {
            "url": "http://mes:8080/",
            "state": "online",
            "confirmed_at": "2026-11-29T09:30:01Z",
            "reachable": True,
        },
        "stations": [
            {
                "station_id": "1",
                "configured": True,
                "active_batches": [
                    {
                        "batch_id": "b1",
                        "wip_id": "WIP-7",
                        "process_id": 3,
                        "started_at": "2026-11-29T09:00:00Z",
                        "measurements": 2,
                    }
                ],
                "pending": 0,
                "dead": 1,
            },
            {"station_id": "9", "configured": False, "active_batches": [], "pending": 0, "dead": 0},
        ],
        "outbox": {
            "pending_count": 0,
            "dead_count": 1,
            "pending": [],
            "dead": [
                {
                    "seq": 4,
                    "what": "#4 start process 4 WIP-<b>",
                    "station_id": "1",
                    "attempts": 1,
                    "enqueued_at": "2026-11-29T09:10:00Z",
                    "reason": {"code": "PREREQUISITE_NOT_MET", "detail": "process 3 first"},
                }
            ],
        },
        "devices": [
            {
                "station_id": "1",
                "device": "balance",
                "state": "disconnected",
                "detail": "unplugged",
                "last_reading_at": None,
                "since": None,
            }
        ],
    }
    base.update(changes)
    return base


def test_the_page_shows_each_part() -> None:
    page = render(snapshot())
    assert "<title>station-bridge edge01</title>" in page
    assert "version 1.2.3" in page and "MES http://mes:8080/" in page
    assert "last answer 2026-11-29 09:30:01 UTC" in page
    assert "WIP-7 · process 3 · 2 value(s) · since 2026-11-29 09:00:00 UTC" in page
    assert "9 <span class='reason'>(not in the config)</span>" in page
    assert "PREREQUISITE_NOT_MET: process 3 first" in page
    assert "balance" in page and "disconnected · unplugged" in page
    assert "nothing waits" in page
    assert "width=device-width" in page  # a phone's width, not a desktop's shrunk


def test_what_it_shows_is_escaped() -> None:
    page = render(snapshot())
    assert "WIP-&lt;b&gt;" in page and "WIP-<b>" not in page


def test_an_mes_never_heard_from() -> None:
    mes = {"url": "http://mes/", "state": "auth_failed", "confirmed_at": None, "reachable": False}
    page = render(snapshot(mes=mes, devices=[]))
    assert "<b>auth_failed</b>" in page and "last answer never" in page
    assert "no gauges configured" in page


def test_a_long_queue_is_cut_short_and_counted() -> None:
    entry = snapshot()["outbox"]["dead"][0]
    outbox = {"pending_count": 1200, "dead_count": 1, "pending": [entry] * 50, "dead": [entry]}
    page = render(snapshot(outbox=outbox))
    assert "<b>1200 pending</b>" in page
    assert "and 1150 more: station-bridge outbox list" in page


def test_a_broker_that_cannot_be_reached_shows_why() -> None:
    broker = {
        "host": "broker.lan",
        "port": 8883,
        "embedded": False,
        "connected": False,
        "last_error": "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
    }
    page = render(snapshot(broker=broker))
    assert "broker.lan:8883: [SSL: CERTIFICATE_VERIFY_FAILED]" in page
