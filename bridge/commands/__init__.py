"""The commands: the `station-bridge` CLI, the admin commands (`check`, `outbox …`, `batch …`)
against a stopped or a running bridge, the demo and the MES check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge._exports import find

if TYPE_CHECKING:
    from bridge.commands import live_admin
    from bridge.commands.cli import main
    from bridge.commands.live_admin import LiveAdmin

__all__ = ["LiveAdmin", "live_admin", "main"]


def __getattr__(name: str) -> object:
    return find(__name__, __all__, name)
