"""A serial line's settings (baud rate and framing), and what a pseudo-terminal shows of them.

A pty carries no bits, so a wrong baud rate there garbles nothing. What it does keep is the
termios a reader set on it: the simulator compares those with the settings the gauge "really"
uses and garbles its output when they differ, standing in for a real mismatch. On Linux (6.18
here) a pty keeps the baud rate and PARODD, but the kernel forces CS8 and clears PARENB, so the
byte size and even-vs-no parity cannot be seen there (8N1, 8E1 and 7E1 look alike; 7O1 does not),
and a tcsetattr that asks for them without changing anything the pty keeps fails with EINVAL.
"""

from __future__ import annotations

import re
import termios
from dataclasses import dataclass
from typing import Literal

Parity = Literal["N", "E", "O", "M", "S"]
ByteSize = Literal[5, 6, 7, 8]
_BYTESIZES: dict[str, ByteSize] = {"5": 5, "6": 6, "7": 7, "8": 8}
_PARITIES: dict[str, Parity] = {"N": "N", "E": "E", "O": "O", "M": "M", "S": "S"}

STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
_SPEEDS = {getattr(termios, f"B{rate}"): rate for rate in STANDARD_BAUDRATES}
_FRAMING = re.compile(r"^(?P<bytesize>[5-8])(?P<parity>[NEOMS])(?P<stopbits>1|1\.5|2)$")


@dataclass(frozen=True)
class LineSettings:
    baudrate: int
    bytesize: ByteSize = 8
    parity: Parity = "N"
    stopbits: float = 1

    @classmethod
    def of(cls, baudrate: int, framing: str) -> LineSettings:
        """`LineSettings.of(2400, "7E1")`; a clear ValueError for a framing like "7X1"."""
        match = _FRAMING.match(framing.upper())
        if match is None:
            raise ValueError(f"unknown framing {framing!r}: data bits, parity, stop bits, e.g. 7E1")
        bytesize, parity = _BYTESIZES[match["bytesize"]], _PARITIES[match["parity"]]
        return cls(baudrate, bytesize, parity, float(match["stopbits"]))

    @property
    def framing(self) -> str:
        return f"{self.bytesize}{self.parity}{self.stopbits:g}"

    def __str__(self) -> str:
        return f"{self.baudrate} {self.framing}"


def pty_shows(fd: int, settings: LineSettings) -> bool:
    """Whether the termios on a pty (set by whoever opened its slave) match `settings`, as far
    as a pty keeps them: the baud rate and odd parity."""
    attributes = termios.tcgetattr(fd)
    cflag, ospeed = attributes[2], attributes[5]
    odd = bool(cflag & termios.PARODD)
    return _SPEEDS.get(ospeed) == settings.baudrate and odd == (settings.parity in ("O", "M"))
