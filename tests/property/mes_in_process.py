"""The simulated MES driven in process: `MesApp` behind an httpx transport, so that a test decides
how each request is answered, and sees which requests the MES applied.

Each request the bridge sends takes the next answer from `plan` (then "ok" once it is empty):

- "ok": the MES handles it and its answer is returned (a business-rule refusal happens by itself
  when the simulator's model says so);
- "lost": the MES applies it, then the connection breaks before the answer is read;
- "502": the MES applies it, then a proxy answers 502 Bad Gateway;
- "503": a proxy answers 503 without passing it on (nothing applied);
- "429": answered 429 (Retry-After: 0) without passing it on;
- "kill_before" / "kill_after": the bridge dies (`Killed`) before the MES sees the request, or
  after the MES applied it and before the answer came back.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import parse_qsl, unquote

import httpx

from mes_sim.app import MesApp, Request
from mes_sim.model import DEFAULT_LOT

Answer = Literal["ok", "lost", "502", "503", "429", "kill_before", "kill_after"]
ANSWERS: tuple[Answer, ...] = ("ok", "lost", "502", "503", "429", "kill_before", "kill_after")

# The requests that change what the MES holds (the rest are lookups: login, scan, trace, ...).
_CHANGES = ("start-process", "complete-process", "convert-to-serial", "generate-from-wip")


class Killed(BaseException):
    """The bridge process died here (like SIGKILL: nothing in it may catch this)."""


@dataclass(frozen=True)
class Applied:
    """A change the MES applied: for which outbox entry (`seq`) and by which route."""

    seq: int | None
    route: str


@dataclass
class InProcessMes(httpx.AsyncBaseTransport):
    app: MesApp = field(
        default_factory=lambda: MesApp(
            wips=3,
            lot=DEFAULT_LOT,
            semantics="deployed",
            process_id_offset=0,
            clock=lambda: datetime.now(UTC),
            stopping=threading.Event(),
        )
    )
    plan: list[Answer] = field(default_factory=list)
    # The outbox entry whose attempt is under way: every change applied meanwhile is its.
    attempting: int | None = None
    applied: list[Applied] = field(default_factory=list)
    answered: list[tuple[str, Answer]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Only the test's own answers may refuse or delay: no rate limits, no BR-004 window.
        self.app.set_faults(
            {
                "rate_limit_per_min": 1_000_000,
                "login_rate_limit_per_min": 1_000_000,
                "auth_rate_limit_per_min": 1_000_000,
                "br004_window_s": 0,
            }
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.plan.pop(0) if self.plan else "ok"
        route = request.url.path
        self.answered.append((f"{request.method} {route}", answer))
        if answer == "kill_before":
            raise Killed
        if answer == "429":
            body = {"error_code": "RATE_LIMIT_EXCEEDED", "message": "Too many requests"}
            return _response(429, body, ("Retry-After", "0"))
        if answer == "503":
            return _response(503, {"detail": "Service Unavailable"})
        response = self.app.handle(_as_sim(request, await request.aread()))
        if 200 <= response.status < 300 and route.rsplit("/", 1)[-1] in _CHANGES:
            self.applied.append(Applied(self.attempting, route))
        if answer == "kill_after":
            raise Killed
        if answer == "lost":
            raise httpx.ReadError("connection reset after the request was sent", request=request)
        if answer == "502":
            return httpx.Response(
                502, headers={"Content-Type": "text/html"}, text="<h1>502 Bad Gateway</h1>"
            )
        return _response(response.status, response.body, *response.headers)


def _as_sim(request: httpx.Request, body: bytes) -> Request:
    """The request as the simulator's HTTP server would hand it to the app."""
    raw_path, _, query = request.url.raw_path.decode("ascii").partition("?")
    parts = raw_path.split("/")[1:] if raw_path != "/" else []
    return Request(
        method=request.method,
        path=unquote(raw_path),
        segments=tuple(unquote(part) for part in parts),
        query=dict(parse_qsl(query, keep_blank_values=True)),
        headers={name.lower(): value for name, value in request.headers.items()},
        body=body,
        client_ip="127.0.0.1",
    )


def _response(status: int, body: object, *headers: tuple[str, str]) -> httpx.Response:
    content = json.dumps(body, ensure_ascii=False).encode()
    return httpx.Response(
        status, headers=[("Content-Type", "application/json"), *headers], content=content
    )
