"""The scanner telegram presets as configuration: their keys, defaults and rules. No I/O.

This is the config side of `drivers/telegram.py`: the `[[scanner]]` table names a preset
(`format`) and may override some of its settings. Which keys a preset takes, what they
default to and which combinations make sense are decided here, once, so that
`sorterd check-config` reports every mistake with its key and the driver only ever sees a
consistent `TelegramOptions`. `drivers.telegram.format_from_options` turns one into the
framer and parser.

Byte strings (`start`, `end`) and texts are written as TOML strings and sent as Latin-1,
one byte per character: control bytes are written `"\\u0002"` (STX), `"\\r\\n"`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, fields, replace
from typing import Any, Final, Literal, get_args

__all__ = [
    "MAX_FRAME_BYTES_DEFAULT",
    "MAX_FRAME_BYTES_LIMIT",
    "MIN_FRAME_BYTES",
    "OPTION_KEYS",
    "PAD",
    "PRESETS",
    "PRESET_DEFAULTS",
    "PRESET_KEYS",
    "PresetName",
    "TelegramOptions",
    "pattern_problem",
    "problems",
    "resolve",
]

PresetName = Literal["index", "sick", "cognex", "datalogic", "lines", "custom"]
PRESETS: Final[tuple[str, ...]] = get_args(PresetName)

# Blanks stripped around a payload and each code before they are compared or used.
PAD: Final = " \t\r\n"
MAX_FRAME_BYTES_DEFAULT: Final = 4096
MAX_FRAME_BYTES_LIMIT: Final = 65536
MIN_FRAME_BYTES: Final = 8


@dataclass(frozen=True, slots=True)
class TelegramOptions:
    """One preset with every setting resolved (defaults filled in).

    A telegram is `start header [tracking_id id_separator] code (separator code)* trailer
    end`; `custom` replaces the part between `start` and `end` by a regular expression.
    Empty `start`: frames are cut at `end` only. Empty `heartbeat`: the preset has none.
    """

    format: str = "index"
    start: str = "\x02"
    end: str = "\x03"
    header: str = ""
    trailer: str = ""
    separator: str = ";"
    tracking_id: bool = True
    id_separator: str = "|"
    noread: str = "NOREAD"
    heartbeat: str = "HB"
    pattern: str | None = None
    template: str | None = None
    max_frame_bytes: int = MAX_FRAME_BYTES_DEFAULT


OPTION_KEYS: Final[tuple[str, ...]] = tuple(f.name for f in fields(TelegramOptions))[1:]

_FRAMED = ("start", "end", "max_frame_bytes")
_TEXT = ("header", "trailer", "separator", "noread", "heartbeat")
# The keys each preset accepts in the site config; any other is an error (a typo or a key
# of another preset must not pass silently). `index` is the contract: nothing to set.
PRESET_KEYS: Final[dict[str, frozenset[str]]] = {
    "index": frozenset(),
    "sick": frozenset((*_FRAMED, *_TEXT, "tracking_id", "id_separator")),
    "cognex": frozenset((*_FRAMED, *_TEXT, "tracking_id", "id_separator")),
    "datalogic": frozenset((*_FRAMED, *_TEXT, "id_separator")),
    "lines": frozenset(("end", "max_frame_bytes", "separator", "noread", "heartbeat")),
    "custom": frozenset((*_FRAMED, "pattern", "template", "separator", "noread", "heartbeat")),
}

_INDEX = TelegramOptions()
_NO_ID = replace(_INDEX, separator=",", tracking_id=False, id_separator=";", heartbeat="")
PRESET_DEFAULTS: Final[dict[str, TelegramOptions]] = {
    "index": _INDEX,
    # SICK CLV: STX/ETX around the output string, codes separated by ',' and a configured
    # no-read text; the CLV can add a heartbeat string at an interval.
    "sick": replace(_NO_ID, format="sick", noread="NoRead", heartbeat="HB"),
    # Cognex formatted output: plain text ending in CR LF, the configured no-read string.
    "cognex": replace(_NO_ID, format="cognex", start="", end="\r\n"),
    # Datalogic protocol index: the index string the PLC sent before the trigger,
    # then the codes.
    "datalogic": replace(_NO_ID, format="datalogic", tracking_id=True, id_separator=","),
    # One read per line, LF or CR LF.
    "lines": replace(_NO_ID, format="lines", start="", end="\n"),
    "custom": replace(_NO_ID, format="custom", start="", end="\n"),
}


def resolve(preset: str, given: dict[str, Any]) -> TelegramOptions:
    """The preset's defaults with the `given` keys (those set in the config) applied.

    Does not check anything: `problems` does. KeyError for an unknown preset.
    """
    return replace(PRESET_DEFAULTS[preset], **given)


def _latin1_problem(value: str) -> str | None:
    bad = next((c for c in value if ord(c) > 0xFF), None)
    if bad is None:
        return None
    return f"character {bad!r} is not Latin-1: telegrams are bytes, one per character"


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not usable as the `custom` preset's regular expression, or None."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    if "codes" not in compiled.groupindex:
        return "the regular expression needs a named group (?P<codes>...)"
    return None


def _template_problem(template: str, with_id: bool) -> str | None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        return f"invalid template: {exc} (write a literal brace as {{{{ or }}}})"
    unknown = sorted(set(names) - {"codes", "tracking_id"})
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}; use {{codes}} and {{tracking_id}}"
    if "codes" not in names:
        return "the template needs {codes}"
    try:
        template.format(codes="C", tracking_id=1)
    except (ValueError, IndexError, KeyError) as exc:
        return f"invalid template: {exc}"  # a format spec such as {codes:d}
    if with_id != ("tracking_id" in names):
        return "{tracking_id} must be in the template exactly when the pattern has the group"
    return None


def _start_overlaps_end(start: str, end: str) -> bool:
    """Whether `start` occurs in `end`, or a beginning of `end` is an ending of `start`."""
    if start in end:
        return True
    return any(start.endswith(end[:k]) for k in range(1, min(len(start), len(end)) + 1))


def problems(options: TelegramOptions, given: set[str]) -> list[tuple[str, str]]:
    """Every `(key, message)` wrong with a preset and the keys set for it in the config."""
    out: list[tuple[str, str]] = []
    allowed = PRESET_KEYS[options.format]
    for key in sorted(given - allowed):
        keys = ", ".join(sorted(allowed)) or "none"
        out.append((key, f"not a key of format {options.format!r} (its keys: {keys})"))
    if options.format == "index":
        return out  # the contract's preset is fixed: its settings need no check
    out += _framing_problems(options)
    out += _text_problems(options)
    if options.format == "custom":
        out += _custom_problems(options)
    return out


def _texts(options: TelegramOptions) -> dict[str, str]:
    return {
        "start": options.start,
        "end": options.end,
        "header": options.header,
        "trailer": options.trailer,
        "separator": options.separator,
        "id_separator": options.id_separator,
        "noread": options.noread,
        "heartbeat": options.heartbeat,
    }


def _framing_problems(options: TelegramOptions) -> list[tuple[str, str]]:
    """Latin-1 texts, and start/end bytes that can find every frame."""
    out: list[tuple[str, str]] = []
    for key, value in _texts(options).items():
        problem = _latin1_problem(value)
        if problem is not None:
            out.append((key, problem))
    if not options.end:
        out.append(("end", "must not be empty: it ends every telegram"))
    if options.max_frame_bytes < len(options.start) + len(options.end) + 1:
        out.append(("max_frame_bytes", "too small for start and end"))
    if options.start and options.end and _start_overlaps_end(options.start, options.end):
        # "#" and "#\r\n": whether a frame is found would depend on where the TCP stream
        # happens to be cut.
        out.append(("start", "must not occur in end, nor overlap its beginning"))
    return out


# C0 controls other than GS, DEL and C1 controls: what a code may not contain (section 4).
_CONTROL: Final = re.compile("[\x00-\x1c\x1e\x1f\x7f-\x9f]")


def _text_problems(options: TelegramOptions) -> list[tuple[str, str]]:
    """The texts inside a frame: none cuts it, none is ambiguous with another."""
    out: list[tuple[str, str]] = []
    texts = _texts(options)
    framing = [b for b in (options.start, options.end) if b]
    for key in ("header", "trailer", "separator", "id_separator", "noread", "heartbeat"):
        value = texts[key]
        if any(b in value for b in framing):
            out.append((key, "contains the start or end bytes, which would cut the frame"))
        elif key in ("header", "trailer", "noread", "heartbeat") and value != value.strip(PAD):
            out.append((key, "must not begin or end with blanks (they are stripped)"))
    if options.format != "custom" and not options.separator:
        out.append(("separator", "must not be empty"))
    if not options.noread:
        out.append(("noread", "must not be empty"))
    elif options.heartbeat and options.heartbeat == options.noread:
        out.append(("heartbeat", "equals noread: every no-read would be taken for a heartbeat"))
    elif options.separator and options.separator in options.noread:
        out.append(("noread", "contains the separator"))
    elif _CONTROL.search(options.noread):
        # The daemon refuses a code with a control character: every no-read would be
        # counted as a bad telegram instead.
        out.append(("noread", "contains a control character"))
    if options.tracking_id and options.format != "custom":
        if not options.id_separator:
            out.append(("id_separator", "must not be empty"))
        elif any(c.isdigit() for c in options.id_separator):
            out.append(("id_separator", "must not contain digits (the id is decimal)"))
    return out


def _custom_problems(options: TelegramOptions) -> list[tuple[str, str]]:
    """The `custom` preset's pattern, and the simulator's template that must fit it."""
    if options.pattern is None:
        return [("pattern", "required for format 'custom'")]
    problem = pattern_problem(options.pattern)
    if problem is not None:
        return [("pattern", problem)]
    if options.template is None:
        return []
    with_id = "tracking_id" in re.compile(options.pattern).groupindex
    problem = _latin1_problem(options.template) or _template_problem(options.template, with_id)
    return [] if problem is None else [("template", problem)]
