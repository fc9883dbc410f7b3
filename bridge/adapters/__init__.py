"""The adapters: thin I/O around the core and the engine (the MQTT link and its outgoing queue,
the embedded broker and what a server that cannot listen says, the store on disk, TLS contexts,
secret files, systemd's notify socket, the log format).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge._exports import find

if TYPE_CHECKING:
    from bridge.adapters.broker import EmbeddedBroker, find_free_port
    from bridge.adapters.listening import EmbeddedBrokerError, HttpEndpointError, is_loopback
    from bridge.adapters.logs import setup
    from bridge.adapters.mqtt import MqttLink
    from bridge.adapters.notify import Notifier, notify_settings
    from bridge.adapters.secrets import read_secret
    from bridge.adapters.store import Store, StoreError, existing, read_directory
    from bridge.adapters.tls import certificate_problem, client_context

__all__ = [
    "EmbeddedBroker",
    "EmbeddedBrokerError",
    "HttpEndpointError",
    "MqttLink",
    "Notifier",
    "Store",
    "StoreError",
    "certificate_problem",
    "client_context",
    "existing",
    "find_free_port",
    "is_loopback",
    "notify_settings",
    "read_directory",
    "read_secret",
    "setup",
]


def __getattr__(name: str) -> object:
    return find(__name__, __all__, name)
