"""The register map of docs/interfaces.md section 3 against both implementations of it.

The daemon's table (drivers/registers.py) and the simulated PLC's own map
(simulators/plc_map.py, written from the document, importing nothing from drivers/) are
each held against the document's table, parsed from the markdown; and their slot codecs
against each other. A layout slip on either side, or in the document, fails here instead of
being agreed with by the other side of every end-to-end test.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers import registers as R  # noqa: N812  (R.X reads like the register map)
from simulators import plc_map as S  # noqa: N812  (the simulator's map, beside R)
from sorter.ports import ChuteFlag, Confirmation, Outcome, SortRequest

DOC = Path(__file__).resolve().parent.parent / "docs" / "interfaces.md"


@dataclass(frozen=True)
class DocRow:
    name: str  # "plc_heartbeat", "request_slot", "chute_status"
    address: int
    stride: int | None  # slot size of a block (`100 + 8*s`), None for one register
    writer: str
    meaning: str

    @property
    def fields(self) -> list[tuple[str, int]]:
        """A slot's fields from the meaning column: `tracking_id (2 regs)` takes two."""
        out = []
        for part in self.meaning.split(", "):
            name = part.split()[0]
            out.append((name, 2 if "(2 regs)" in part else 1))
        return out


def section_3() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## 3. PLC register map")
    return text[start : text.index("\n## 4.", start)]


def doc_rows() -> list[DocRow]:
    rows = []
    for line in section_3().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0][:1].isdigit():
            continue  # not a row of the table (its header, its rule, other text)
        address, name, writer, meaning = cells
        m = re.fullmatch(r"(\d+)(?: \+ (?:(\d+)\*)?[a-z])?", address)
        assert m, f"address {address!r} of {name!r} does not parse"
        block = "+" in address
        stride = int(m.group(2) or 1) if block else None
        # "request slot s" and "chute n status": drop the slot's index letter.
        words = [w for w in name.split() if not (block and len(w) == 1)]
        rows.append(DocRow("_".join(words), int(m.group(1)), stride, writer, meaning))
    return rows


ROWS = doc_rows()
BLOCKS = {"request_slot": S.REQUEST_RING, "reply_slot": S.REPLY_RING}
BLOCKS["confirmation_slot"] = S.CONFIRMATION_RING


def test_the_document_table_is_read_whole() -> None:
    names = [row.name for row in ROWS]
    assert len(names) == 13, names
    assert names[:2] == ["plc_heartbeat", "host_heartbeat"]
    assert names[-1] == "chute_status"


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_the_drivers_table_matches_the_document(row: DocRow) -> None:
    ours = R.register(row.name)
    assert ours.address == row.address
    assert ours.writer == row.writer
    if row.stride is None:
        assert ours.slots == 1
        assert ours.size == 1
        assert ours.meaning == row.meaning
    elif row.name == "chute_status":
        assert ours.size == row.stride == 1
        assert ours.slots == R.MAX_CHUTE + 1
    else:
        assert ours.size == row.stride
        assert list(ours.fields) == row.fields
        assert ours.slots == R.RING_SLOTS


