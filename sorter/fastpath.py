"""The live decision's fast path: from the codes as read to the kernel's features in one
numba call, for the label forms a hub's traffic is made of.

`Decider.decide` runs for every item on the event loop; in Python, classifying the codes
(sorter.barcodes), resolving a multi-read and building the features cost 10-35 us an item.
This module does the same work in numba for the common forms and answers FALLBACK for
anything else, which the Python path then decides as it always has. sorter/barcodes.py,
sorter/postcode.py, sorter/manifest and the Decider's Python path stay the definition;
tests/test_fastpath.py holds this module equal to them, item by item (Choice, barcode,
source, reason, counters).

What it decides itself:
- 0 to MAX_CODES codes of printable ASCII (GS aside): S10 (check digit and ISO 3166-1
  suffix), UPS (check digit), DHL (mod 7), LP, unknown codes, AIM identifiers (GS1 ones
  and others), GS1 element strings after `]C1` `]d2` `]Q3` `]e0` `]J1` or a leading GS,
  bare digits, the human-readable form; the GS1 fields the Python fast path reads (AI 00,
  420, 421, 401, 403: SSCC check digit, ISO numeric 421 country), valid or not, and the
  invalid forms whose barcode needs no parser (a character outside the GS1 set, an HRI
  string that breaks its grammar);
- the postcode of a ship-to label, normalised and encoded as sorter.postcode does;
- the pre-advice lookups through the manifest's numba index (files, and the feed delta
  when none of the item's codes waits in its newest entries);
- the naming code, the ship-to labels, the multi-read candidates and their conflicts.

What it leaves to Python (FALLBACK): anything biip parses (other AIs, a second SSCC,
values out of the simple forms), non-ASCII codes, more than MAX_CODES codes, codes longer
than MAX_CODE_BYTES. Plans with barcode regular expressions: the rule match is first
tried with every regex condition taken as true; when the first rule that matches then
has no regex condition, the mask cannot change the result and none is needed; else
(NEED_MASK) the caller computes the item's regex masks in Python and calls again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from sorter.barcodes import _GS1_CHARS, _HRI_VALUE
from sorter.countries import ISO_ALPHA2, iso_numeric_to_alpha2
from sorter.fastpath_entry import compiled_entry
from sorter.kernel import match_destination, pack_plan
from sorter.manifest.delta import find_live
from sorter.plan import ALPHA2, CompiledPlan, letters_index
from sorter.ports import Reason
from sorter.postcode import MAX_POSTCODE_CHARS, NO_POSTCODE, UNUSABLE_POSTCODE

__all__ = [
    "FALLBACK",
    "MAX_CODES",
    "MAX_CODE_BYTES",
    "NEED_MASK",
    "OK",
    "FastFeatures",
    "Out",
    "fast_features",
    "new_scratch",
    "plan_arrays",
    "signed_mask",
]

OK: Final = 0
FALLBACK: Final = 1
NEED_MASK: Final = 2

MAX_CODES: Final = 3  # more codes on one item are rare: Python resolves them
MAX_CODE_BYTES: Final = 200  # no parcel label is longer; a longer read is left to Python

# Label fields, one row per code in the `labs` scratch array.
(
    KIND,
    VALID,
    BC_S,  # the barcode's span in the joined codes (BC_S == BC_E: "")
    BC_E,
    SERVICE,
    ORIGIN,
    COUNTRY,  # AI 421's country, -1 for AI 420 (the site's)
    SHIP_TO,
    PC,
    PC_DIGITS,
    RAW_S,
    RAW_E,
    PC_S,  # the ship-to postcode's span (PC and PC_DIGITS are worked out from it)
    PC_E,
    N_FIELDS,
) = range(15)

# The kinds as sorter.barcodes.CodeKind numbers them.
_UNKNOWN, _S10, _GS1, _UPS, _DHL, _LP = 0, 1, 2, 3, 4, 5
_GS: Final = 0x1D

# consts: reference tables, one int64 array (numba caches functions, not globals' values).
_ISO2: Final = 0  # 676: 1 for an officially assigned alpha-2 code
_NUMERIC: Final = _ISO2 + ALPHA2  # 1000: ISO numeric -> alpha-2 index, -1 unassigned
_GS1_SET: Final = _NUMERIC + 1000  # 128: 1 for the GS1 character set and GS
_HRI_SET: Final = _GS1_SET + 128  # 128: 1 for a character of an HRI value
_N_CONSTS: Final = _HRI_SET + 128

# fp (per plan): number of destinations, of rules, whether any rule has a regex; then each
# rule's destination and regex bit (-1 none).
_FP_DESTS, _FP_RULES, _FP_REGEX, _FP_HEAD = 0, 1, 2, 3

_OK_REASON = int(Reason.OK)
_NO_READ = int(Reason.NO_READ)
_INVALID = int(Reason.INVALID_CODE)
_CONFLICT = int(Reason.MULTI_READ_CONFLICT)
_HOLD = int(Reason.CUSTOMS_HOLD)

# sorter.feeds.LiveManifest: a found entry that only carries a customs release is no row.
_NO_ROW = 1 << 55
_HOLD_BIT = 1 << 41
_RELEASED_ONLY = _NO_ROW | _HOLD_BIT
_BITS = 6

_F = TypeVar("_F", bound=Callable[..., Any])


def _fast(fn: _F) -> _F:
    # As sorter.kernel's kernels: cached, no runtime (nothing here allocates), no Python
    # exceptions for integer division.
    dispatcher = njit(  # type: ignore[call-overload]  # _nrt is not in numba's stubs
        fn, cache=True, nogil=True, _nrt=False, error_model="numpy"
    )
    return cast(_F, dispatcher)


def _table(test: Callable[[str], bool]) -> list[int]:
    return [1 if test(chr(b)) else 0 for b in range(128)]


def _consts() -> npt.NDArray[np.int64]:
    out = np.zeros(_N_CONSTS, np.int64)
    for code in ISO_ALPHA2:
        out[_ISO2 + letters_index(code)] = 1
    for numeric in range(1000):
        alpha2 = iso_numeric_to_alpha2(f"{numeric:03d}")
        out[_NUMERIC + numeric] = letters_index(alpha2) if alpha2 else -1
    out[_GS1_SET : _GS1_SET + 128] = _table(lambda c: c in _GS1_CHARS)
    value = re.compile(_HRI_VALUE)
    out[_HRI_SET : _HRI_SET + 128] = _table(lambda c: value.fullmatch(c) is not None)
    return out


CONSTS: Final = _consts()


def new_scratch() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(labs, work): the scratch arrays one FastFeatures writes into."""
    return np.zeros((MAX_CODES, N_FIELDS), np.int64), np.zeros(_W_SIZE, np.int64)


