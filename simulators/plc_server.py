"""The simulated PLC's Modbus front: its register memory served by a real pymodbus server.

Modbus TCP, RTU framing over TCP (as serial gateways do), or Modbus RTU on a serial line:
a real device, or a `SerialWire` pty pair that behaves like a cable (baud rate timing,
garbage on mismatched settings). `simulators.plc.PlcSimulator` is one: its PLC program reads
and writes the memory through `_get` and `_set`; the host reaches it over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Self

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.plc_map import MEMORY_WORDS
from simulators.serial_wire import SerialWire
from sorter.addresses import SerialSettings

__all__ = ["PlcServe", "RegisterServer"]

_READ_HOLDING: Final = 3
_WRITE_MULTIPLE: Final = 16


@dataclass(frozen=True, slots=True)
class PlcServe:
    """How the simulated PLC is reached.

    - `tcp`: Modbus TCP on `host:port` (the default);
    - `tcp-rtu`: RTU frames over TCP on `host:port`, as a serial-to-Ethernet gateway;
    - `rtu-pty`: Modbus RTU on a `SerialWire`: the host opens `PlcSimulator.serial_path`;
      `wire_timing` makes bytes take their time at the PLC's baud rate;
    - `rtu`: Modbus RTU on the serial device `device` (a real RS-485 adapter).

    `serial` is the PLC's UART: the host has to match it.
    """

    kind: Literal["tcp", "tcp-rtu", "rtu-pty", "rtu"] = "tcp"
    device: str = ""
    serial: SerialSettings = field(default_factory=SerialSettings)
    wire_timing: bool = True

    def __post_init__(self) -> None:
        if self.kind == "rtu" and not self.device:
            raise ValueError("PlcServe(kind='rtu') needs a serial device")


class RegisterServer:
    """Holding registers on a pymodbus server; the base of a simulated Modbus device.

    `start()` serves, `stop()` stops serving and keeps the memory (a device that was
    unreachable for a while), `close()` also closes the serial wire. A device overrides the
    hooks: `_started(fresh)` (fresh: first start, memory all zero), `_stopping()`,
    `_host_wrote()` (the host wrote one of `watched`, or a test wrote registers directly)
    and `_refused()` (fault injection refused a host write).
    """

    def __init__(
        self, *, host: str, port: int, device_id: int, serve: PlcServe, watched: Collection[int]
    ) -> None:
        self._host = host
        self._requested_port = port
        self.device_id = device_id
        self.serve = serve
        self._watched = frozenset(watched)
        self._wire: SerialWire | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._port = 0
        self._memory: list[int] | None = None  # registers kept across stop() and start()
        self._refuse: dict[int, int] = {}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Serve, then `_started`; nothing when already serving."""
        if self.running:
            return
        await self._started(await self._serve())

    async def stop(self) -> None:
        """`_stopping`, then stop serving and keep the memory; safe to call twice."""
        await self._stopping()
        await self._unserve()

    async def close(self) -> None:
        """stop(), and close the serial wire (its pty paths go away); safe to call twice."""
        await self.stop()
        self._close_wire()

    async def set_serial(self, serial: SerialSettings) -> None:
        """Reconfigure the serial port, as on the device's settings page: the port is
        reopened (registers kept, like a stop() and start()) when the device is running."""
        running = self.running
        if running:
            await self.stop()
        self.serve = replace(self.serve, serial=serial)
        if running:
            await self.start()

    async def _started(self, fresh: bool) -> None:
        """Serving; `fresh` when the memory is new (first start)."""

    async def _stopping(self) -> None:
        """About to stop serving."""

    def _host_wrote(self) -> None:
        """The host wrote a watched register."""

    def _refused(self) -> None:
        """A host write was refused (`refuse_writes`)."""

    @property
    def running(self) -> bool:
        return self._server is not None

    async def _serve(self) -> bool:
        """Serve; True when the memory is fresh (first start), False when it is the memory
        the server had at `stop()` (a PLC that was unreachable, not one that lost it)."""
        memory, self._memory = self._memory, None
        data = SimData(0, count=1, values=memory or [0] * MEMORY_WORDS, datatype=DataType.REGISTERS)
        device = SimDevice(self.device_id, [data], action=self._on_access)
        if self.serve.kind in ("tcp", "tcp-rtu"):
            await self._listen_tcp(device)
        else:
            await self._open_serial(device)
        return memory is None

    async def _listen_tcp(self, device: SimDevice) -> None:
        framer = FramerType.RTU if self.serve.kind == "tcp-rtu" else FramerType.SOCKET
        server = ModbusTcpServer(device, address=(self._host, self._requested_port), framer=framer)
        if not await server.listen():
            raise OSError(f"PLC simulator cannot listen on {self._host}:{self._requested_port}")
        self._server = server
        listener = server.transport
        if not isinstance(listener, asyncio.AbstractServer):
            raise TypeError("pymodbus TCP server did not create an asyncio server")
        self._listener = listener
        self._port = _bound_port(listener, self._requested_port)

    async def _open_serial(self, device: SimDevice) -> None:
        serial = self.serve.serial
        if self.serve.kind == "rtu-pty":
            # The wire outlives stop()/start(): a PLC restart does not move the host's
            # device node, and the daemon's plc.url must stay right.
            if self._wire is None:
                self._wire = SerialWire(timing=self.serve.wire_timing)
                self._wire.open()
            path = self._wire.device_path
        else:
            path = self.serve.device
        server = ModbusSerialServer(
            device,
            framer=FramerType.RTU,
            port=path,
            baudrate=serial.baudrate,
            parity=serial.parity,
            stopbits=serial.stopbits,
            bytesize=serial.bytesize,
        )
        if not await server.listen():
            hint = ""
            if self.serve.kind == "rtu-pty" and serial.parity != "N":
                hint = " (some kernels refuse parity on ptys: use parity N on a pty)"
            raise OSError(
                f"PLC simulator cannot open serial device {path} as {serial.describe()}{hint}"
            )
        self._server = server

    async def _unserve(self) -> None:
        """Stop serving and keep the memory; safe to call twice."""
        if self._server is not None:
            self._memory = await self._get(0, MEMORY_WORDS)
        server, self._server = self._server, None
        listener, self._listener = self._listener, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
        if listener is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await listener.wait_closed()
        # pymodbus answers each request in its own short task; let those finish.
        for _ in range(3):
            await asyncio.sleep(0)

    def _close_wire(self) -> None:
        """Close the serial wire (its pty paths go away); safe to call twice."""
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.close()

    @property
    def port(self) -> int:
        """The bound TCP port (useful with port=0); 0 on a serial line."""
        return self._port

    @property
    def wire(self) -> SerialWire | None:
        """The pty wire of `rtu-pty` (its stats count garbled bytes), once started."""
        return self._wire

    @property
    def serial_path(self) -> str:
        """The device node the host opens (`rtu-pty`), or the PLC's own device (`rtu`)."""
        if self.serve.kind == "rtu-pty":
            if self._wire is None:
                raise RuntimeError("PLC simulator is not started")
            return self._wire.host_path
        return self.serve.device

    @property
    def url(self) -> str:
        """What a host puts in `plc.url` to reach this PLC (for `rtu`, with the PLC's
        device: the host's own device node is at the other end of the cable)."""
        kind = self.serve.kind
        if kind == "tcp":
            return f"tcp://{self._host}:{self._port}"
        if kind == "tcp-rtu":
            return f"tcp://{self._host}:{self._port}?framer=rtu"
        return f"rtu://{self.serial_path}?{self.serve.serial.query()}"

    def refuse_writes(self, address: int, times: int = 1) -> None:
        """Answer the next `times` host writes that touch `address` with a Modbus exception
        (device failure), without applying them: a write lost between host and device."""
        self._refuse[address] = self._refuse.get(address, 0) + times

    async def read_registers(self, address: int, count: int) -> list[int]:
        """Read the server's registers directly (no Modbus round trip)."""
        return await self._get(address, count)

    async def write_registers(self, address: int, values: list[int]) -> None:
        """Write registers directly, as if a Modbus client had (calls `_host_wrote`)."""
        await self._set(address, values)
        self._host_wrote()

    def _server_or_raise(self) -> ModbusTcpServer | ModbusSerialServer:
        if self._server is None:
            raise RuntimeError("PLC simulator is not started")
        return self._server

    async def _get(self, address: int, count: int) -> list[int]:
        values = await self._server_or_raise().async_getValues(
            self.device_id, _READ_HOLDING, address, count
        )
        return [int(v) for v in values]

    async def _set(self, address: int, values: list[int]) -> None:
        await self._server_or_raise().async_setValues(
            self.device_id, _WRITE_MULTIPLE, address, values
        )

    async def _on_access(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Server hook: refuse a write that fault injection asked to refuse; tell the PLC
        when the host writes a watched register."""
        del function_code, start_address, current_registers
        if set_values is None:
            return None
        if self._refuse:
            for reg in range(address, address + count):
                if self._refuse.get(reg, 0) > 0:
                    self._refuse[reg] -= 1
                    self._refused()
                    return ExcCodes.DEVICE_FAILURE  # not applied
        if any(address <= reg < address + count for reg in self._watched):
            self._host_wrote()
        return None


def _bound_port(listener: asyncio.AbstractServer, requested: int) -> int:
    sockets = getattr(listener, "sockets", None)
    if sockets:
        name = sockets[0].getsockname()
        return int(name[1])
    return requested
