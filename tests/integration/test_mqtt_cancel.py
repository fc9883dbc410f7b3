"""A cancellation that lands just as aiomqtt's connect completes (SIGTERM during the handshake).
Python 3.11's `asyncio.wait_for`, which aiomqtt uses for every call, returns the result and drops
the cancellation when both happen at once; the link must still stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from bridge.adapters import mqtt
from bridge.adapters.broker import find_free_port
from bridge.adapters.mqtt import MqttLink
from bridge.config import MqttConfig
from bridge.core.topics import Received

from .harness import MOSQUITTO, mosquitto_running

pytestmark = pytest.mark.skipif(not mosquitto_running(), reason="Mosquitto is not running")


async def _handle(_: Sequence[Received]) -> None:
    return None


async def _connected(_: bool) -> None:
    return None


async def test_a_cancel_that_meets_the_connack_still_stops_the_link(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, port = MOSQUITTO
    link = MqttLink(
        MqttConfig(host=host, port=port, topic_prefix="cancel-test"),
        client_id="cancel-test-link",
        bridge_id="cancel-test",
        station_ids=["1"],
    )
    task = asyncio.create_task(link.run(_handle, on_connect=_connected))
    on_connect = mqtt._Client._on_connect

    def cancel_with_the_connack(self: mqtt._Client, *args: Any) -> None:
        on_connect(self, *args)  # the connect's future completes ...
        task.cancel()  # ... and the task is cancelled in the same loop iteration

    monkeypatch.setattr(mqtt._Client, "_on_connect", cancel_with_the_connack)
    done, _ = await asyncio.wait({task}, timeout=10)
    if not done:  # clean up before failing
        task.cancel()
        await asyncio.wait({task}, timeout=10)
    assert done, "the link went on running after it was cancelled"
    assert task.cancelled()


async def test_why_the_broker_cannot_be_reached_is_kept_for_the_status_page() -> None:
    link = MqttLink(
        MqttConfig(host="127.0.0.1", port=find_free_port(), reconnect_max_s=1),
        client_id="unreachable-test",
        bridge_id="unreachable-test",
        station_ids=["1"],
    )
    task = asyncio.create_task(link.run(_handle, on_connect=_connected))
    try:
        async with asyncio.timeout(10):
            while link.last_error is None:  # noqa: ASYNC110 - the link has no event for it
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=10)
    assert "refused" in link.last_error.lower()