def plan_arrays(plan: CompiledPlan) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(idx_blob, fp): the kernel's plan blob with each rule's destination replaced by the
    rule's own index (match_destination then names the first rule that matches, not its
    destination), and the rules' destinations and regex bits."""
    n_rules = int(plan.rule_dest.shape[0])
    idx_blob, _ = pack_plan(replace(plan, rule_dest=np.arange(n_rules, dtype=np.int32)))
    fp = np.zeros(_FP_HEAD + 2 * n_rules, np.int64)
    fp[_FP_DESTS] = len(plan.plan.destinations)
    fp[_FP_RULES] = n_rules
    fp[_FP_REGEX] = 1 if plan.plan.regexes else 0
    fp[_FP_HEAD : _FP_HEAD + n_rules] = plan.rule_dest
    fp[_FP_HEAD + n_rules :] = plan.rule_regex_bit[:n_rules]
    return idx_blob, fp


# --- characters ------------------------------------------------------------------------


@_fast
def _digit(b: int) -> bool:
    return 48 <= b <= 57


@_fast
def _upper(b: int) -> bool:
    return 65 <= b <= 90


@_fast
def _letter(b: int) -> bool:
    return 65 <= b <= 90 or 97 <= b <= 122


@_fast
def _all_digits(data: Any, s: int, e: int) -> bool:
    for i in range(s, e):  # noqa: SIM110  (numba compiles the loop, not all())
        if not _digit(data[i]):
            return False
    return True


@_fast
def _number(data: Any, s: int, e: int) -> int:
    v = 0
    for i in range(s, e):
        v = v * 10 + data[i] - 48
    return v


@_fast
def _letters(b0: int, b1: int) -> int:
    return (b0 - 65) * 26 + (b1 - 65)


@_fast
def _aim(data: Any, s: int, e: int) -> bool:
    """A leading AIM symbology identifier: `]`, a letter, a letter or digit."""
    if e - s < 3 or data[s] != 93 or not _letter(data[s + 1]):
        return False
    return _letter(data[s + 2]) or _digit(data[s + 2])


@_fast
def _gs1_aim(data: Any, s: int) -> bool:
    """`]C1`, `]d2`, `]Q3`, `]J1`, `]e0` (the identifier already checked)."""
    a, b = int(data[s + 1]), int(data[s + 2])
    return bool(
        (a == 67 and b == 49)  # C1
        or (a == 100 and b == 50)  # d2
        or (a == 81 and b == 51)  # Q3
        or (a == 74 and b == 49)  # J1
        or (a == 101 and b == 48)  # e0
    )


# --- check digits ----------------------------------------------------------------------


@_fast
def _s10_check(data: Any, s: int) -> int:
    total = (
        8 * (data[s] - 48) + 6 * (data[s + 1] - 48) + 4 * (data[s + 2] - 48)
        + 2 * (data[s + 3] - 48) + 3 * (data[s + 4] - 48) + 5 * (data[s + 5] - 48)
        + 9 * (data[s + 6] - 48) + 7 * (data[s + 7] - 48)
    )  # fmt: skip
    check = 11 - total % 11
    if check == 10:
        return 0
    if check == 11:
        return 5
    return int(check)


@_fast
def _gs1_check(data: Any, s: int, e: int) -> int:
    """GS1 mod 10 of the digits s..e-1 (weights 3, 1, ... from the right)."""
    total = 0
    weight = 3
    for i in range(e - 1, s - 1, -1):
        total += weight * (data[i] - 48)
        weight = 4 - weight
    return (10 - total % 10) % 10


