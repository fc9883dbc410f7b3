"""The MES's request handling between the socket and the model: routing, authentication, rate
limits, injected faults, validation and JSON. It sees requests as values (no sockets), holds the
one lock that guards all state, and is where time and waiting come in (the clock, the slow
fault, the BR-004 race window)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, get_args
from urllib.parse import parse_qsl

from . import schemas, views
from .access import SlidingWindowLimiter, TokenStore
from .model import (
    STATION_API_KEY,
    CompleteCommand,
    ConvertCommand,
    FieldError,
    HistoryRecord,
    MesError,
    MesState,
    Process,
    Result,
    Semantics,
    StartCommand,
    User,
    Wip,
    login_failed,
    rate_limited,
    seed,
    server_error,
    token_invalid,
    token_missing,
    unavailable,
    validation_failed,
)

logger = logging.getLogger(__name__)

FaultMode = Literal[
    "ok",
    "unavailable",
    "database_down",
    "error_500",
    "slow",
    "drop_response",
    "apply_then_error",
    "apply_then_garble",
]
ErrorStatus = Literal[500, 502, 504]
ConvertMode = Literal["broken", "working"]
JSONObject = dict[str, object]


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # percent-decoded, for error bodies
    segments: tuple[str, ...]  # split first, then decoded: "%2F" stays inside its segment
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client_ip: str


@dataclass(frozen=True)
class Response:
    status: int
    body: object
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False  # close the connection without writing a byte


@dataclass(frozen=True)
class Faults:
    """The simulator's knobs (POST /sim/faults). ``mode`` applies to /api paths and /health;
    ``path_contains`` narrows it to matching paths and ``times`` to the next N of them (then
    the mode goes back to "ok"), so a test can lose exactly one answer."""

    mode: FaultMode = "ok"
    path_contains: str | None = None
    times: int | None = None
    convert: ConvertMode = "broken"
    delay_s: float = 5.0
    error_status: ErrorStatus = 500
    rate_limit_per_min: int = 100
    rate_limit_window_s: float = 60.0
    login_rate_limit_per_min: int = 10
    auth_rate_limit_per_min: int = 30
    token_ttl_s: float = 1800.0
    br004_window_s: float = 0.03
    # A request whose body is larger: the connection is closed before it is read, without an
    # answer (what the deployed MES did with a 10 MB 완공). None: up to the server's own cap.
    max_body_bytes: int | None = None

    @classmethod
    def defaults(cls, semantics: Semantics) -> Faults:
        return cls(convert="working" if semantics == "spec" else "broken")

    def changed(self, changes: Mapping[str, object]) -> tuple[Faults, bool]:
        """The faults with ``changes`` applied, and whether to expire every access token.
        Raises ValueError naming the first bad key or value."""
        values: dict[str, Any] = asdict(self)
        unknown = sorted(set(changes) - {*values, "expire_tokens"})
        if unknown:
            raise ValueError(f"unknown fault keys: {unknown}; known: {sorted(values)}")
        for key, value in changes.items():
            if key in _CHOICES and value not in _CHOICES[key]:
                raise ValueError(f"{key} must be one of {list(_CHOICES[key])}, not {value!r}")
            if key in _NUMBERS:
                values[key] = _number(key, value, *_NUMBERS[key])
            elif key == "times":
                values[key] = None if value is None else int(_number(key, value, 1, True))
            elif key == "max_body_bytes":
                values[key] = None if value is None else int(_number(key, value, 0, True))
            elif key == "path_contains" and not (value is None or isinstance(value, str)):
                raise ValueError(f"path_contains must be a string or null, not {value!r}")
            elif key == "expire_tokens" and not isinstance(value, bool):
                raise ValueError(f"expire_tokens must be true or false, not {value!r}")
            elif key != "expire_tokens":
                values[key] = value
        return Faults(**values), changes.get("expire_tokens") is True

    def applies_to(self, request: Request) -> bool:
        return self.mode != "ok" and (
            self.path_contains is None or self.path_contains in request.path
        )

    def after_use(self) -> Faults:
        """The faults once one more request has been given the fault."""
        if self.times is None:
            return self
        if self.times > 1:
            return replace(self, times=self.times - 1)
        return replace(self, mode="ok", times=None, path_contains=None)

    def as_json(self) -> JSONObject:
        return dict(asdict(self))


_CHOICES: dict[str, tuple[object, ...]] = {
    "mode": get_args(FaultMode),
    "error_status": get_args(ErrorStatus),
    "convert": get_args(ConvertMode),
}
# key -> (minimum, must be a whole number)
_NUMBERS: dict[str, tuple[float, bool]] = {
    "delay_s": (0, False),
    "rate_limit_per_min": (1, True),
    "rate_limit_window_s": (0.001, False),
    "login_rate_limit_per_min": (1, True),
    "auth_rate_limit_per_min": (1, True),
    "token_ttl_s": (0, False),
    "br004_window_s": (0, False),
}


def _number(key: str, value: object, minimum: float, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, not {value!r}")
    if integer and not float(value).is_integer():
        raise ValueError(f"{key} must be a whole number, not {value!r}")
    if value < minimum:
        raise ValueError(f"{key} must be at least {minimum:g}, not {value!r}")
    return int(value) if integer else float(value)


@dataclass
class Counters:
    requests: int = 0  # requests received on /api paths and /health
    logins: int = 0  # successful logins (form or JSON)
    refreshes: int = 0  # successful token refreshes
    rate_limited: int = 0  # 429s answered
    labels_printed: int = 0  # generate-from-wip calls with print_label true
    responses_dropped: int = 0  # answers withheld by the drop_response fault
    slow_finished: int = 0  # requests the slow fault delayed that are done (applied or refused)
    bodies_refused: int = 0  # connections closed on a body over max_body_bytes, unread
    # "POST /api/v1/wip-items/{wip_id}/scan": n — what a client really sent, route by route
    requests_by_route: dict[str, int] = field(default_factory=dict)


Handler = Callable[[Request, tuple[str, ...]], Response]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: tuple[str, ...]  # "*" matches one non-empty segment
    handler: Handler = field(compare=False)

    @property
    def template(self) -> str:
        return "/" + "/".join("{wip_id}" if part == "*" else part for part in self.pattern)

    def match(self, segments: tuple[str, ...]) -> tuple[str, ...] | None:
        if len(segments) != len(self.pattern):
            return None
        params = []
        for want, got in zip(self.pattern, segments, strict=True):
            if want == "*":
                if not got:
                    return None
                params.append(got)
            elif want != got:
                return None
        return tuple(params)


def _json(status: int, body: object, *headers: tuple[str, str]) -> Response:
    return Response(status, body, headers)


NOT_FOUND = Response(404, {"detail": "Not Found"})
NOT_ALLOWED = Response(405, {"detail": "Method Not Allowed"})


class MesApp:
    """The simulated MES behind one HTTP server. Thread-safe: handlers run in parallel."""

    def __init__(
        self,
        *,
        wips: int,
        lot: str,
        semantics: Semantics,
        process_id_offset: int,
        clock: Callable[[], datetime],
        stopping: threading.Event,
    ) -> None:
        self.semantics: Semantics = semantics
        self._wips, self._lot, self._offset = wips, lot, process_id_offset
        self._clock = clock
        self._stopping = stopping  # set on shutdown: cuts every deliberate wait short
        self._lock = threading.Lock()
        self._state = self._seed()
        self._tokens = TokenStore()
        self._limiter = SlidingWindowLimiter()
        self._faults = Faults.defaults(semantics)
        self._counters = Counters()
        self._context = {"process_id_offset": process_id_offset}
        api, wip = ("api", "v1"), ("api", "v1", "wip-items", "*")
        self._api_routes = (
            _Route("POST", (*api, "auth", "login"), self._login_form),
            _Route("POST", (*api, "auth", "login", "json"), self._login_json),
            _Route("POST", (*api, "auth", "refresh"), self._refresh),
            _Route("GET", (*api, "processes", "active"), self._active_processes),
            _Route("GET", wip, self._get_wip),
            _Route("POST", (*wip, "scan"), self._scan),
            _Route("POST", (*wip, "start-process"), self._start),
            _Route("POST", (*wip, "complete-process"), self._complete),
            _Route("POST", (*wip, "convert-to-serial"), self._convert),
            _Route("GET", (*wip, "trace"), self._trace),
            _Route("POST", (*api, "serials", "generate-from-wip"), self._generate),
            _Route("GET", ("health",), self._health),
        )
        self._sim_routes = (
            _Route("GET", ("sim", "ledger"), lambda req, _: _json(200, self.ledger())),
            _Route("GET", ("sim", "faults"), lambda req, _: _json(200, self.faults())),
            _Route("POST", ("sim", "faults"), self._post_faults),
            _Route("POST", ("sim", "reset"), self._post_reset),
        )

    def _seed(self) -> MesState:
        return seed(
            semantics=self.semantics,
            lot=self._lot,
            wips=self._wips,
            process_id_offset=self._offset,
            now=self._clock(),
        )

    # -- the simulator's own controls ---------------------------------------------------------

    @property
    def wip_ids(self) -> list[str]:
        with self._lock:
            return [w.wip_id for w in self._state.wips.values()]

    @property
    def users(self) -> list[User]:
        with self._lock:
            return list(self._state.users.values())

    @property
    def processes(self) -> list[Process]:
        with self._lock:
            return self._state.active_processes()

    station_api_key = STATION_API_KEY

    def ledger(self) -> JSONObject:
        with self._lock:
            return views.ledger_json(self._state, asdict(self._counters), self._faults.as_json())

    def faults(self) -> JSONObject:
        with self._lock:
            return self._faults.as_json()

    def set_faults(self, changes: Mapping[str, object]) -> JSONObject:
        with self._lock:
            self._faults, expire = self._faults.changed(changes)
            if expire:
                self._tokens.expire_access_tokens(self._clock())
            return self._faults.as_json()

    def refuses_body(self, path: str, length: int) -> bool:
        """Whether a request on `path` with a body of `length` bytes is cut off unread (and
        counted): on /api paths only, like every fault."""
        with self._lock:
            limit = self._faults.max_body_bytes
            if limit is None or length <= limit or not path.startswith("/api/"):
                return False
            self._counters.bodies_refused += 1
            return True

    def reset(self) -> None:
        """Back to the seed: data, tokens, rate-limit windows, faults and counters."""
        with self._lock:
            self._state = self._seed()
            self._tokens = TokenStore()
            self._limiter = SlidingWindowLimiter()
            self._faults = Faults.defaults(self.semantics)
            self._counters = Counters()

    # -- dispatch -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.segments[:1] == ("sim",):
            return self._route(request, self._sim_routes)
        counted = request.segments[:1] == ("api",) or request.segments == ("health",)
        if not counted:
            return self._route(request, ())
        with self._lock:
            self._counters.requests += 1
            by_route = self._counters.requests_by_route
            key = self._route_key(request)
            by_route[key] = by_route.get(key, 0) + 1
            faults = self._faults
            mode = faults.mode if faults.applies_to(request) else "ok"
            if mode != "ok":
                self._faults = faults.after_use()
        if mode == "unavailable" or (mode == "database_down" and request.segments != ("health",)):
            return self._error(request, unavailable(self.semantics))
        if mode == "database_down":
            return _json(200, {**self._health_body(), "status": "degraded", "database": "down"})
        if mode == "error_500":
            return self._error(request, server_error(self.semantics))
        if mode == "slow":
            self._stopping.wait(faults.delay_s)
        limited = self._rate_limit(request)
        response = limited or self._route(request, self._api_routes)
        if mode == "slow":
            with self._lock:
                self._counters.slow_finished += 1
        if mode == "drop_response":
            with self._lock:
                self._counters.responses_dropped += 1
            return Response(response.status, response.body, response.headers, drop=True)
        if mode == "apply_then_error":
            return self._applied_then_failed(request, faults.error_status)
        if mode == "apply_then_garble":
            # Says gzip, is not: the client cannot decode the answer of a change that happened.
            garbled = (("Content-Encoding", "gzip"),)
            return Response(response.status, b"\x1f\x8bnot gzip at all", garbled)
        return response

    def _applied_then_failed(self, request: Request, status: ErrorStatus) -> Response:
        """The change happened, then the answer was lost upstream: the MES crashed writing it
        (500), or the proxy in front of it gave up (502, 504, answered in the proxy's HTML)."""
        if status == 500:
            return self._error(request, server_error(self.semantics))
        reason = {502: "Bad Gateway", 504: "Gateway Time-out"}[status]
        page = f"<html><head><title>{status} {reason}</title></head><body>nginx</body></html>"
        return Response(status, page.encode(), (("Content-Type", "text/html"),))

    def _route_key(self, request: Request) -> str:
        for route in self._api_routes:
            if route.match(request.segments) is not None and route.method == request.method:
                return f"{route.method} {route.template}"
        return f"{request.method} (no route)"

    def _route(self, request: Request, routes: tuple[_Route, ...]) -> Response:
        path_known = False
        for route in routes:
            params = route.match(request.segments)
            if params is None:
                continue
            path_known = True
            if route.method == request.method:
                try:
                    return route.handler(request, params)
                except MesError as error:
                    return self._error(request, error)
                except Exception:
                    logger.exception("simulated MES failed on %s %s", request.method, request.path)
                    return self._error(request, server_error(self.semantics))
        return NOT_ALLOWED if path_known else NOT_FOUND

    def _error(self, request: Request, error: MesError) -> Response:
        body = views.error_body(
            error,
            self.semantics,
            path=request.path,
            now=self._clock(),
            trace_id=uuid.uuid4().hex,
        )
        headers: list[tuple[str, str]] = []
        if error.status == 401:
            headers.append(("WWW-Authenticate", "Bearer"))
        if error.retry_after is not None:
            headers.append(("Retry-After", str(error.retry_after)))
        return Response(error.status, body, tuple(headers))

    def _rate_limit(self, request: Request) -> Response | None:
        segments = request.segments
        if segments[:2] != ("api", "v1"):
            return None
        with self._lock:
            faults = self._faults
            if segments[2:] in (("auth", "login"), ("auth", "login", "json")):
                bucket, limit = "login", faults.login_rate_limit_per_min
            elif segments[2:3] == ("auth",):
                bucket, limit = "auth", faults.auth_rate_limit_per_min
            else:
                bucket, limit = "api", faults.rate_limit_per_min
            window = faults.rate_limit_window_s
            wait = self._limiter.admit(
                (request.client_ip, bucket),
                limit=limit,
                window_s=window,
                now=self._clock().timestamp(),
            )
            if wait is None:
                return None
            self._counters.rate_limited += 1
        error = rate_limited(self.semantics, limit=limit, window_s=window, retry_after=wait)
        return self._error(request, error)

    # -- helpers ------------------------------------------------------------------------------

    def _require_user(self, request: Request, *, station_key_ok: bool = False) -> None:
        """Raises 401 unless the request carries a live user token (or, for scan, a key)."""
        token = _bearer(request.headers.get("authorization"))
        key = request.headers.get("x-api-key") if station_key_ok else None
        if token is None and not key:
            raise token_missing(self.semantics)
        now = self._clock()
        with self._lock:
            if token is not None and self._tokens.access_user(token, now) is not None:
                return
            if key and self._tokens.is_station_key(key):
                return
        raise token_invalid(self.semantics)

    def _valid(self, *found: list[FieldError]) -> None:
        """Refuse with every problem of path, query and body at once, as FastAPI does."""
        errors = [error for errors in found for error in errors]
        if errors:
            raise validation_failed(self.semantics, errors)

    def _token_answer(
        self, user: User, access: str, refresh: str, station_id: str | None
    ) -> JSONObject:
        answer: JSONObject = {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": int(self._faults.token_ttl_s),
            "user": views.user_json(user),
        }
        if station_id:
            answer["station_api_key"] = self._tokens.issue_station_key()
        return answer

    # -- auth routes --------------------------------------------------------------------------

    def _login(self, username: str, password: str, station_id: str | None) -> Response:
        now = self._clock()
        with self._lock:
            user = self._state.user_by_name(username)
            if user is None or user.password != password:
                raise login_failed(self.semantics)
            access, refresh = self._tokens.login(user.id, now, self._faults.token_ttl_s)
            self._counters.logins += 1
            return _json(200, self._token_answer(user, access, refresh, station_id))

    def _login_form(self, request: Request, _: tuple[str, ...]) -> Response:
        fields = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        form, errors = schemas.form_body(schemas.LoginForm, fields)
        self._valid(errors)
        assert form is not None
        return self._login(form.username, form.password, None)

    def _login_json(self, request: Request, _: tuple[str, ...]) -> Response:
        body, errors = schemas.json_body(schemas.LoginBody, request.body)
        self._valid(errors)
        assert body is not None
        return self._login(body.username, body.password, body.station_id)

    def _refresh(self, request: Request, _: tuple[str, ...]) -> Response:
        body, errors = schemas.json_body(schemas.RefreshBody, request.body)
        self._valid(errors)
        assert body is not None
        now = self._clock()
        with self._lock:
            user_id = self._tokens.refresh_user(body.refresh_token, now)
            if user_id is None:
                raise token_invalid(self.semantics)
            user = self._state.users[user_id]
            access = self._tokens.issue_access(user.id, now, self._faults.token_ttl_s)
            self._counters.refreshes += 1
            # The refresh token is not rotated: the same one comes back.
            return _json(200, self._token_answer(user, access, body.refresh_token, body.station_id))

    # -- public routes ------------------------------------------------------------------------

    def _health(self, request: Request, _: tuple[str, ...]) -> Response:
        return _json(200, self._health_body())

    def _health_body(self) -> JSONObject:
        return {
            "status": "healthy",
            "database": "connected",
            "version": "1.0.0",
            "environment": "simulator",
            "timestamp": views.iso(self._clock()),
        }

    def _active_processes(self, request: Request, _: tuple[str, ...]) -> Response:
        with self._lock:
            return _json(200, [views.process_json(p) for p in self._state.active_processes()])

    def _generate(self, request: Request, _: tuple[str, ...]) -> Response:
        params, errors = schemas.query(schemas.GenerateQuery, request.query)
        self._valid(errors)
        assert params is not None
        with self._lock:
            serial, _wip = self._state.generate_serial(params.wip_id, self._clock())
            if params.print_label:
                self._counters.labels_printed += 1
            return _json(201, views.serial_json(serial))

    # -- WIP routes ---------------------------------------------------------------------------

    def _scan(self, request: Request, params: tuple[str, ...]) -> Response:
        self._require_user(request, station_key_ok=True)
        query, errors = schemas.query(schemas.ScanQuery, request.query)
        self._valid(errors)
        assert query is not None
        with self._lock:
            view = self._state.scan(params[0], query.process_id)
            return _json(200, views.scan_json(view))

    def _trace(self, request: Request, params: tuple[str, ...]) -> Response:
        self._require_user(request)
        with self._lock:
            return _json(200, views.trace_json(self._state, self._state.wip_by_code(params[0])))

    def _get_wip(self, request: Request, params: tuple[str, ...]) -> Response:
        self._require_user(request)
        wip_pk, errors = schemas.path_int(params[0])
        self._valid(errors)
        assert wip_pk is not None
        with self._lock:
            return _json(200, views.wip_json(self._state.wip(wip_pk)))

    def _start(self, request: Request, params: tuple[str, ...]) -> Response:
        self._require_user(request)
        wip_pk, path_errors = schemas.path_int(params[0])
        body, body_errors = schemas.json_body(schemas.StartBody, request.body, self._context)
        self._valid(path_errors, body_errors)
        assert wip_pk is not None and body is not None
        command = StartCommand(
            process_id=body.process_id,
            operator_id=body.operator_id,
            equipment_id=body.equipment_id,
            started_at=body.started_at,
        )
        with self._lock:
            wip = self._state.start_process(wip_pk, command, self._clock())
            if self.semantics == "spec":
                return _json(
                    200,
                    {"wip_item": views.wip_json(wip), "message": "Process started successfully"},
                )
            return _json(200, views.wip_json(wip))

    def _complete(self, request: Request, params: tuple[str, ...]) -> Response:
        self._require_user(request)
        wip_pk, path_errors = schemas.path_int(params[0])
        query, query_errors = schemas.query(schemas.CompleteQuery, request.query, self._context)
        body, body_errors = schemas.json_body(schemas.CompleteBody, request.body)
        self._valid(path_errors, query_errors, body_errors)
        assert wip_pk is not None and query is not None and body is not None
        command = CompleteCommand(
            process_id=query.process_id,
            operator_id=query.operator_id,
            result=Result(body.result),
            measurements=body.measurements,
            defects=body.defects,
            notes=body.notes,
            started_at=body.started_at,
            completed_at=body.completed_at,
        )
        with self._lock:
            state = self._state
            plan = state.prepare_completion(wip_pk, command, self._clock())
            window = self._faults.br004_window_s
            if not plan.duplicate_check_is_racy:
                record, wip = state.commit_completion(plan, self._clock())
                return _completion(record, wip)
        # The deployed MES checks for an earlier PASS, then inserts in a later statement;
        # requests arriving in between all pass the check (contract §5, BR-004).
        self._stopping.wait(window)
        with self._lock:
            record, wip = state.commit_completion(plan, self._clock())
            return _completion(record, wip)

    def _convert(self, request: Request, params: tuple[str, ...]) -> Response:
        self._require_user(request)
        wip_pk, path_errors = schemas.path_int(params[0])
        body, body_errors = schemas.json_body(schemas.ConvertBody, request.body)
        self._valid(path_errors, body_errors)
        assert wip_pk is not None and body is not None
        command = ConvertCommand(operator_id=body.operator_id, notes=body.notes)
        with self._lock:
            serial, wip = self._state.convert_to_serial(
                wip_pk, command, self._clock(), working=self._faults.convert == "working"
            )
            answer = {"serial": views.serial_json(serial), "wip_item": views.wip_json(wip)}
            return _json(201 if self.semantics == "spec" else 200, answer)

    # -- simulator routes ---------------------------------------------------------------------

    def _post_faults(self, request: Request, _: tuple[str, ...]) -> Response:
        changes = schemas.json_object(request.body)
        if changes is None:
            return _json(400, {"detail": "the body must be a JSON object of fault settings"})
        try:
            return _json(200, self.set_faults(changes))
        except ValueError as error:
            return _json(400, {"detail": str(error)})

    def _post_reset(self, request: Request, _: tuple[str, ...]) -> Response:
        self.reset()
        return _json(200, {"status": "reset", "faults": self.faults()})


def _completion(record: HistoryRecord, wip: Wip) -> Response:
    return _json(
        200, {"process_history": views.history_json(record), "wip_item": views.wip_json(wip)}
    )


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None
