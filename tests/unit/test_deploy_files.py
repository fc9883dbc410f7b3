"""deploy/: the starter config is one the bridge accepts, and the container definition names
files that exist and runs as an unprivileged user with the data directory as a volume. (The image
is not built here: no container daemon or base image is reachable from this machine.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_starter_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its password file is /etc/station-bridge/mes-password, which only the install writes.
    monkeypatch.setenv("STATION_BRIDGE_MES__PASSWORD", "set-by-the-operator")
    config = load_config(DEPLOY / "config.yaml")
    assert config.data_dir == Path("/var/lib/station-bridge")
    assert config.stations


def containerfile_lines() -> list[list[str]]:
    text = (DEPLOY / "Containerfile").read_text().replace("\\\n", " ")
    return [line.split() for line in text.splitlines() if line and not line.startswith("#")]


def test_the_containerfile_copies_files_that_exist() -> None:
    copies = [words[1:-1] for words in containerfile_lines() if words[0] == "COPY"]
    sources = [source for words in copies for source in words if not source.startswith("--")]
    assert sources, "no COPY found"
    for source in sources:
        if source.startswith("/"):  # from the build stage
            continue
        assert (DEPLOY.parent / source).exists(), source


def test_the_container_runs_unprivileged_with_a_data_volume() -> None:
    lines = containerfile_lines()
    users = [words[1] for words in lines if words[0] == "USER"]
    assert users == ["station-bridge"]
    volumes = [words[1] for words in lines if words[0] == "VOLUME"]
    assert volumes == ["/var/lib/station-bridge"]
    environment = " ".join(" ".join(words) for words in lines if words[0] == "ENV")
    assert "STATION_BRIDGE_DATA_DIR=/var/lib/station-bridge" in environment