@_fast
def _ups_value(b: int) -> int:
    return b - 48 if _digit(b) else (b - 63) % 10


@_fast
def _ups_check(data: Any, s: int) -> int:
    """The check digit of the 15 characters at s (sorter.barcodes.ups_check_digit)."""
    total = 0
    for k in range(15):
        v = _ups_value(data[s + k])
        total += v * 2 if k % 2 == 1 else v
    return (10 - total % 10) % 10


# --- labels ----------------------------------------------------------------------------


@_fast
def _put(labs: Any, k: int, kind: int, valid: bool, bs: int, be: int) -> None:
    labs[k, KIND] = kind
    labs[k, VALID] = 1 if valid else 0
    labs[k, BC_S] = bs
    labs[k, BC_E] = be
    labs[k, SERVICE] = -1
    labs[k, ORIGIN] = -1
    labs[k, COUNTRY] = -1
    labs[k, SHIP_TO] = 0
    labs[k, PC] = NO_POSTCODE
    labs[k, PC_DIGITS] = 0


@_fast
def _s10(data: Any, s: int, e: int, consts: Any, labs: Any, k: int) -> bool:
    """`AA999999999AA` at s..e: an S10 label (valid or not); False when it is not one."""
    if e - s != 13 or not (_upper(data[s]) and _upper(data[s + 1])):
        return False
    if not (_all_digits(data, s + 2, s + 11) and _upper(data[s + 11]) and _upper(data[s + 12])):
        return False
    origin = _letters(data[s + 11], data[s + 12])
    valid = _s10_check(data, s + 2) == data[s + 10] - 48 and consts[_ISO2 + origin] == 1
    _put(labs, k, _S10, valid, s, e)
    labs[k, SERVICE] = _letters(data[s], data[s + 1])
    labs[k, ORIGIN] = origin
    return True


@_fast
def _carrier(data: Any, s: int, e: int, consts: Any, labs: Any, k: int) -> bool:
    """The carrier formats (sorter.barcodes._classify_carrier) on s..e."""
    n = e - s
    if _s10(data, s, e, consts, labs, k):
        return True
    if n == 18 and data[s] == 49 and data[s + 1] == 90:  # 1Z
        for i in range(s + 2, e):
            if not (_digit(data[i]) or _upper(data[i])):
                return False
        _put(labs, k, _UPS, _ups_check(data, s + 2) == data[e - 1] - 48, s, e)
        return True
    if n == 10 and _all_digits(data, s, e):
        if _number(data, s, s + 9) % 7 == data[s + 9] - 48:
            _put(labs, k, _DHL, True, s, e)
            return True
        return False
    if 14 <= n <= 16 and data[s] == 76 and data[s + 1] == 80 and _all_digits(data, s + 2, e):
        _put(labs, k, _LP, True, s, e)
        return True
    return False


@_fast
def _sscc_as_read(data: Any, s: int, e: int) -> tuple[int, int]:
    """sorter.barcodes._sscc_as_read: the leading SSCC of a label as read, (i, i) none."""
    i = s
    if _aim(data, i, e):
        i += 3
    if i < e and data[i] == _GS:
        i += 1
    if e - i >= 2 and data[i] == 48 and data[i + 1] == 48:
        i += 2
    elif e - i >= 4 and data[i] == 40 and data[i + 1] == 48 and data[i + 2] == 48:
        if data[i + 3] != 41:
            return s, s
        i += 4
    else:
        return s, s
    if e - i >= 18 and _all_digits(data, i, i + 18):
        return i, i + 18
    return s, s


@_fast
def _field(
    data: Any, ai: int, ai_len: int, vs: int, ve: int, consts: Any, labs: Any, k: int
) -> bool:
    """One field of a GS1 label into row k (sorter.barcodes._fast_label); False to decline
    (biip decides). The row's VALID is cleared by a wrong check digit or country."""
    n = ve - vs
    if ai_len == 2 and ai == 0:
        if labs[k, BC_S] >= 0 or n != 18 or not _all_digits(data, vs, ve):
            return False
        if _gs1_check(data, vs, vs + 17) != data[vs + 17] - 48:
            labs[k, VALID] = 0
        labs[k, BC_S] = vs
        labs[k, BC_E] = ve
        return True
    if ai_len != 3 or n <= 0:
        return False
    if ai == 421:
        if n > 12 or n < 4 or not _all_digits(data, vs, vs + 3):
            return False
        alpha2 = consts[_NUMERIC + _number(data, vs, vs + 3)]
        if alpha2 < 0:
            labs[k, VALID] = 0
        if labs[k, SHIP_TO] == 0:
            labs[k, SHIP_TO] = 1
            labs[k, COUNTRY] = alpha2
            labs[k, PC_S], labs[k, PC_E] = vs + 3, ve
        return True
    if ai == 420:
        if n > 20:
            return False
        if labs[k, SHIP_TO] == 0:
            labs[k, SHIP_TO] = 1
            labs[k, COUNTRY] = -1
            labs[k, PC_S], labs[k, PC_E] = vs, ve
        return True
    return (ai == 401 or ai == 403) and n <= 30  # noqa: PLR1714  (no sets in numba without its runtime)


