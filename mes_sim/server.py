"""The simulated MES on a real socket: a standard-library HTTP/1.1 server around :class:`MesApp`.

``http.server`` rather than a framework because the simulator must be able to do what a
framework will not: take a request, commit it, and close the connection without answering (the
lost-response case a bridge has to survive).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, TextIO, cast
from urllib.parse import parse_qsl, unquote

from .app import MesApp, Request, Response
from .model import DEFAULT_LOT, SEMANTICS, Semantics

MAX_BODY_BYTES = 10 * 1024 * 1024
_LOT = re.compile(r"^[A-Z0-9]{1,42}$")  # WIP ids are at most 50 characters


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    # Headers and body leave in two writes: with Nagle on, the second waits for a delayed ACK.
    disable_nagle_algorithm = True
    server_version = "NeuroHubSim/1.0"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the ledger is the record; per-request lines would only clutter test output

    def _serve(self) -> None:
        server = cast(_Server, self.server)
        if server.app.refuses_body(self.path, self._declared_length()):
            self.close_connection = True  # no answer: the client sees the connection end
            return
        try:
            body = self._read_body()
        except ValueError as error:
            self.close_connection = True  # the stream position is unknown now
            self._write(Response(400, {"detail": str(error)}))
            return
        raw_path, _, query = self.path.partition("?")
        parts = raw_path.split("/")[1:] if raw_path != "/" else []
        request = Request(
            method=self.command,
            path=unquote(raw_path),
            segments=tuple(unquote(part) for part in parts),
            query=dict(parse_qsl(query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            client_ip=str(self.client_address[0]),
        )
        response = server.app.handle(request)
        if response.drop:
            # The work is committed; the client gets EOF instead of an answer.
            self.close_connection = True
            return
        self._write(response)

    def _declared_length(self) -> int:
        try:
            return int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return 0  # refused as a bad Content-Length when read

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ValueError("bad Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ValueError("bad chunk size") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise ValueError("body too large")
            chunks.append(self.rfile.read(size))
            self.rfile.readline(4)  # CRLF after the chunk

    def _write(self, response: Response) -> None:
        payload = (
            response.body  # written as it is: a proxy's page, a garbled body
            if isinstance(response.body, bytes)
            else json.dumps(response.body, ensure_ascii=False, separators=(",", ":")).encode()
        )
        try:
            self.send_response(response.status)
            if all(name.lower() != "content-type" for name, _ in response.headers):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. during the slow fault)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A client opening many connections at once must not see dropped SYNs (1 s retransmits).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: MesApp) -> None:
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host's FQDN, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing an idle keep-alive connection is normal, not worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """End idle keep-alive connections too: a stopped MES must not answer on them."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Server6(_Server):
    address_family = socket.AF_INET6


class MesSimulator:
    """The F2X NeuroHub MES as deployed (or as specified), on a loopback port.

    ``clock`` (optional, for tests) replaces the MES's clock: token expiry, rate-limit windows
    and default timestamps follow it. The state outlives ``stop()``: a stopped simulator can be
    started again on the same port, like an MES coming back after an outage.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        wips: int = 20,
        lot: str = DEFAULT_LOT,
        semantics: Semantics = "deployed",
        process_id_offset: int = 0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {list(SEMANTICS)}, not {semantics!r}")
        if not 1 <= wips <= 999:
            raise ValueError("wips must be between 1 and 999")
        if not _LOT.match(lot):
            raise ValueError("lot must be 1 to 42 characters of A-Z and 0-9")
        if process_id_offset < 0:
            raise ValueError("process_id_offset must not be negative")
        self.host, self.semantics = host, semantics
        self._port = port
        self._stopping = threading.Event()
        self._app = MesApp(
            wips=wips,
            lot=lot,
            semantics=semantics,
            process_id_offset=process_id_offset,
            clock=clock or utc_now,
            stopping=self._stopping,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> None:
        """Serve in a background thread; returns once the port is listening."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        server_class = _Server6 if ":" in self.host else _Server
        server = server_class((self.host, self._port), self._app)
        self._port = server.server_address[1]  # a restart comes back on the same port
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mes-sim:{self._port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MesSimulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the simulator has not been started: its port is not known yet")
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # what it holds

    @property
    def wip_ids(self) -> list[str]:
        return self._app.wip_ids

    @property
    def station_api_key(self) -> str:
        return self._app.station_api_key

    # JSON snapshots, typed loosely so that tests can index into them freely.

    def ledger(self) -> dict[str, Any]:
        """Exactly what GET /sim/ledger answers."""
        return self._app.ledger()

    def faults(self) -> dict[str, Any]:
        return self._app.faults()

    def set_faults(self, **changes: object) -> dict[str, Any]:
        """Same keys as POST /sim/faults; raises ValueError on an unknown key or bad value."""
        return self._app.set_faults(changes)

    def reset(self) -> None:
        self._app.reset()

    def describe(self) -> str:
        """What a person starting the simulator by hand needs to know."""
        app = self._app
        users = ", ".join(f"{u.username} / {u.password} (id {u.id})" for u in app.users)
        processes = ", ".join(f"{p.number}→{p.id} {p.code}" for p in app.processes)
        wip_ids = app.wip_ids
        shown = ", ".join(wip_ids[:3]) + (f", … {wip_ids[-1]}" if len(wip_ids) > 3 else "")
        faults = app.faults()
        return "\n".join(
            [
                f"F2X NeuroHub MES simulator ({self.semantics} semantics) at {self.url}",
                f"  users:            {users}",
                f"  processes:        number→id {processes}",
                f"  WIPs:             {len(wip_ids)} (CREATED): {shown}",
                f"  station API key:  {app.station_api_key}  (X-API-Key header, scan only)",
                "  simulator:        GET /sim/ledger, POST /sim/faults, POST /sim/reset",
                f"  faults:           mode={faults['mode']} convert={faults['convert']} "
                f"rate limit={faults['rate_limit_per_min']}/{faults['rate_limit_window_s']:g}s "
                f"token ttl={faults['token_ttl_s']:g}s",
            ]
        )


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    wips: int = 20,
    lot: str = DEFAULT_LOT,
    semantics: Semantics = "deployed",
    process_id_offset: int = 0,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run a simulator until SIGINT/SIGTERM (or until ``stop`` is set), printing what it seeded."""
    out = out or sys.stdout
    stop = stop or threading.Event()
    sim = MesSimulator(
        host=host,
        port=port,
        wips=wips,
        lot=lot,
        semantics=semantics,
        process_id_offset=process_id_offset,
    )
    with _stop_on_signals(stop):
        sim.start()
        try:
            print(sim.describe(), file=out)
            print("Press Ctrl+C to stop.", file=out, flush=True)
            while not stop.wait(0.2):
                pass
        finally:
            sim.stop()
    print("MES simulator stopped.", file=out, flush=True)
