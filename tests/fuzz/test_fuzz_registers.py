"""Modbus register blocks from the PLC, with arbitrary contents; and the PLC URL.

A PLC (or a gateway in between) can put any 16-bit value anywhere. Decoding a request or
reply never fails; a confirmation fails only with RegisterError; what decodes encodes back
to the same registers. The ring arithmetic keeps every counter pair within one ring.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from drivers import registers as regs_map
from drivers.plc import parse_plc_url
from tests.fuzz.profile import fuzz

word = st.integers(min_value=0, max_value=0xFFFF)


def block(n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(word, min_size=n, max_size=n)


@fuzz()
@given(regs=block(regs_map.REQUEST_SIZE))
def test_request_decodes_and_round_trips(regs: list[int]) -> None:
    req = regs_map.decode_request(regs, 7)
    assert 0 <= req.tracking_id < 1 << 32
    assert req.received_ns == 7
    assert regs_map.encode_request(req) == regs


@fuzz()
@given(regs=block(regs_map.REPLY_SIZE))
def test_reply_decodes_and_round_trips(regs: list[int]) -> None:
    seq, tracking_id, chute = regs_map.decode_reply(regs)
    assert regs_map.encode_reply(seq, tracking_id, chute) == regs


@fuzz()
@given(regs=block(regs_map.CONF_SIZE))
@example(regs=[0, 0, 0, 0, 0, 0])
@example(regs=[0, 0, 0, 0, 0xFFFF, 0])
def test_confirmation_decodes_or_raises_register_error(regs: list[int]) -> None:
    try:
        conf = regs_map.decode_confirmation(regs)
    except regs_map.RegisterError as exc:
        reason = str(exc)
    else:
        reason = ""
    if reason:
        assert "outcome" in reason
        assert regs[4] not in range(1, 8)
        return
    assert regs_map.encode_confirmation(conf) == regs


@fuzz()
@given(head=word, ack=word)
def test_ring_arithmetic(head: int, ack: int) -> None:
    n = regs_map.counter_diff(head, ack)
    assert 0 <= n < regs_map.COUNTER_MOD
    assert (ack + n) % regs_map.COUNTER_MOD == head
    assert 0 <= regs_map.slot(head) < regs_map.RING_SLOTS
    joined = regs_map.join32(head, ack)
    assert regs_map.join32(*regs_map.split32(joined)) == joined


@fuzz()
@given(url=st.one_of(st.text(max_size=80), st.from_regex(r"\A(tcp|rtu)://[^\s]{0,40}\Z")))
@example(url="rtu:///dev/ttyUSB0?baudrate=x")
@example(url="tcp://[::1")
@example(url="tcp://host:99999")
def test_plc_url_parses_or_raises_value_error(url: str) -> None:
    try:
        endpoint = parse_plc_url(url)
    except ValueError:
        return  # the config check turns it into a Problem naming plc.url
    assert endpoint.kind in ("tcp", "rtu")
