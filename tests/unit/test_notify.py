"""bridge.adapters.notify: what the environment systemd gives the process asks of the bridge."""

from __future__ import annotations

import pytest

from bridge.adapters.notify import NotifySettings, notify_settings

PID = 4242


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, NotifySettings(address=None, watchdog_s=None)),
        ({"NOTIFY_SOCKET": ""}, NotifySettings(address=None, watchdog_s=None)),
        (
            {"NOTIFY_SOCKET": "/run/systemd/notify"},
            NotifySettings(address="/run/systemd/notify", watchdog_s=None),
        ),
        ({"NOTIFY_SOCKET": "@sd-1"}, NotifySettings(address="\0sd-1", watchdog_s=None)),
        ({"NOTIFY_SOCKET": "@"}, NotifySettings(address=None, watchdog_s=None)),
        ({"NOTIFY_SOCKET": "vsock:2:1234"}, NotifySettings(address=None, watchdog_s=None)),
        (
            {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30000000"},
            NotifySettings(address="/n", watchdog_s=30.0),
        ),
        (
            {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(PID)},
            NotifySettings(address="/n", watchdog_s=30.0),
        ),
        (
            {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
            NotifySettings(address="/n", watchdog_s=None),
        ),
        (
            {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "0"},
            NotifySettings(address="/n", watchdog_s=None),
        ),
        (
            {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "soon"},
            NotifySettings(address="/n", watchdog_s=None),
        ),
        ({"WATCHDOG_USEC": "30000000"}, NotifySettings(address=None, watchdog_s=None)),
    ],
    ids=[
        "not under systemd",
        "empty socket",
        "socket path",
        "abstract socket",
        "abstract without name",
        "vsock (not supported)",
        "watchdog",
        "watchdog for this pid",
        "watchdog for another pid (a parent's)",
        "watchdog off",
        "watchdog not a number",
        "watchdog without a socket",
    ],
)
def test_settings_from_the_environment(environ: dict[str, str], expected: NotifySettings) -> None:
    assert notify_settings(environ, pid=PID) == expected