def test_the_drivers_table_has_nothing_the_document_lacks() -> None:
    assert [r.name for r in R.REGISTERS] == [row.name for row in ROWS]


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.name)
def test_the_simulators_map_matches_the_document(row: DocRow) -> None:
    if row.stride is None:
        assert S.Header[row.name.upper()] == row.address
    elif row.name == "chute_status":
        assert (row.address, row.stride) == (S.CHUTE_STATUS, 1)
    else:
        block = BLOCKS[row.name]
        assert (block.base, block.words) == (row.address, row.stride)
        widths = [struct.calcsize(">" + c) // 2 for c in block.layout.lstrip(">")]
        assert widths == [width for _, width in row.fields]
        assert struct.calcsize(block.layout) == 2 * block.words


def test_ring_size_counter_wrap_and_interface_version() -> None:
    text = section_3()
    slots = int(re.search(r"Rings have (\d+) slots", text).group(1))  # type: ignore[union-attr]
    modulo = int(re.search(r"Counters wrap modulo (\d+)", text).group(1))  # type: ignore[union-attr]
    assert R.RING_SLOTS == S.RING_LENGTH == slots
    assert R.COUNTER_MOD == S.WRAP == modulo
    version = next(row for row in ROWS if row.name == "interface_version")
    assert R.INTERFACE_VERSION_V1 == S.SUPPORTED_VERSION == int(version.meaning)
    # The header read (registers 0..14) covers every single register of the table.
    singles = [row.address for row in ROWS if row.stride is None]
    assert max(singles) + 1 == R.HEADER_COUNT == len(S.HEADER)


def numbered(text: str) -> dict[int, str]:
    """`0 stopped, 1 running, ...` as {0: "stopped", 1: "running", ...}."""
    return {int(n): word for n, word in re.findall(r"(\d+) ([a-z][a-z ,/-]*?)(?:,|\.|$)", text)}


def test_plc_states_match_the_document() -> None:
    state = next(row for row in ROWS if row.name == "plc_state")
    words = numbered(state.meaning)
    assert words == {0: "stopped", 1: "running", 2: "fault", 3: "emergency stop"}
    for value, word in words.items():
        assert R.PlcState[word.upper().replace(" ", "_")] == value
        assert S.PlcStateValue[word.upper().replace(" ", "_")] == value


def test_chute_bits_match_the_document() -> None:
    chute = next(row for row in ROWS if row.name == "chute_status")
    bits = dict(re.findall(r"bit (\d) (\w+)", chute.meaning))
    assert {int(bit): word for bit, word in bits.items()} == {0: "full", 1: "disabled", 2: "fault"}
    for bit, word in bits.items():
        assert ChuteFlag[word.upper()] == 1 << int(bit)


def test_outcomes_match_the_document() -> None:
    m = re.search(r"Confirmation outcomes: (.*?)\. Identity", section_3(), re.S)
    assert m
    outcomes = dict(re.findall(r"(\d) ([^,]+)", " ".join(m.group(1).split())))
    assert sorted(int(n) for n in outcomes) == [o.value for o in Outcome]


def test_the_drivers_codec_puts_each_field_where_the_table_says() -> None:
    req = SortRequest(1, 0x00020003, 4, length_mm=5, width_mm=6, height_mm=7, weight_g=8)
    regs = R.encode_request(req)
    row = R.register("request_slot")
    assert len(regs) == row.size
    for name, value in [("seq", 1), ("induction", 4), ("length_mm", 5), ("weight_g", 8)]:
        assert regs[row.offset(name)] == value
    assert regs[row.offset("tracking_id") : row.offset("tracking_id") + 2] == [2, 3]
    conf = Confirmation(9, 0x000A000B, 12, Outcome.REJECT, 3)
    regs = R.encode_confirmation(conf)
    row = R.register("confirmation_slot")
    assert regs[row.offset("outcome")] == Outcome.REJECT
    assert regs[row.offset("recirculations")] == 3
    assert regs[row.offset("chute_actual")] == 12
    row = R.register("reply_slot")
    assert R.encode_reply(1, 2, 3)[row.offset("chute")] == 3


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@given(seq=u16, tracking_id=u32, sizes=st.lists(u16, min_size=5, max_size=5))
def test_both_request_codecs_agree(seq: int, tracking_id: int, sizes: list[int]) -> None:
    req = SortRequest(seq, tracking_id, *sizes)
    assert S.request_words(req) == R.encode_request(req)


@given(seq=u16, tracking_id=u32, chute=u16, outcome=st.sampled_from(Outcome), recirc=u16)
def test_both_confirmation_codecs_agree(
    seq: int, tracking_id: int, chute: int, outcome: Outcome, recirc: int
) -> None:
    conf = Confirmation(seq, tracking_id, chute, outcome, recirc)
    assert R.decode_confirmation(S.confirmation_words(conf)) == conf


@given(seq=u16, tracking_id=u32, chute=u16)
def test_both_reply_codecs_agree(seq: int, tracking_id: int, chute: int) -> None:
    assert S.reply_from_words(R.encode_reply(seq, tracking_id, chute)) == (seq, tracking_id, chute)
