"""What a scanner of each telegram preset sends: the simulators' own telegram encoder.

Written from the telegram shapes of docs/interfaces.md (section 4) and docs/scanners.md,
with the preset settings of sorter/telegram_options.py (shared configuration), and not
from the daemon's codec in drivers/telegram.py: the end-to-end tests then run the
daemon's parser against bytes it did not produce itself, and tests/test_sim_telegrams.py
holds the two sides together for every preset, so a framing bug on either side fails.

A read telegram is `start header [tracking_id id_separator] body trailer end` with the
body the codes joined by `separator` (the `noread` text for a no-read); `custom` puts
`template.format(codes=body, tracking_id=...)` between `start` and `end`. The heartbeat
is `start heartbeat end`, and a preset with an empty `heartbeat` has none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sorter.errors import SorterdError
from sorter.telegram_options import PAD, PRESET_DEFAULTS, TelegramOptions

__all__ = ["MAX_TRACKING_ID", "TelegramEncodeError", "TelegramEncoder", "encoder_for"]

MAX_TRACKING_ID: Final = 2**32 - 1
# A scanner never puts these in a code: C0 controls except GS (it separates GS1 element
# strings), DEL and the C1 controls. The daemon counts such a telegram as bad.
_CONTROL: Final = re.compile("[\x00-\x1c\x1e\x1f\x7f-\x9f]")


class TelegramEncodeError(SorterdError, ValueError):
    """A read that a scanner of this preset could not send intact."""


@dataclass(frozen=True, slots=True)
class TelegramEncoder:
    """The bytes a scanner configured with `options` sends."""

    options: TelegramOptions

    @property
    def name(self) -> str:
        return self.options.format

    @property
    def carries_tracking_id(self) -> bool:
        """True when read telegrams carry the PLC's tracking id."""
        options = self.options
        if options.format == "custom":
            return options.pattern is not None and (
                "tracking_id" in re.compile(options.pattern).groupindex
            )
        return options.tracking_id

    def encode_heartbeat(self) -> bytes | None:
        """The heartbeat telegram, None when the preset has none."""
        if not self.options.heartbeat:
            return None
        return self._frame(self.options.heartbeat)

    def encode_read(self, tracking_id: int | None, codes: Sequence[str]) -> bytes:
        """A whole read telegram, delimiters included; no codes sends the no-read.

        TelegramEncodeError when the preset could not carry it intact: a tracking id
        missing, unexpected or out of range, a code with blanks around it, a control
        character, a character outside Latin-1 or a delimiter of the preset, a telegram
        that reads as the heartbeat, a frame over `max_frame_bytes`, or `custom` without a
        `template`.
        """
        if isinstance(codes, str):
            raise TypeError("codes must be a sequence of codes, not one str")
        options = self.options
        self._check_id(tracking_id)
        forbidden = [options.separator]
        if options.format == "index":
            forbidden.append(options.id_separator)  # the contract allows one '|'
        for code in codes:
            _check_code(code, forbidden)
        if options.format == "custom" and not options.separator and len(codes) > 1:
            raise TelegramEncodeError("without a separator a telegram carries one code")
        if not codes:
            # The no-read text stands where the codes go: the same rules hold for it.
            _check_code(options.noread, [])
        body = options.separator.join(codes) if codes else options.noread
        if options.format == "custom":
            text = self._templated(tracking_id, body)
        else:
            if tracking_id is not None:
                body = f"{tracking_id}{options.id_separator}{body}"
            text = options.header + body + options.trailer
        if options.heartbeat and text.strip(PAD) == options.heartbeat:
            raise TelegramEncodeError(f"telegram {text!r} is the preset's heartbeat")
        return self._frame(text)

    def _check_id(self, tracking_id: int | None) -> None:
        if not self.carries_tracking_id:
            if tracking_id is not None:
                raise TelegramEncodeError(f"preset {self.name} carries no tracking id")
            return
        if tracking_id is None:
            raise TelegramEncodeError(f"preset {self.name} needs a tracking id")
        if not 0 <= tracking_id <= MAX_TRACKING_ID:
            raise TelegramEncodeError(f"tracking id {tracking_id} outside 0..{MAX_TRACKING_ID}")

    def _templated(self, tracking_id: int | None, body: str) -> str:
        template = self.options.template
        if template is None:
            raise TelegramEncodeError("preset custom has no template: it cannot be simulated")
        try:
            return template.format(
                codes=body, tracking_id="" if tracking_id is None else tracking_id
            )
        except (ValueError, IndexError, KeyError) as exc:
            raise TelegramEncodeError(f"template {template!r}: {exc}") from None

    def _frame(self, text: str) -> bytes:
        options = self.options
        try:
            payload = text.encode("latin-1")
        except UnicodeEncodeError:
            raise TelegramEncodeError(f"telegram {text!r} is not Latin-1") from None
        start, end = options.start.encode("latin-1"), options.end.encode("latin-1")
        # The frame must end where its end delimiter is meant to be, not earlier (an end
        # inside the payload, or the payload's last bytes and the end overlapping), and no
        # start may reopen it.
        if (start and start in payload + end) or (payload + end).find(end) != len(payload):
            raise TelegramEncodeError(f"telegram {text!r} contains the start or end bytes")
        frame = start + payload + end
        if len(frame) > options.max_frame_bytes:
            raise TelegramEncodeError(
                f"telegram of {len(frame)} bytes over max_frame_bytes {options.max_frame_bytes}"
            )
        return frame


def _check_code(code: str, forbidden: Sequence[str]) -> None:
    if not code or code != code.strip(PAD):
        raise TelegramEncodeError(f"code {code!r} is empty or has blanks around it")
    if _CONTROL.search(code) is not None:
        raise TelegramEncodeError(f"code {code!r} contains a control character")
    if max(map(ord, code)) > 0xFF:
        raise TelegramEncodeError(f"code {code!r} is not Latin-1")
    clash = next((text for text in forbidden if text and text in code), None)
    if clash is not None:
        raise TelegramEncodeError(f"code {code!r} contains {clash!r}, which this preset uses")


def encoder_for(preset: str | TelegramOptions) -> TelegramEncoder:
    """The encoder of a preset by name (its default settings) or of resolved options.

    KeyError for an unknown preset name, and for `custom`, which needs a pattern.
    """
    if isinstance(preset, TelegramOptions):
        return TelegramEncoder(preset)
    if preset == "custom":
        raise KeyError("telegram format 'custom' needs a pattern: give its TelegramOptions")
    try:
        return TelegramEncoder(PRESET_DEFAULTS[preset])
    except KeyError:
        known = ", ".join(sorted(p for p in PRESET_DEFAULTS if p != "custom"))
        raise KeyError(f"unknown telegram format {preset!r}; known: {known}") from None
