"""Secrets kept in files of their own (`*_file` keys), so that a password never has to sit in
the config itself."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr


def read_secret(path: Path) -> SecretStr:
    """The file's text without surrounding whitespace; a ValueError (a config error) when it
    cannot be read."""
    try:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    except OSError as error:
        raise ValueError(f"cannot read secret file {path}: {error.strerror}") from error