@_fast
def _postcode(data: Any, s: int, e: int, labs: Any, k: int) -> None:
    """sorter.postcode.postcode_features of s..e (ASCII) into row k."""
    code = 0
    chars = 0
    digits = True
    usable = True
    for i in range(s, e):
        b = data[i]
        if b == 32 or b == 45:  # blanks and hyphens are dropped  # noqa: PLR1714  (no sets in numba without its runtime)
            continue
        if 97 <= b <= 122:
            b -= 32
        if _digit(b):
            v = b - 47
        elif _upper(b):
            v = b - 65 + 11
            digits = False
        else:
            usable = False
            break
        chars += 1
        if chars > MAX_POSTCODE_CHARS:
            usable = False
            break
        code = (code << _BITS) | v
    if usable and chars == 0:
        labs[k, PC] = NO_POSTCODE
        labs[k, PC_DIGITS] = 0
    elif not usable:
        labs[k, PC] = UNUSABLE_POSTCODE
        labs[k, PC_DIGITS] = 0
    else:
        labs[k, PC] = code << (_BITS * (MAX_POSTCODE_CHARS - chars))
        labs[k, PC_DIGITS] = chars if digits else 0


@_fast
def _element_fields(data: Any, p: int, e: int, consts: Any, labs: Any, k: int) -> bool:
    """sorter.barcodes._fast_gs1 over the payload p..e into row k (a valid GS1 label until
    a field says otherwise): False to decline."""
    _put(labs, k, _GS1, True, -1, -1)
    if e <= p or data[e - 1] == _GS:
        return False
    i = p
    while i < e:
        if i + 1 < e and data[i] == 48 and data[i + 1] == 48:
            vs, ve = i + 2, min(i + 20, e)
            i += 20
            if i < e and data[i] == _GS:
                i += 1
            if not _field(data, 0, 2, vs, ve, consts, labs, k):
                return False
            continue
        if i + 3 > e or not _all_digits(data, i, i + 3):
            return False
        ai = _number(data, i, i + 3)
        if ai != 420 and ai != 421 and ai != 401 and ai != 403:  # noqa: PLR1714  (no sets in numba without its runtime)
            return False
        end = i + 3
        while end < e and data[end] != _GS:
            end += 1
        if not _field(data, ai, 3, i + 3, end, consts, labs, k):
            return False
        i = end + 1
    return True


@_fast
def _hri_grammar(data: Any, s: int, e: int, consts: Any) -> bool:
    """The code fully matches `(?:\\([0-9]{2,4}\\)VALUE)+` (sorter.barcodes._HRI_RE)."""
    i = s
    while i < e:
        if data[i] != 40:
            return False
        j = i + 1
        while j < e and j - i - 1 < 5 and _digit(data[j]):
            j += 1
        if not 2 <= j - i - 1 <= 4 or j >= e or data[j] != 41:
            return False
        i = j + 1
        start = i
        while i < e and consts[_HRI_SET + data[i]] == 1:
            i += 1
        if i == start:
            return False
    return True


@_fast
def _hri_fields(data: Any, s: int, e: int, consts: Any, labs: Any, k: int) -> bool:
    """The fields of a human-readable string (its grammar checked) into row k; False to
    decline."""
    _put(labs, k, _GS1, True, -1, -1)
    i = s
    while i < e:
        j = i + 1
        while data[j] != 41:
            j += 1
        vs = j + 1
        ve = vs
        while ve < e and data[ve] != 40:
            ve += 1
        if not _field(data, _number(data, i + 1, j), j - i - 1, vs, ve, consts, labs, k):
            return False
        i = ve
    return True


@_fast
def _bare_form(data: Any, s: int, e: int) -> bool:
    """`(?:00|42[01]|40[13])[0-9]*(?:\\x1d[0-9]+)*` (sorter.barcodes._BARE_GS1_RE)."""
    n = e - s
    if n < 2 or not (_digit(data[s]) and _digit(data[s + 1])):
        return False
    if not (data[s] == 48 and data[s + 1] == 48):
        if n < 3 or not _digit(data[s + 2]):
            return False
        ai = _number(data, s, s + 3)
        if ai != 420 and ai != 421 and ai != 401 and ai != 403:  # noqa: PLR1714  (no sets in numba without its runtime)
            return False
    for i in range(s, e):
        b = data[i]
        if b == _GS:
            if i == e - 1 or data[i + 1] == _GS:
                return False
        elif not _digit(b):
            return False
    return True


@_fast
def _in_set(data: Any, p: int, e: int, consts: Any) -> bool:
    for i in range(p, e):  # noqa: SIM110  (numba compiles the loop, not all())
        if consts[_GS1_SET + data[i]] == 0:
            return False
    return True


# How a code is read (sorter.barcodes.classify's steps).
_AS_CARRIER, _AS_ELEMENTS, _AS_HRI, _AS_BARE = 0, 1, 2, 3


@_fast
def _form(data: Any, s: int, e: int) -> tuple[int, int]:
    """(how the code is read, where its payload or body starts)."""
    first = data[s] if e > s else -1
    if first == 93 and _aim(data, s, e):
        if _gs1_aim(data, s):
            return _AS_ELEMENTS, s + 3
        return _AS_CARRIER, s + 3
    if first == _GS:
        return _AS_ELEMENTS, s + 1
    if first == 40:
        return _AS_HRI, s
    return _AS_CARRIER, s


