"""TLS client contexts for the two peers the bridge dials: the MQTT broker and the MES.

Both start from the system's trust store (`ssl.create_default_context()`: certificate and
server-name checks on) and add the operator's private CA to it, so a CA file never takes the
public CAs away. Each context is built once when the config is loaded, so that an unreadable or
malformed file is a config error and not a connection failure at run time.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsFileError(ValueError):
    """A CA, certificate or key file that cannot be read or is not PEM."""


def client_context(
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A context that verifies the server's certificate against the system CAs plus `ca_file`,
    and presents `cert_file` (its key in `key_file`, or in the same file) when given."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as error:
            raise TlsFileError(f"cannot load CA file {ca_file}: {_reason(error)}") from error
    if cert_file is not None:
        try:
            context.load_cert_chain(certfile=cert_file, keyfile=key_file)
        except (OSError, ssl.SSLError) as error:
            files = f"{cert_file} and {key_file}" if key_file else str(cert_file)
            raise TlsFileError(
                f"cannot load client certificate {files}: {_reason(error)}"
            ) from error
    # Switched off only on request (mqtt.tls.insecure); the chain is verified either way.
    context.check_hostname = check_hostname
    return context


def certificate_problem(error: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind an error that a client library wrapped, if there is one."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    return error.strerror or str(error)
