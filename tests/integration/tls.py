"""Real TLS peers for the tests: certificates from a throwaway CA (trustme), an https front for
the MES simulator, and a Mosquitto with a TLS listener on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from bridge.adapters.broker import find_free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass(frozen=True)
class Pki:
    """A CA and the PEM files it issued, in one directory."""

    ca: trustme.CA
    ca_file: Path
    server_cert: Path  # for 127.0.0.1 and localhost, chain included
    server_key: Path
    misnamed_cert: Path  # for mqtt.example only: right CA, wrong name for 127.0.0.1
    misnamed_key: Path
    client_cert: Path  # certificate and key in one file
    other_ca_file: Path  # a second CA that signed nothing here: the "wrong CA"

    def server_context(self, *, cert_for: str | None = None) -> ssl.SSLContext:
        """A server context; `cert_for` issues a certificate for another name instead."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if cert_for is None:
            context.load_cert_chain(self.server_cert, self.server_key)
        else:
            self.ca.issue_cert(cert_for).configure_cert(context)
        return context


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    client = ca.issue_cert("station-bridge@test")
    files = {
        name: directory / name
        for name in (
            *("ca.pem", "server.pem", "server.key", "misnamed.pem", "misnamed.key"),
            *("client.pem", "other-ca.pem"),
        )
    }
    ca.cert_pem.write_to_path(str(files["ca.pem"]))
    for prefix, names in (("server", ("127.0.0.1", "localhost")), ("misnamed", ("mqtt.example",))):
        issued = ca.issue_cert(*names)
        issued.private_key_pem.write_to_path(str(files[f"{prefix}.key"]))
        for blob in issued.cert_chain_pems:
            blob.write_to_path(str(files[f"{prefix}.pem"]), append=True)
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client.pem"]))
    trustme.CA().cert_pem.write_to_path(str(files["other-ca.pem"]))
    return Pki(
        ca=ca,
        ca_file=files["ca.pem"],
        server_cert=files["server.pem"],
        server_key=files["server.key"],
        misnamed_cert=files["misnamed.pem"],
        misnamed_key=files["misnamed.key"],
        client_cert=files["client.pem"],
        other_ca_file=files["other-ca.pem"],
    )


@contextlib.asynccontextmanager
async def https_front(context: ssl.SSLContext, *, port: int) -> AsyncIterator[str]:
    """TLS on 127.0.0.1 in front of a plain HTTP server on `port`: yields the https URL.

    The simulator itself stays plain HTTP; this is what a reverse proxy with a private
    certificate does in front of the real MES.
    """

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), timeout=2)


@dataclass(frozen=True)
class Ports:
    tls: int  # TLS only: the bridge's listener
    plain: int  # the same broker without TLS, for the test's own tablet


@contextlib.contextmanager
def tls_mosquitto(
    pki: Pki, directory: Path, *, require_certificate: bool = False, misnamed: bool = False
) -> Iterator[Ports]:
    """Our own Mosquitto on free loopback ports: one TLS listener (its certificate for
    127.0.0.1, or with `misnamed` for mqtt.example) and one plain listener."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    ports = Ports(tls=find_free_port(), plain=find_free_port())
    cert, key = (
        (pki.misnamed_cert, pki.misnamed_key) if misnamed else (pki.server_cert, pki.server_key)
    )
    config = directory / "mosquitto.conf"
    config.write_text(
        "\n".join(
            [
                "persistence false",
                "log_dest stderr",
                "log_type error",
                "log_type warning",
                "user root",
                "allow_anonymous true",
                f"listener {ports.tls} 127.0.0.1",
                f"cafile {pki.ca_file}",
                f"certfile {cert}",
                f"keyfile {key}",
                f"require_certificate {'true' if require_certificate else 'false'}",
                f"listener {ports.plain} 127.0.0.1",
                "",
            ]
        )
    )
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for port in (ports.tls, ports.plain):
            _wait_listening(port, process)
        yield ports
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _wait_listening(port: int, process: subprocess.Popen[bytes], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"mosquitto exited with {process.returncode}: {error}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on {port} within {within} s")
