"""`station-bridge mes-check`: does this box reach the MES, with this account?"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TextIO

from bridge.mes import MesClient, MesError
from bridge.mes.settings import MesSettings


def _auth_summary(config: MesSettings) -> str:
    if config.username is not None:
        source = "from file" if config.password_file else "from config"
        return f"service account {config.username} (password {source})"
    if config.token is not None:
        return "static bearer token"
    if config.api_key is not None:
        return "station key only (scan only)"
    return "no credentials"


async def check_mes(config: MesSettings, *, wip_id: str | None, out: TextIO) -> int:
    print(f"MES {config.url}  {_auth_summary(config)}", file=out)
    failures = 0

    async def step(name: str, action: Callable[[], Awaitable[str]]) -> None:
        nonlocal failures
        try:
            print(f"  {name:<22} ✓ {await action()}", file=out, flush=True)
        except MesError as error:
            failures += 1
            print(
                f"  {name:<22} ✗ {error}\n  {'':<22}   {error.message} / {error.message_ko}",
                file=out,
                flush=True,
            )

    async with MesClient(config) as client:

        async def processes() -> str:
            ids = await client.process_ids()
            return " ".join(f"{number}→{pk}" for number, pk in sorted(ids.items()))

        async def login() -> str:
            await client.login()
            return "token received"

        async def scan() -> str:
            assert wip_id is not None
            wip = await client.scan(wip_id)
            return f"MES id {wip.id}, {wip.status}"

        async def trace() -> str:
            assert wip_id is not None
            history = (await client.trace(wip_id)).process_history
            done = ", ".join(f"P{e.process_number} {e.result}" for e in history) or "nothing yet"
            return f"{len(history)} record(s): {done}"

        await step("health", client.health)
        await step("processes (number→id)", processes)
        if config.username is not None:
            await step("login", login)
        if wip_id is not None:
            await step(f"scan {wip_id}", scan)
            if config.username is not None or config.token is not None:
                await step("trace", trace)
    print("OK" if failures == 0 else f"{failures} check(s) failed", file=out)
    return 0 if failures == 0 else 1
