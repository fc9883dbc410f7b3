"""What the bridge's own servers share without their libraries: whether an address is loopback,
and why a server could not start. Kept apart from `bridge.adapters.broker` (amqtt) and
`bridge.web.endpoint` (aiohttp's web server), which `bridge.app` imports only when the config
asks for an embedded broker or an HTTP endpoint: a bridge on Mosquitto does not load amqtt and
its dependencies (about 2.5 MB resident, bench/README.md)."""

from __future__ import annotations

import ipaddress


class EmbeddedBrokerError(OSError):
    """The embedded broker could not start (its address could not be bound, or amqtt failed)."""


class HttpEndpointError(Exception):
    """The endpoint cannot listen where `http.listen` says (the port is taken, say)."""


def is_loopback(address: str | None) -> bool:
    """Whether an address (or "localhost") is this machine's loopback."""
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return address == "localhost"