@_fast
def _classify(data: Any, s: int, e: int, identifiers: int, consts: Any, labs: Any, k: int) -> bool:
    """sorter.barcodes.classify of the code s..e into row k; False: leave it to Python."""
    labs[k, RAW_S] = s
    labs[k, RAW_E] = e
    form, p = _form(data, s, e)
    if form == _AS_CARRIER:
        if _carrier(data, p, e, consts, labs, k):
            return True
        if p > s or identifiers != 0 or not _bare_form(data, s, e):
            _put(labs, k, _UNKNOWN, True, p, e)
            return True
        form = _AS_BARE
    if form == _AS_HRI:
        grammar = _hri_grammar(data, s, e, consts)
        if grammar and not _hri_fields(data, s, e, consts, labs, k):
            return False
    else:
        grammar = form == _AS_BARE or _in_set(data, p, e, consts)
        if grammar and not _element_fields(data, p, e, consts, labs, k):
            return False
    if not grammar:
        _put(labs, k, _GS1, False, -1, -1)
    if form == _AS_BARE and not (
        labs[k, VALID] == 1 and (labs[k, BC_S] >= 0 or labs[k, SHIP_TO] == 1)
    ):
        # Bare digits that do not hold as a label with an SSCC or a ship-to: unknown.
        _put(labs, k, _UNKNOWN, True, s, e)
    elif labs[k, VALID] == 0:
        # sorter.barcodes._gs1_result: an invalid label is named by its SSCC as read.
        labs[k, BC_S], labs[k, BC_E] = _sscc_as_read(data, s, e)
    elif labs[k, BC_S] < 0:
        labs[k, BC_S] = labs[k, BC_E] = s
    return True


# --- the item --------------------------------------------------------------------------


@_fast
def _key_ok(data: Any, s: int, e: int) -> bool:
    """What a manifest can hold: 1-32 printable ASCII characters."""
    if not 1 <= e - s <= 32:
        return False
    for i in range(s, e):  # noqa: SIM110  (numba compiles the loop, not all())
        if not 33 <= data[i] <= 126:
            return False
    return True


@_fast
def _lookup(
    data: Any, t: int, n: int, labs: Any,
    d_words: Any, d_table: Any, d_pc: Any, d_packed: Any, to_plan: Any,
    f_words: Any, f_table: Any, f_pc: Any, f_packed: Any,
) -> tuple[int, int, int, int]:  # fmt: skip
    """Decider._lookup: (looked up 0/1, source code (0 none), postcode, packed fields)
    under the naming code t (-1 none), then every other valid code's barcode."""
    looked = 0
    for j in range(-1, n):
        i = t if j < 0 else j
        if i < 0 or (j >= 0 and (i == t or labs[i, VALID] == 0)):
            continue
        s, e = labs[i, BC_S], labs[i, BC_E]
        if e <= s:
            continue
        looked = 1
        if not _key_ok(data, s, e):
            continue
        source, pc, packed = find_live(
            data[s:e], d_words, d_table, d_pc, d_packed, to_plan, f_words, f_table, f_pc,
            f_packed,
        )  # fmt: skip
        if source != 0 and packed & _RELEASED_ONLY != _NO_ROW:
            return 1, source, pc, packed
    return looked, 0, NO_POSTCODE, 0


@_fast
def _build(
    t: int, p: int, s10: int, source: int, row_pc: int, packed: int, site_country: int,
    labs: Any,
) -> tuple[int, int, int, int, int, int, int]:  # fmt: skip
    """Decider._build: (reason, pc, pc_digits, service, country, origin, destination)."""
    service = origin = country = -1
    pc, digits = NO_POSTCODE, 0
    if t >= 0 and labs[t, KIND] == _S10:
        s10 = t
    if s10 >= 0:
        service, origin = labs[s10, SERVICE], labs[s10, ORIGIN]
    if p >= 0:
        pc, digits = labs[p, PC], labs[p, PC_DIGITS]
        country = labs[p, COUNTRY] if labs[p, COUNTRY] >= 0 else site_country
    reason = _OK_REASON
    dest = -1
    if source != 0:
        if (packed >> 41) & 1:
            reason = _HOLD
        if p < 0:
            pc, digits = row_pc, (packed >> 36) & 31
            row_country = (packed & 1023) - 1
            if row_country >= 0:
                country = row_country
            elif row_pc != NO_POSTCODE:
                country = site_country
            dest = ((packed >> 20) & 0xFFFF) - 1
        if origin < 0:
            origin = ((packed >> 42) & 1023) - 1
        if service < 0:
            service = ((packed >> 10) & 1023) - 1
    return reason, pc, digits, service, country, origin, dest


@_fast
def _candidate_mask(t: int, p: int, masks: Any) -> int:
    """Decider._regex_mask from the per-code masks (masks[2i]: code i as the naming code,
    its raw text and barcode; masks[2i+1]: code i as a ship-to label, its raw text)."""
    mask = 0
    if t >= 0:
        mask = masks[2 * t]
    if p >= 0 and p != t:
        mask |= masks[2 * p + 1]
    return mask


