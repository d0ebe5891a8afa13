"""A line as an outside tester builds it from the interface contract's sections 3 and 4
alone: a PLC that serves the register map over Modbus TCP (a minimal server written here
from the Modbus specification: functions 3, 6, 16 and 23), a scanner that listens and
sends `index` telegrams, and a mosquitto broker of its own."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import struct
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["Plc", "Scanner", "free_port", "mosquitto"]

REGISTERS = 2400  # up to the chute status of chute 399


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def mosquitto(folder: Path) -> AsyncIterator[int]:
    """A mosquitto broker on a free loopback port; yields the port."""
    program = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = await asyncio.create_subprocess_exec(
        program, "-c", str(conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield port
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


class Plc:
    """Holding registers of section 3, served over Modbus TCP; the test plays the PLC."""

    def __init__(self) -> None:
        self.registers = [0] * REGISTERS
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._beat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Plc:
        self.registers[2] = 1  # running
        self.registers[3] = 1  # interface version
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self._beat = asyncio.create_task(self._heartbeat())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        assert self._beat is not None
        self._beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._beat
        self._server.close()
        await self._server.wait_closed()

    async def _heartbeat(self) -> None:
        while True:
            self.registers[0] = (self.registers[0] + 1) % 65536
            await asyncio.sleep(0.1)

    def request(self, number: int, tracking_id: int) -> None:
        """Write sort request message `number` into its slot, then bump req_head."""
        slot = number % 64
        base = 100 + 8 * slot
        values = [number % 65536, tracking_id >> 16, tracking_id & 0xFFFF, 1, 0, 0, 0, 0]
        self.registers[base : base + 8] = values
        self.registers[10] = (number + 1) % 65536

    def confirm(
        self, number: int, seq: int, tracking_id: int, chute: int, outcome: int, recirc: int
    ) -> None:
        """Write confirmation message `number` into its slot, then bump conf_head."""
        base = 1000 + 6 * (number % 64)
        values = [seq % 65536, tracking_id >> 16, tracking_id & 0xFFFF, chute, outcome, recirc]
        self.registers[base : base + 6] = values
        self.registers[13] = (number + 1) % 65536

    def confirmed(self, number: int) -> bool:
        """Whether the daemon consumed confirmation `number` (conf_ack passed it)."""
        return (self.registers[14] - number - 1) % 65536 < 32768

    def replied(self, number: int) -> bool:
        return self.reply(number) is not None

    def reply(self, number: int) -> tuple[int, int, int] | None:
        """(seq, tracking_id, chute) of reply `number` once rep_head has passed it."""
        if (self.registers[12] - number - 1) % 65536 >= 32768:
            return None
        base = 700 + 4 * (number % 64)
        seq, high, low, chute = self.registers[base : base + 4]
        return seq, (high << 16) | low, chute

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(7)
                transaction, _, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                answer = self._pdu(pdu)
                writer.write(struct.pack(">HHHB", transaction, 0, len(answer) + 1, unit) + answer)
                await writer.drain()
        writer.close()

    def _read(self, function: int, start: int, count: int) -> bytes:
        values = self.registers[start : start + count]
        return struct.pack(f">BB{count}H", function, 2 * count, *values)

    def _pdu(self, pdu: bytes) -> bytes:
        function = pdu[0]
        if function == 3:
            start, count = struct.unpack(">HH", pdu[1:5])
            return self._read(3, start, count)
        if function == 6:
            address, value = struct.unpack(">HH", pdu[1:5])
            self.registers[address] = value
            return pdu[:5]
        if function == 16:
            start, count = struct.unpack(">HH", pdu[1:5])
            self.registers[start : start + count] = struct.unpack(f">{count}H", pdu[6:])
            return pdu[:5]
        if function == 23:
            read_start, read_count, write_start, write_count = struct.unpack(">HHHH", pdu[1:9])
            values = struct.unpack(f">{write_count}H", pdu[10 : 10 + 2 * write_count])
            self.registers[write_start : write_start + write_count] = values
            return self._read(23, read_start, read_count)
        return bytes([function | 0x80, 1])  # illegal function


class Scanner:
    """A fixed-mount scanner that listens (the daemon connects) and sends telegrams."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._clients: list[asyncio.StreamWriter] = []
        self.connected = asyncio.Event()

    async def __aenter__(self) -> Scanner:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *_: object) -> None:
        for client in self._clients:
            client.close()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.append(writer)
        self.connected.set()

    async def send(self, telegram: bytes) -> None:
        for client in self._clients:
            client.write(telegram)
            await client.drain()
