"""A manifest row as stored: the 32-byte key, the postcode's code, the other fields packed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "KEY_BYTES",
    "MAX_DEST_NAME_BYTES",
    "ManifestPart",
    "ManifestRow",
    "empty_part",
    "pack_fields",
    "unpack_row",
]

KEY_BYTES: Final = 32
MAX_DEST_NAME_BYTES: Final = 64


class ManifestRow(NamedTuple):
    postcode: int  # sorter.postcode's code; NO_POSTCODE (-1) none, UNUSABLE_POSTCODE (-2)
    postcode_digits: int  # its length when all digits, else 0
    country: int  # destination country, 0..675 two-letter index, -1 none
    service: int
    destination: int  # index into the plan's destinations at load, -1 none
    customs_hold: bool
    origin: int  # where the item was posted, two-letter index, -1 none


@dataclass(slots=True)
class ManifestPart:
    """Parsed rows: the key, the postcode's code, and the other fields packed in 64 bits
    (country+1: 10 bits, service+1: 10, destination+1: 16, postcode digits: 5, customs
    hold: 1, origin+1: 10), so that a lookup reads two words and a row costs 48 bytes."""

    keys: npt.NDArray[np.uint8]  # (n, 32), zero padded
    postcode: npt.NDArray[np.int64]
    packed: npt.NDArray[np.int64]

    @property
    def rows(self) -> int:
        return int(self.keys.shape[0])


def pack_fields(
    pc_digits: npt.NDArray[Any],
    country: npt.NDArray[Any],
    service: npt.NDArray[Any],
    dest: npt.NDArray[Any],
    customs: npt.NDArray[Any],
    origin: npt.NDArray[Any],
) -> npt.NDArray[np.int64]:
    i64 = np.int64
    return (
        (country.astype(i64) + 1)
        | (service.astype(i64) + 1) << 10
        | (dest.astype(i64) + 1) << 20
        | pc_digits.astype(i64) << 36
        | customs.astype(i64) << 41
        | (origin.astype(i64) + 1) << 42
    )


def unpack_row(postcode: int, packed: int) -> ManifestRow:
    return ManifestRow(
        postcode,
        (packed >> 36) & 31,
        (packed & 1023) - 1,
        ((packed >> 10) & 1023) - 1,
        ((packed >> 20) & 0xFFFF) - 1,
        bool((packed >> 41) & 1),
        ((packed >> 42) & 1023) - 1,
    )


def empty_part() -> ManifestPart:
    return ManifestPart(
        np.zeros((0, KEY_BYTES), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    )
