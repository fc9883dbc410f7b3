"""The one MES client: live calls and outbox replay both go through `MesClient`."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from bridge.adapters.tls import certificate_problem, client_context
from bridge.core.domain import Result, format_utc
from bridge.faults import FaultPoint, Faults
from bridge.mes.auth import TokenSource
from bridge.mes.errors import MesError, MesErrorCode, classify_response, classify_transport
from bridge.mes.instants import same_instant
from bridge.mes.models import (
    CompleteProcess,
    Completion,
    ConvertToSerial,
    MesRequest,
    Process,
    Recorded,
    Serial,
    StartProcess,
    WipItem,
    WipStatus,
    WipTrace,
)
from bridge.mes.pacing import Pacer, SendLog
from bridge.mes.recent import RecentMap
from bridge.mes.rules import start_refusal
from bridge.mes.settings import MesSettings

_log = logging.getLogger(__name__)
_Model = TypeVar("_Model", bound=BaseModel)
_Auth = Literal["user", "scan", "none"]

# A 429 is waited out once when the MES asks for at most this long; a longer wait is left to
# the caller (the outbox schedules it) rather than holding a request open for minutes.
_MAX_RATE_WAIT_S = 60.0
_DEFAULT_RATE_WAIT_S = 5.0
# WIP string -> the MES's id: a miss costs one scan, an entry about 200 bytes. Lanes deliver one
# WIP's requests back to back, so only the WIPs in delivery right now need to be in it.
_WIP_IDS_KEPT = 4096


def _segment(wip_id: str) -> str:
    """One path segment, whatever the barcode holds: `../auth/me#` must stay a WIP id."""
    return quote(wip_id, safe="").replace(".", "%2E")


class MesClient:
    """An async client for the deployed F2X NeuroHub MES.

    Methods take the WIP string the station scanned and the process number 1..6; the MES's
    integer ids for both are looked up (and cached) here. Every failure is a `MesError`.
    """

    def __init__(
        self,
        settings: MesSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        faults: Faults | None = None,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
        send_log: Path | None = None,
    ) -> None:
        self._settings = settings
        # httpx ignores the client's `verify` when it is given a transport: the trust goes on
        # the transport itself, also when a fault seam wraps it.
        transport = transport or httpx.AsyncHTTPTransport(
            verify=client_context(ca_file=settings.ca_file)
        )
        if faults is not None:
            transport = _FaultyTransport(transport, faults)
        self._http = httpx.AsyncClient(
            base_url=str(settings.url).rstrip("/"),
            timeout=httpx.Timeout(settings.timeout_s),
            transport=transport,
            headers={"Accept": "application/json"},
            event_hooks=event_hooks,  # metrics and the reachability watch see every exchange
        )
        log = (
            SendLog(send_log, window_s=settings.rate_window_s, unanswered_s=settings.timeout_s)
            if send_log
            else None
        )
        self._pacer = Pacer(
            limit=settings.rate_limit, window_s=settings.rate_window_s, clock=clock, log=log
        )
        self._tokens = TokenSource(
            self._post_json,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            static_token=settings.token.get_secret_value() if settings.token else None,
            refresh_margin_s=settings.refresh_margin_s,
            clock=clock,
        )
        self._api_key = settings.api_key.get_secret_value() if settings.api_key else None
        self._wip_pks: RecentMap[str, int] = RecentMap(size=_WIP_IDS_KEPT)
        self._process_pks: dict[int, int] | None = None
        self._process_lookup: asyncio.Task[dict[int, int]] | None = None

    async def __aenter__(self) -> MesClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the MES's operations ------------------------------------------------------------------

    async def login(self) -> None:
        """Get a user token now rather than on the first call: checks the credentials."""
        await self._tokens.bearer()

    async def health(self) -> str:
        """The MES's own health word ("healthy" or "degraded"); raises when it cannot answer."""
        body = await self._call("GET", "/health", auth="none", paced=False)
        return str(body.get("status", "unknown")) if isinstance(body, dict) else "unknown"

    async def probe(self, wip_id: str | None = None) -> None:
        """A real request that needs the MES's database (and, with a WIP, a valid token): how a
        recovery is confirmed, since /health answers 200 even while the database is down.
        Raises when the MES cannot serve it."""
        if wip_id is None:
            await self._call("GET", "/api/v1/processes/active", auth="none")
        else:
            await self._call("GET", f"/api/v1/wip-items/{_segment(wip_id)}/trace")

    async def process_ids(self) -> dict[int, int]:
        """Process number -> the MES's process id, from the active process list (cached).

        Callers that ask while the list is being fetched share that one request: after a
        restart every lane asks at once, and each asking on its own spent the MES's budget."""
        if self._process_pks is None:
            if self._process_lookup is None:
                self._process_lookup = asyncio.create_task(
                    self._fetch_process_ids(), name="MES process list"
                )
            lookup = self._process_lookup
            try:
                # Shielded: one caller cancelled must not fail the others' lookup.
                self._process_pks = await asyncio.shield(lookup)
            finally:
                if lookup.done() and self._process_lookup is lookup:
                    self._process_lookup = None
        return dict(self._process_pks)

    async def _fetch_process_ids(self) -> dict[int, int]:
        body = await self._call("GET", "/api/v1/processes/active", auth="none")
        processes = self._parse_list(Process, body)
        return {p.process_number: p.id for p in processes if p.is_active}

    async def scan(self, wip_id: str, *, process: int | None = None) -> WipItem:
        """Look a scanned WIP up (and, with `process`, pre-check that it may start)."""
        params = {"process_id": await self._process_pk(process)} if process else None
        body = await self._call(
            "POST", f"/api/v1/wip-items/{_segment(wip_id)}/scan", auth="scan", params=params
        )
        wip = self._parse(WipItem, body)
        self._wip_pks.put(wip_id, wip.id)
        return wip

    async def start_process(self, request: StartProcess) -> WipItem:
        """착공, after a scan for that process. Repeating a start is harmless on the MES: it
        overwrites the open start. A start that can never end in a PASS (the process already
        passed, the WIP converted) is refused here, with the scan's word for it: the MES would
        take it and leave it open for ever."""
        refused = start_refusal(
            await self.scan(request.wip_id, process=request.process), process=request.process
        )
        if refused is not None:
            raise refused
        body: dict[str, Any] = {
            "process_id": await self._process_pk(request.process),
            "operator_id": request.operator_id,
            "started_at": format_utc(request.started_at),
        }
        if request.equipment_id is not None:
            body["equipment_id"] = request.equipment_id
        pk = await self._wip_pk(request.wip_id)
        answer = await self._call(
            "POST", f"/api/v1/wip-items/{pk}/start-process", json=body, wip_id=request.wip_id
        )
        # The deployed MES answers the bare WIP; the integration spec wraps it in "wip_item".
        if isinstance(answer, dict) and isinstance(answer.get("wip_item"), dict):
            answer = answer["wip_item"]
        return self._parse(WipItem, answer)

    async def complete_process(self, request: CompleteProcess) -> Completion:
        """완공. A REWORK goes out as FAIL unless `rework_as` is REWORK (the deployed MES
        rejects REWORK, and lets a FAILED WIP restart the same process)."""
        result, notes = self._as_sent(request)
        process_pk = await self._process_pk(request.process)
        # Query parameters are what the deployed MES reads; the body copy is the spec's shape.
        params = {"process_id": process_pk, "operator_id": request.operator_id}
        body = {
            **params,
            "result": result.value,
            "measurements": request.measurements,
            "defects": request.defects,
            "started_at": format_utc(request.started_at),
            "completed_at": format_utc(request.completed_at),
        }
        if notes:  # the MES stores "" as an empty note, not as none
            body["notes"] = notes
        pk = await self._wip_pk(request.wip_id)
        answer = await self._call(
            "POST",
            f"/api/v1/wip-items/{pk}/complete-process",
            params=params,
            json=body,
            wip_id=request.wip_id,
        )
        if isinstance(answer, dict):
            answer = {**answer, "sent_result": result.value}
        return self._parse(Completion, answer)

    async def convert_to_serial(self, request: ConvertToSerial) -> Serial:
        if self._settings.convert_via == "generate-from-wip":
            return await self._generate_from_wip(request.wip_id)
        pk = await self._wip_pk(request.wip_id)
        body: dict[str, Any] = {"operator_id": request.operator_id}
        if request.notes:
            body["notes"] = request.notes
        answer = await self._call(
            "POST",
            f"/api/v1/wip-items/{pk}/convert-to-serial",
            json=body,
            wip_id=request.wip_id,
        )
        serial = answer.get("serial") if isinstance(answer, dict) else None
        number = serial.get("serial_number") if isinstance(serial, dict) else None
        return self._parse(Serial, {"wip_id": request.wip_id, "serial_number": number})

    async def trace(self, wip_id: str) -> WipTrace:
        """Everything the MES recorded for one WIP: how a lost answer is checked."""
        body = await self._call("GET", f"/api/v1/wip-items/{_segment(wip_id)}/trace")
        return self._parse(WipTrace, body)

    async def recorded(self, request: MesRequest) -> Recorded | None:
        """Whether the MES already holds this request, after an attempt whose answer was lost.

        A completion is recognised by its own `completed_at`, the same instant in whatever form
        the MES writes it back (`same_instant`): a lost PASS and a lost FAIL are both found, and
        an older FAIL of the same process is not mistaken for it. A start is never reported as
        recorded because repeating one is harmless (the MES overwrites the open start with the
        same values). When it was recorded, the WIP's status read on the way comes with it.
        """
        if isinstance(request, StartProcess):
            return None
        if isinstance(request, ConvertToSerial):
            wip = await self.scan(request.wip_id)
            found = wip.status is WipStatus.CONVERTED or wip.serial_id is not None
            return Recorded(wip_status=wip.status) if found else None
        result, _ = self._as_sent(request)
        trace = await self.trace(request.wip_id)
        found = any(
            entry.process_number == request.process
            and (entry.result or "").upper() == result.value
            and same_instant(request.completed_at, entry.complete_time)
            for entry in trace.process_history
        )
        return Recorded(wip_status=trace.status) if found else None

    async def send(self, request: MesRequest) -> WipItem | Completion | Serial:
        """Deliver any stored request: the path the outbox replays through."""
        if isinstance(request, StartProcess):
            return await self.start_process(request)
        if isinstance(request, CompleteProcess):
            return await self.complete_process(request)
        return await self.convert_to_serial(request)

    def _as_sent(self, request: CompleteProcess) -> tuple[Result, str]:
        if request.result is Result.REWORK and self._settings.rework_as == "FAIL":
            return Result.FAIL, f"REWORK: {request.notes}".rstrip(" ")[:5000]
        return request.result, request.notes

    # -- ids ----------------------------------------------------------------------------------

    async def _wip_pk(self, wip_id: str) -> int:
        pk = self._wip_pks.get(wip_id)
        return pk if pk is not None else (await self.scan(wip_id)).id

    async def _process_pk(self, number: int) -> int:
        if not self._settings.resolve_process_ids:
            return number
        pks = await self.process_ids()
        if number not in pks:
            raise MesError(
                MesErrorCode.VALIDATION,
                detail=f"process {number} is not an active process at the MES "
                f"(active: {sorted(pks)})",
            )
        return pks[number]

    async def _generate_from_wip(self, wip_id: str) -> Serial:
        # generate-from-wip checks nothing (no BR-005): only a COMPLETED WIP may get a serial.
        wip = await self.scan(wip_id)
        if wip.status is WipStatus.CONVERTED or wip.serial_id is not None:
            raise MesError(
                MesErrorCode.ALREADY_CONVERTED, detail=f"{wip_id} is already converted to serial"
            )
        if wip.status is not WipStatus.COMPLETED:
            raise MesError(
                MesErrorCode.INVALID_WIP_STATUS,
                detail=f"{wip_id} must be in COMPLETED status for serial conversion. "
                f"Current status: {wip.status}",
            )
        answer = await self._call(
            "POST",
            "/api/v1/serials/generate-from-wip",
            auth="none",
            params={"wip_id": wip_id, "print_label": str(self._settings.print_label).lower()},
        )
        number = answer.get("serial_number") if isinstance(answer, dict) else None
        return self._parse(Serial, {"wip_id": wip_id, "serial_number": number})

    # -- transport ----------------------------------------------------------------------------

    async def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        return await self._call("POST", path, auth="none", json=body, paced=False)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        auth: _Auth = "user",
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        paced: bool = True,
        wip_id: str | None = None,
    ) -> Any:
        renewed = waited = False
        while True:
            headers, token = await self._auth_headers(auth)
            async with self._pacer.slot() if paced else nullcontext():
                response = await self._send(method, path, params=params, json=json, headers=headers)
            if response.is_success:
                return self._json(response)
            error = classify_response(
                response.status_code,
                self._json(response, strict=False),
                retry_after=response.headers.get("Retry-After"),
            )
            if error.code is MesErrorCode.AUTH and token is not None and not renewed:
                renewed = await self._tokens.renew_after_401(token)
                if renewed:
                    continue
            if error.code is MesErrorCode.RATE_LIMITED and paced and not waited:
                wait = error.retry_after if error.retry_after is not None else _DEFAULT_RATE_WAIT_S
                self._pacer.hold(wait)
                _log.warning(
                    "the MES rate-limited %s %s: every request waits %.1f s", method, path, wait
                )
                if wait <= _MAX_RATE_WAIT_S:
                    waited = True
                    continue
            if error.code is MesErrorCode.WIP_NOT_FOUND and wip_id is not None:
                self._wip_pks.forget(wip_id)  # the MES may have been re-seeded
            raise error

    async def _auth_headers(self, auth: _Auth) -> tuple[dict[str, str], str | None]:
        if auth == "none":
            return {}, None
        if auth == "scan" and self._api_key is not None:
            return {"X-API-Key": self._api_key}, None
        if auth == "scan" and not self._tokens.available:
            raise MesError(
                MesErrorCode.AUTH,
                detail="no MES credentials configured for scan "
                "(mes.api_key, mes.username/password or mes.token)",
            )
        token = await self._tokens.bearer()
        return {"Authorization": f"Bearer {token}"}, token

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        json: Any,
        headers: dict[str, str],
    ) -> httpx.Response:
        try:
            return await self._http.request(method, path, params=params, json=json, headers=headers)
        except httpx.ConnectError as error:
            if (problem := certificate_problem(error)) is not None:
                detail = _tls_detail(problem, self._settings.ca_file)
                _log.error("MES %s: TLS failed: %s", self._settings.url, detail)
                raise classify_transport("tls", sent=False, detail=detail) from error
            raise classify_transport("network", sent=False, detail=_describe(error)) from error
        except httpx.ConnectTimeout as error:
            raise classify_transport("network", sent=False, detail=_describe(error)) from error
        except httpx.PoolTimeout as error:
            raise classify_transport("timeout", sent=False, detail=_describe(error)) from error
        except httpx.TimeoutException as error:
            raise classify_transport("timeout", sent=True, detail=_describe(error)) from error
        except httpx.TransportError as error:
            # Dropped after the request was written: the MES may have recorded it.
            raise classify_transport("network", sent=True, detail=_describe(error)) from error
        except httpx.HTTPError as error:
            # An answer came and could not be read (a corrupt gzip body from a proxy, …): the
            # MES answered, so it may have recorded the request.
            raise MesError(
                MesErrorCode.SERVER, detail=_describe(error), maybe_applied=True
            ) from error

    @staticmethod
    def _json(response: httpx.Response, *, strict: bool = True) -> Any:
        try:
            return response.json()
        except ValueError as error:
            if not strict:
                return response.text[:500]
            raise MesError(
                MesErrorCode.SERVER,
                status=response.status_code,
                detail="the MES answered with something that is not JSON",
                maybe_applied=True,
            ) from error

    @staticmethod
    def _parse(model: type[_Model], body: Any) -> _Model:
        try:
            return model.model_validate(body)
        except ValidationError as error:
            raise MesError(
                MesErrorCode.SERVER,
                detail=f"unexpected answer from the MES ({model.__name__}): "
                f"{error.error_count()} field error(s)",
                maybe_applied=True,
            ) from error

    @classmethod
    def _parse_list(cls, model: type[_Model], body: Any) -> list[_Model]:
        if not isinstance(body, list):
            raise MesError(MesErrorCode.SERVER, detail="expected a list from the MES")
        return [cls._parse(model, item) for item in body]


def _tls_detail(problem: ssl.SSLError, ca_file: Path | None) -> str:
    why = getattr(problem, "verify_message", None) or problem.strerror or str(problem)
    trusted = f"the system's CAs and {ca_file}" if ca_file else "the system's CAs (no mes.ca_file)"
    return f"{problem.reason}: {why.rstrip('.')}; trusted: {trusted}"


def _describe(error: httpx.HTTPError) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class _FaultyTransport(httpx.AsyncBaseTransport):
    """Lets a test put a fault where an answer gets lost: the request reached the MES and its
    answer's headers are in, its body not read yet (`FaultPoint.AFTER_SEND`)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        try:
            await self._faults.hit(FaultPoint.AFTER_SEND)
        except BaseException:
            await response.aclose()
            raise
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
