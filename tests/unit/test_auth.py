"""TokenSource on a clock the test moves: the MES's 10 logins a minute are never exceeded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bridge.mes.auth import TokenSource
from bridge.mes.errors import MesError, MesErrorCode


class FakeMes:
    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.calls: list[str] = []

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        self.calls.append(path.rsplit("/", 1)[-1])
        return {
            "access_token": f"t{len(self.calls)}",
            "refresh_token": "r",
            "expires_in": self.lifetime,
        }


def source(mes: FakeMes, now: list[float], **kw: Any) -> TokenSource:
    options: dict[str, Any] = {
        "username": "svc",
        "password": "pw",
        "static_token": None,
        "refresh_margin_s": 120,
    }
    options.update(kw)
    return TokenSource(mes.post, clock=lambda: now[0], **options)


async def test_no_more_than_ten_logins_or_refreshes_a_minute() -> None:
    mes, now = FakeMes(lifetime=0), [0.0]  # every token is stale at once
    tokens = source(mes, now)
    for _ in range(10):
        await tokens.bearer()
    assert len(mes.calls) == 10
    with pytest.raises(TimeoutError):  # the eleventh waits for the window to slide
        await asyncio.wait_for(tokens.bearer(), timeout=0.2)
    assert len(mes.calls) == 10
    now[0] += 60
    await tokens.bearer()
    assert len(mes.calls) == 11


async def test_refresh_first_then_login_when_refresh_is_refused() -> None:
    mes, now = FakeMes(lifetime=1800), [0.0]
    refused = False

    async def post(path: str, body: dict[str, Any]) -> Any:
        if refused and path.endswith("refresh"):
            mes.calls.append("refresh-refused")
            raise MesError(MesErrorCode.AUTH, status=401)
        return await mes.post(path, body)

    tokens = TokenSource(
        post,
        username="svc",
        password="pw",
        static_token=None,
        refresh_margin_s=120,
        clock=lambda: now[0],
    )
    first = await tokens.bearer()
    assert await tokens.bearer() == first  # still fresh: no call
    now[0] += 1800 - 119
    second = await tokens.bearer()
    refused = True
    assert await tokens.renew_after_401(second)
    assert mes.calls == ["json", "refresh", "refresh-refused", "json"]


async def test_static_token_is_used_as_is_and_never_renewed() -> None:
    mes, now = FakeMes(lifetime=1800), [0.0]
    tokens = source(mes, now, username=None, password=None, static_token="fixed")
    assert await tokens.bearer() == "fixed"
    assert not await tokens.renew_after_401("fixed")
    assert mes.calls == []
