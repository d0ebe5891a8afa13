"""The minimal reference host: the floor of the PLC handshake at a given poll interval.

`python -m benchmarks.refhost URL --poll-ms 5 --chutes 1-60` connects to the PLC at URL
(`tcp://host:port` or `rtu:///dev/...?baudrate=...`, as `plc.url`) with pymodbus's plain
synchronous client and loops: read the header; when req_head moved, read the new request
slots, write one reply per request (a fixed chute per item: tracking id mod the chute
count, no decision, so that no chute fills and recirculates more than the daemon's would)
and then req_ack + rep_head in one write; ack new confirmations without reading them; bump
the host heartbeat every 250 ms (the PLC diverts only for a live host); sleep the poll
interval. No scanner, no plan, no journal, no MQTT: what is left of the daemon's cycle
is the Modbus round trips, so its latency at the PLC is the floor the daemon is held to.

Prints `ready` once it has read the header, then runs until SIGTERM/SIGINT; on exit prints
one JSON line of counters.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient

from drivers import registers as R  # noqa: N812  (R.X reads like the register map)
from sorter.addresses import parse_plc_url

__all__ = ["RefHost", "main"]

HEARTBEAT_INTERVAL_S = 0.25
_running = True


def _stop(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    global _running  # noqa: PLW0603 - the signal handler's one flag
    _running = False


class RefHost:
    def __init__(self, url: str, device_id: int, chutes: list[int]) -> None:
        ep = parse_plc_url(url)
        self.client: ModbusTcpClient | ModbusSerialClient
        if ep.kind == "tcp":
            framer = FramerType.RTU if ep.framer == "rtu" else FramerType.SOCKET
            self.client = ModbusTcpClient(ep.host, port=ep.port, framer=framer, timeout=2)
        else:
            s = ep.serial
            self.client = ModbusSerialClient(
                ep.device,
                framer=FramerType.RTU,
                baudrate=s.baudrate,
                parity=s.parity,
                stopbits=s.stopbits,
                bytesize=s.bytesize,
                timeout=2,
            )
        self.device_id = device_id
        self.chutes = chutes
        self.requests = 0
        self.cycles = 0

    def read(self, address: int, count: int) -> list[int]:
        rr = self.client.read_holding_registers(address, count=count, device_id=self.device_id)
        if rr.isError():
            raise RuntimeError(f"read {count} at {address}: {rr}")
        return list(rr.registers)

    def write(self, address: int, values: list[int]) -> None:
        rr = self.client.write_registers(address, values, device_id=self.device_id)
        if rr.isError():
            raise RuntimeError(f"write {len(values)} at {address}: {rr}")

    def run(self, poll_s: float) -> None:
        if not self.client.connect():
            raise RuntimeError("cannot connect to the PLC")
        header = self.read(0, R.HEADER_COUNT)
        req_ack, rep_head = header[R.REQ_ACK], header[R.REP_HEAD]
        conf_ack, beat = header[R.CONF_ACK], header[R.HOST_HEARTBEAT]
        print("ready", flush=True)
        next_beat = 0.0
        while _running:
            self.cycles += 1
            header = self.read(0, R.HEADER_COUNT)
            head = header[R.REQ_HEAD]
            n = min(R.counter_diff(head, req_ack), R.RING_SLOTS)
            if n:
                first = (head - n) % R.COUNTER_MOD
                replies: list[int] = []
                k = 0
                while k < n:  # up to 15 slots a read, never across the ring's end
                    s = R.slot(first + k)
                    m = min(n - k, R.RING_SLOTS - s, R.MAX_READ_REGS // R.REQUEST_SIZE)
                    regs = self.read(R.REQUEST_BASE + R.REQUEST_SIZE * s, R.REQUEST_SIZE * m)
                    for i in range(m):
                        seq, hi, lo = regs[i * R.REQUEST_SIZE : i * R.REQUEST_SIZE + 3]
                        tid = R.join32(hi, lo)
                        replies += R.encode_reply(seq, tid, self.chutes[tid % len(self.chutes)])
                    k += m
                k = 0
                while k < n:  # up to 30 replies a write, never across the ring's end
                    s = R.slot(rep_head + k)
                    m = min(n - k, R.RING_SLOTS - s, R.MAX_WRITE_REGS // R.REPLY_SIZE)
                    chunk = replies[k * R.REPLY_SIZE : (k + m) * R.REPLY_SIZE]
                    self.write(R.REPLY_BASE + R.REPLY_SIZE * s, chunk)
                    k += m
                req_ack = head
                rep_head = (rep_head + n) % R.COUNTER_MOD
                self.write(R.REQ_ACK, [req_ack, rep_head])
                self.requests += n
            if header[R.CONF_HEAD] != conf_ack:
                conf_ack = header[R.CONF_HEAD]
                self.write(R.CONF_ACK, [conf_ack])
            now = time.monotonic()
            if now >= next_beat:
                beat = (beat + 1) % R.COUNTER_MOD
                self.write(R.HOST_HEARTBEAT, [beat])
                next_beat = now + HEARTBEAT_INTERVAL_S
            time.sleep(poll_s)
        self.client.close()  # type: ignore[no-untyped-call]


def chute_list(spec: str) -> list[int]:
    """`1-60` or `1-10,40` -> the chutes, sorted."""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.refhost")
    parser.add_argument("url", help="the PLC, as plc.url")
    parser.add_argument("--poll-ms", type=float, default=5.0)
    parser.add_argument("--device-id", type=int, default=1)
    parser.add_argument("--chutes", default="1-60", help="chutes to answer, e.g. 1-60")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    host = RefHost(args.url, args.device_id, chute_list(args.chutes))
    host.run(args.poll_ms / 1000)
    print(json.dumps({"requests": host.requests, "cycles": host.cycles}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
