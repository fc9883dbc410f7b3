"""The bridge's version, as installed (`station-bridge --version`, the status topic and page)."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def bridge_version() -> str:
    try:
        return version("station-bridge")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
