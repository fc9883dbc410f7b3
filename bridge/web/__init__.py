"""The HTTP endpoint (`http.listen`): health, readiness, Prometheus metrics and the status page,
read from the running engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge._exports import find

if TYPE_CHECKING:
    from bridge.web import endpoint
    from bridge.web.metrics import BridgeMetrics, MeteredStore
    from bridge.web.overview import DeviceBoard, Overview

__all__ = ["BridgeMetrics", "DeviceBoard", "MeteredStore", "Overview", "endpoint"]


def __getattr__(name: str) -> object:
    return find(__name__, __all__, name)