@_fast
def _match(
    pc: int, digits: int, service: int, country: int, origin: int, mask: int, have_masks: int,
    dims: tuple[int, int, int, int], idx_blob: Any, tables: Any, fp: Any,
) -> int:  # fmt: skip
    """The first matching rule's destination (-1 none); -2 when the plan's regexes could
    change it and no masks are given (NEED_MASK)."""
    length_mm, width_mm, height_mm, weight_g = dims
    rule = match_destination(
        pc, digits, service, country, origin, mask if have_masks else -1, length_mm, width_mm,
        height_mm, weight_g, idx_blob, tables,
    )  # fmt: skip
    if rule < 0:
        return -1
    if have_masks == 0 and fp[_FP_REGEX] and fp[_FP_HEAD + fp[_FP_RULES] + rule] >= 0:
        return -2
    return int(fp[_FP_HEAD + rule])


@_fast
def _names(n: int, labs: Any, work: Any) -> int:
    """Decider._naming_candidates into work[0:]: carrier codes by priority, else the SSCCs
    of GS1 labels, else unknown codes, else -1 (none). Returns how many."""
    m = 0
    for kind in (_S10, _UPS, _DHL, _LP):
        for i in range(n):
            if labs[i, VALID] == 1 and labs[i, KIND] == kind:
                work[m] = i
                m += 1
    if m == 0:
        for i in range(n):
            if labs[i, VALID] == 1 and labs[i, KIND] == _GS1 and labs[i, BC_E] > labs[i, BC_S]:
                work[m] = i
                m += 1
    if m == 0:
        for i in range(n):
            if labs[i, VALID] == 1 and labs[i, KIND] == _UNKNOWN:
                work[m] = i
                m += 1
    if m == 0:
        work[0] = -1
        m = 1
    return m


@_fast
def _ship_tos(n: int, labs: Any, work: Any, at: int) -> int:
    """The valid ship-to labels into work[at:] in order, else -1 (none). Returns how many."""
    q = 0
    for i in range(n):
        if labs[i, VALID] == 1 and labs[i, KIND] == _GS1 and labs[i, SHIP_TO] == 1:
            work[at + q] = i
            q += 1
    if q == 0:
        work[at] = -1
        q = 1
    return q


@_fast
def _barcode(t: int, p: int, labs: Any) -> tuple[int, int]:
    """Decider._build's barcode: the naming code's, else the ship-to label's raw text."""
    if t >= 0:
        return labs[t, BC_S], labs[t, BC_E]
    if p >= 0:
        return labs[p, RAW_S], labs[p, RAW_E]
    return 0, 0


# work layout: naming codes at 0, ship-to labels at 8, lookups (source, pc, packed) at 16,
# candidates' features (_candidate) at 48.
_W_SHIP, _W_ROWS, _W_FEATURES = 8, 16, 48
_W_SIZE = _W_FEATURES + 8 * MAX_CODES * MAX_CODES


@_fast
def _lookups(
    data: Any, n: int, m: int, manifest_on: int, labs: Any, work: Any,
    d_words: Any, d_table: Any, d_pc: Any, d_packed: Any, to_plan: Any,
    f_words: Any, f_table: Any, f_pc: Any, f_packed: Any,
) -> tuple[int, int]:  # fmt: skip
    """One pre-advice lookup per naming code into work[_W_ROWS:]; (lookups, hits)."""
    lookups = hits = 0
    for a in range(m):
        looked, source, pc, packed = 0, 0, NO_POSTCODE, 0
        if manifest_on:
            looked, source, pc, packed = _lookup(
                data, work[a], n, labs, d_words, d_table, d_pc, d_packed, to_plan, f_words,
                f_table, f_pc, f_packed,
            )  # fmt: skip
        lookups += looked
        hits += 1 if source != 0 else 0
        work[_W_ROWS + 3 * a] = source
        work[_W_ROWS + 3 * a + 1] = pc
        work[_W_ROWS + 3 * a + 2] = packed
    return lookups, hits


# What the fast path answers: (status, reason, pc, pc_digits, service, country, origin,
# regex mask, pre-advised destination, barcode start, barcode end, source code, manifest
# lookups, manifest hits, invalid codes ignored).
Out = tuple[int, int, int, int, int, int, int, int, int, int, int, int, int, int, int]


@_fast
def _unread(status: int, reason: int, bs: int, be: int) -> Out:
    return status, reason, NO_POSTCODE, 0, -1, -1, -1, 0, -1, bs, be, 0, 0, 0, 0


@_fast
def _candidate(
    a: int, b: int, s10: int, site_country: int, have_masks: int, labs: Any, work: Any,
    masks: Any,
) -> tuple[int, int, int, int, int, int, int, int]:  # fmt: skip
    """Decider._build of (naming code a, ship-to label b): (reason, pc, pc_digits, service,
    country, origin, regex mask (0 without masks), destination)."""
    t, p = work[a], work[_W_SHIP + b]
    row = _W_ROWS + 3 * a
    reason, pc, digits, service, country, origin, dest = _build(
        t, p, s10, work[row], work[row + 1], work[row + 2], site_country, labs
    )
    mask = _candidate_mask(t, p, masks) if have_masks else 0
    return reason, pc, digits, service, country, origin, mask, dest


