"""A serial line between two ptys, with the behaviour of a real cable: UART settings matter.

A bare pty pair ignores the baud rate: bytes pass at memory speed whatever both ends set,
so a host configured at the wrong baud would work on a pty and fail on site. `SerialWire`
puts a relay between two pty pairs, one end for each device (`host_path` for the daemon,
`device_path` for the simulated PLC), and reads the UART settings each end applied (on
Linux the master side of a pty reports the termios of its slave). Then, like a wire:

- bytes arrive after their time on the line at the sender's baud, one direction at a
  time (RS-485 is half duplex), so throughput and latency are those of the real line;
- when the two ends disagree on baud, parity, stop bits or data bits, the receiver gets
  garbage of the same length (what a UART at the wrong speed delivers), so Modbus CRC
  checks fail as they would on site.

Only POSIX (ptys); the ends stay open across reconnects of either device, so the paths are
stable for the wire's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import termios
import tty
from dataclasses import dataclass
from typing import Final

from sorter.addresses import SerialSettings

__all__ = ["SerialWire", "WireStats"]

_CFLAG: Final = 2
_OSPEED: Final = 5
_LINE_BITS: Final = termios.CSIZE | termios.PARENB | termios.PARODD | termios.CSTOPB
_SIZE_BITS: Final = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}
# termios speed codes (B115200 is 4098 on Linux) back to bits per second.
_SPEEDS: Final = {
    getattr(termios, name): int(name[1:])
    for name in dir(termios)
    if name.startswith("B") and name[1:].isdigit()
}
_READ_CHUNK: Final = 4096


@dataclass(slots=True)
class WireStats:
    bytes_to_device: int = 0
    bytes_to_host: int = 0
    garbled_bytes: int = 0  # delivered as garbage because the two ends' settings differ
    dropped_bytes: int = 0  # a receiver's buffer was full (nobody reading)


class _End:
    """One pty pair: the slave is the device node a program opens, the master is ours."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        # Raw at once: a cooked pty would echo our writes back before the program opens it.
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)

    def line(self) -> tuple[int, int]:
        """(speed code, framing bits) as the program on this end configured its UART."""
        attrs = termios.tcgetattr(self.master)
        return int(attrs[_OSPEED]), int(attrs[_CFLAG]) & _LINE_BITS

    def settings(self) -> SerialSettings:
        speed, bits = self.line()
        parity = "N" if not bits & termios.PARENB else "O" if bits & termios.PARODD else "E"
        return SerialSettings(
            baudrate=_SPEEDS.get(speed, 115200),
            parity=parity,
            stopbits=2 if bits & termios.CSTOPB else 1,
            bytesize=_SIZE_BITS.get(bits & termios.CSIZE, 8),
        )

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class SerialWire:
    """`async with SerialWire() as wire:` then open `wire.host_path` and `wire.device_path`."""

    def __init__(self, *, timing: bool = True, seed: int = 0) -> None:
        self.timing = timing
        self.stats = WireStats()
        self._rng = random.Random(seed)
        self._host: _End | None = None
        self._device: _End | None = None
        self._busy_until_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> SerialWire:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._host is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._host, self._device = _End(), _End()
        self._loop.add_reader(self._host.master, self._relay, self._host, self._device)
        self._loop.add_reader(self._device.master, self._relay, self._device, self._host)

    def close(self) -> None:
        """Close both ends; safe to call twice."""
        for end in (self._host, self._device):
            if end is not None and self._loop is not None:
                self._loop.remove_reader(end.master)
                end.close()
        self._host = self._device = None

    @property
    def host_path(self) -> str:
        """The device node the host (the daemon) opens."""
        if self._host is None:
            raise RuntimeError("serial wire is not open")
        return self._host.path

    @property
    def device_path(self) -> str:
        """The device node the simulated device opens."""
        if self._device is None:
            raise RuntimeError("serial wire is not open")
        return self._device.path

    def host_settings(self) -> SerialSettings:
        """The UART settings the host applied to its end (what it thinks the line is)."""
        if self._host is None:
            raise RuntimeError("serial wire is not open")
        return self._host.settings()

    def _relay(self, sender: _End, receiver: _End) -> None:
        try:
            data = os.read(sender.master, _READ_CHUNK)
        except OSError as exc:
            # EIO: no program holds the slave open. We hold it, so this is rare; skip.
            if exc.errno in (errno.EIO, errno.EAGAIN):
                return
            raise
        if not data:
            return
        if sender.line() != receiver.line():
            self.stats.garbled_bytes += len(data)
            data = self._rng.randbytes(len(data))
        if receiver is self._device:
            self.stats.bytes_to_device += len(data)
        else:
            self.stats.bytes_to_host += len(data)
        if not self.timing:
            self._deliver(receiver, data)
            return
        # Half duplex: a frame starts when the line is free and takes its bytes' time.
        assert self._loop is not None
        now = self._loop.time()
        start = max(now, self._busy_until_s)
        self._busy_until_s = start + len(data) * sender.settings().char_s
        self._loop.call_at(self._busy_until_s, self._deliver, receiver, data)

    def _deliver(self, receiver: _End, data: bytes) -> None:
        if receiver is not self._host and receiver is not self._device:
            return  # closed meanwhile
        try:
            written = os.write(receiver.master, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return
        self.stats.dropped_bytes += len(data) - written
