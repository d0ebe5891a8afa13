"""Realistic parcel traffic for a Casablanca cross-border hub, reproducible with a seed.

Each item carries the codes a scan tunnel would read off it: mostly inbound parcels from
China with an S10 code and a GS1-128 label with a Moroccan postcode, plus EMS and
registered mail, carrier export parcels (UPS, DHL), Cainiao first-mile codes, and the
troubles of real tunnels: no-reads, damaged codes, unreadable foreign labels, and parcels
carrying two carriers' labels. The mix is a table so tests and benchmarks can reweight it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from simulators.conveyor import SimItem
from simulators.labels import (
    damage,
    make_dhl,
    make_gs1_label,
    make_lp,
    make_s10,
    make_sscc,
    make_ups,
    moroccan_postcode,
)

__all__ = ["DEFAULT_MIX", "Traffic"]

# Share of each kind of parcel; the names are what `SimItem.expected_reason`-style checks
# and the demo summary show.
DEFAULT_MIX: Mapping[str, float] = MappingProxyType(
    {
        "s10+gs1": 0.42,  # inbound from China: S10 tracking code plus a postcode label
        "gs1": 0.12,  # SSCC with AI 420 postcode only
        "ems": 0.08,  # EMS from abroad, no postcode label
        "registered": 0.07,
        "ups": 0.06,
        "dhl": 0.05,
        "lp": 0.06,
        "noread": 0.04,
        "damaged": 0.03,
        "unknown": 0.03,  # a code no rule knows
        "conflict": 0.02,  # two carriers' labels on one parcel
        "agreeing": 0.02,  # two registered-mail codes: different codes, same destination
    }
)


@dataclass(frozen=True, slots=True)
class Traffic:
    """An endless, seeded stream of items."""

    seed: int = 1
    mix: Mapping[str, float] = field(default_factory=lambda: DEFAULT_MIX)

    def items(self, count: int | None = None) -> Iterator[SimItem]:
        rng = random.Random(self.seed)
        kinds = list(self.mix)
        weights = [self.mix[k] for k in kinds]
        n = 0
        while count is None or n < count:
            kind = rng.choices(kinds, weights=weights)[0]
            yield self.make(rng, kind)
            n += 1

    @staticmethod
    def make(rng: random.Random, kind: str) -> SimItem:
        codes = _codes(rng, kind)
        length_mm = rng.randint(150, 800)
        return SimItem(
            codes=codes,
            expected_reason=kind,
            length_mm=length_mm,
            width_mm=rng.randint(100, min(length_mm, 600)),
            height_mm=rng.randint(20, 500),
            weight_g=min(int(rng.lognormvariate(6.5, 0.9)), 65_535),
        )


def _s10_and_gs1(rng: random.Random) -> tuple[str, ...]:
    codes = [
        make_s10(rng, service=rng.choice(("LX", "UA", "CP"))),
        make_gs1_label(rng, moroccan_postcode(rng)),
    ]
    rng.shuffle(codes)  # tunnels report codes in the order the heads saw them
    return tuple(codes)


def _unknown(rng: random.Random) -> tuple[str, ...]:
    return ("X" + "".join(rng.choice("ABCDEFGH0123456789") for _ in range(11)),)


# The codes of each kind of parcel in DEFAULT_MIX, drawn from the item's random stream.
_KINDS: Mapping[str, Callable[[random.Random], tuple[str, ...]]] = MappingProxyType(
    {
        "s10+gs1": _s10_and_gs1,
        "gs1": lambda rng: (make_gs1_label(rng, moroccan_postcode(rng), make_sscc(rng)),),
        "ems": lambda rng: (make_s10(rng, service=rng.choice(("EE", "EA", "EM"))),),
        "registered": lambda rng: (make_s10(rng, service=rng.choice(("RB", "RR", "RC"))),),
        "ups": lambda rng: (make_ups(rng),),
        "dhl": lambda rng: (make_dhl(rng),),
        "lp": lambda rng: (make_lp(rng),),
        "noread": lambda rng: (),
        "damaged": lambda rng: (damage(rng, make_s10(rng)),),
        "unknown": _unknown,
        "conflict": lambda rng: (make_ups(rng), make_dhl(rng)),
        "agreeing": lambda rng: (make_s10(rng, service="RB"), make_s10(rng, service="RR")),
    }
)


def _codes(rng: random.Random, kind: str) -> tuple[str, ...]:
    make = _KINDS.get(kind)
    if make is None:
        raise ValueError(f"unknown traffic kind {kind!r}")
    return make(rng)