@_fast
def _multi(
    m: int, q: int, s10: int, site_country: int, have_masks: int,
    dims: tuple[int, int, int, int], counts: tuple[int, int, int], labs: Any, work: Any,
    masks: Any, idx_blob: Any, tables: Any, fp: Any,
) -> Out:  # fmt: skip
    """The candidates (Decider._features): each matched (a pre-advised destination, else
    the rules); two different destinations conflict, else the first that has one. A lone
    candidate is matched too (its destination is not needed, but the same code serves
    both, and each call site is compiled again): without masks, NEED_MASK whenever the
    plan's regexes could decide a candidate's rule."""
    first = -1
    chosen = 0
    conflict = False
    for c in range(m * q):
        a, b = c // q, c % q
        reason, pc, digits, service, country, origin, mask, dest = _candidate(
            a, b, s10, site_country, have_masks, labs, work, masks
        )
        at = _W_FEATURES + 8 * c
        work[at], work[at + 1], work[at + 2], work[at + 3] = reason, pc, digits, service
        work[at + 4], work[at + 5], work[at + 6], work[at + 7] = country, origin, mask, dest
        if not 0 <= dest < fp[_FP_DESTS]:
            dest = _match(
                pc, digits, service, country, origin, mask, have_masks, dims, idx_blob, tables,
                fp,
            )  # fmt: skip
            if dest == -2:
                return _unread(NEED_MASK, 0, 0, 0)
        if dest >= 0:
            if first < 0:
                first, chosen = dest, c
            elif dest != first:
                conflict = True
    lookups, hits, invalid = counts
    bs, be = _barcode(work[0], work[_W_SHIP], labs)
    if conflict:
        return (
            OK, _CONFLICT, NO_POSTCODE, 0, -1, -1, -1, 0, -1, bs, be, 0, lookups, hits, invalid,
        )  # fmt: skip
    a, b = chosen // q, chosen % q
    at = _W_FEATURES + 8 * chosen
    bs, be = _barcode(work[a], work[_W_SHIP + b], labs)
    return (
        OK, work[at], work[at + 1], work[at + 2], work[at + 3], work[at + 4], work[at + 5],
        work[at + 6], work[at + 7], bs, be, work[_W_ROWS + 3 * a], lookups, hits, invalid,
    )  # fmt: skip


@_fast
def fast_features(
    data: Any, n: int, l0: int, l1: int, l2: int, identifiers: int, manifest_on: int,
    site_country: int, have_masks: int, length_mm: int, width_mm: int, height_mm: int,
    weight_g: int, consts: Any, labs: Any, work: Any, masks: Any, idx_blob: Any, tables: Any,
    fp: Any, d_words: Any, d_table: Any, d_pc: Any, d_packed: Any, to_plan: Any,
    f_words: Any, f_table: Any, f_pc: Any, f_packed: Any,
) -> Out:  # fmt: skip
    """Decider.features of the codes (joined in `data`, lengths l0..l2), without the
    recirculations and the minute: see Out. Writes only the scratch arrays (labs, work)."""
    # The codes one after the other (not in a helper: each level of calls optimises its
    # callees' code again, and classification is most of the code).
    s = 0
    for k in range(n):
        length = l0 if k == 0 else l1 if k == 1 else l2
        if not _classify(data, s, s + length, identifiers, consts, labs, k):
            return _unread(FALLBACK, 0, 0, 0)
        s += length
        if labs[k, SHIP_TO] == 1:
            _postcode(data, labs[k, PC_S], labs[k, PC_E], labs, k)
    if n == 0:
        return _unread(OK, _NO_READ, 0, 0)
    n_valid = 0
    s10 = -1
    for i in range(n):
        if labs[i, VALID] == 1:
            n_valid += 1
            if s10 < 0 and labs[i, KIND] == _S10:
                s10 = i
    if n_valid == 0:
        bs, be = labs[0, BC_S], labs[0, BC_E]
        if be <= bs:
            bs, be = labs[0, RAW_S], labs[0, RAW_E]
        return _unread(OK, _INVALID, bs, be)
    m = _names(n, labs, work)
    q = _ship_tos(n, labs, work, _W_SHIP)
    lookups, hits = _lookups(
        data, n, m, manifest_on, labs, work, d_words, d_table, d_pc, d_packed, to_plan,
        f_words, f_table, f_pc, f_packed,
    )  # fmt: skip
    counts = (lookups, hits, n - n_valid)
    dims = (length_mm, width_mm, height_mm, weight_g)
    return _multi(
        m, q, s10, site_country, have_masks, dims, counts, labs, work, masks, idx_blob,
        tables, fp,
    )  # fmt: skip


_NO_WORDS: Final = np.zeros((0, 4), np.uint64)
_NO_TABLE: Final = np.zeros(0, np.int32)
_NO_COLUMN: Final = np.zeros(0, np.int64)
_NO_MANIFEST: Final = (
    _NO_WORDS, _NO_TABLE, _NO_COLUMN, _NO_COLUMN, _NO_COLUMN,
    _NO_WORDS, _NO_TABLE, _NO_COLUMN, _NO_COLUMN,
)  # fmt: skip


def _mask_of(regexes: Sequence[re.Pattern[str]], text: str) -> int:
    mask = 0
    bit = 1
    for pattern in regexes:
        if pattern.search(text):
            mask |= bit
        bit <<= 1
    return mask


def signed_mask(mask: int) -> int:
    """A regex mask as the int64 the kernel takes (bit 63 is the sign bit)."""
    return mask - (1 << 64) if mask >= 1 << 63 else mask


class FastFeatures:
    """fast_features bound to one plan, its scratch arrays and the manifest in use.

    `features` answers what Decider.features would (see Out), or None where the Python
    path must decide. Not thread-safe (scratch arrays): one per Decider, on its loop."""

    def __init__(
        self, plan: CompiledPlan, tables: npt.NDArray[np.uint8], site_country: int
    ) -> None:
        self._idx_blob, self._fp = plan_arrays(plan)
        self._regexes = plan.plan.regexes
        self._tables = tables
        self._site_country = site_country
        self._labs, self._work = new_scratch()
        self._masks = np.zeros(2 * MAX_CODES, np.int64)
        self._manifest: Any = None
        self._arrays = _NO_MANIFEST
        self._call: Callable[..., Out] = fast_features
        self._checked: tuple[Any, ...] | None = None

    def use_manifest(self, manifest: Any) -> None:
        """A sorter.manifest.Manifest, a sorter.feeds.LiveManifest, or None."""
        self._manifest = manifest
        if manifest is None or hasattr(manifest, "lookup_source"):
            self._arrays = _NO_MANIFEST
        else:
            part = manifest.part
            self._arrays = (
                *_NO_MANIFEST[:5],
                manifest.words,
                manifest.table,
                part.postcode,
                part.packed,
            )

    def _manifest_arrays(self) -> tuple[int, tuple[Any, ...]]:
        """(lookups on, the index arrays). The arrays are the same tuple object for as long
        as they are the same arrays."""
        manifest = self._manifest
        if manifest is None or not manifest.size:
            return 0, self._arrays
        if not hasattr(manifest, "lookup_source"):
            return 1, self._arrays
        # sorter.feeds.LiveManifest's lookup arrays; the same tuple object for as long as
        # they are the same arrays (the compiled entry point is checked per tuple).
        a, b = manifest.find_arrays(), self._arrays
        if not (
            a[0] is b[0] and a[1] is b[1] and a[2] is b[2] and a[3] is b[3] and a[4] is b[4]
            and a[5] is b[5] and a[6] is b[6] and a[7] is b[7] and a[8] is b[8]
        ):  # fmt: skip
            self._arrays = a
        return 1, self._arrays

    def features(
        self, codes: Sequence[str], identifiers: bool, dims: tuple[int, int, int, int]
    ) -> tuple[Out, str] | None:
        """(Out, the codes joined: barcode = joined[out[9]:out[10]]), None to fall back."""
        n = len(codes)
        if n > MAX_CODES:
            return None
        lengths = [len(c) for c in codes]
        if n and max(lengths) > MAX_CODE_BYTES:
            return None
        joined = "".join(codes)
        try:
            data = joined.encode("ascii")
        except UnicodeEncodeError:
            return None
        lengths += [0] * (MAX_CODES - n)
        manifest_on, arrays = self._manifest_arrays()
        args = [
            data, n, *lengths, 1 if identifiers else 0, manifest_on, self._site_country, 0,
            *dims, CONSTS, self._labs, self._work, self._masks, self._idx_blob, self._tables,
            self._fp, *arrays,
        ]  # fmt: skip
        out = self._run(args, arrays)
        if out[0] == NEED_MASK:
            self._fill_masks(joined, n)
            args[8] = 1
            out = self._run(args, arrays)
        if out[0] != OK:
            return None
        return out, joined

    def _run(self, args: list[Any], arrays: tuple[Any, ...]) -> Out:
        """fast_features through its compiled entry point once it is known for these
        arguments' types (numba's dispatcher types 29 arguments on every call). Only the
        manifest's arrays change between calls; the others are this object's own."""
        if arrays is self._checked:
            return self._call(*args)
        out = fast_features(*args)
        entry = compiled_entry(fast_features, tuple(args))
        if entry is not None:
            self._call = entry
            self._checked = arrays
        return out

    def _rows(self, n: int) -> list[list[int]]:
        return cast(list[list[int]], self._labs[:n].tolist())

    def _fill_masks(self, joined: str, n: int) -> None:
        """Each code's regex masks, as Decider._regex_mask would see its texts."""
        regexes = self._regexes
        for i, row in enumerate(self._rows(n)):
            raw = joined[row[RAW_S] : row[RAW_E]]
            barcode = joined[row[BC_S] : row[BC_E]] if row[BC_S] >= 0 else ""
            as_ship_to = _mask_of(regexes, raw)
            as_name = as_ship_to if barcode == raw else as_ship_to | _mask_of(regexes, barcode)
            self._masks[2 * i] = signed_mask(as_name)
            self._masks[2 * i + 1] = signed_mask(as_ship_to)
