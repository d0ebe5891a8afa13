"""The simulated PLC's reply ring reader: takes in what the host wrote up to its rep_head.

The PLC keeps the latest reply per (tracking_id, seq), bounded, and tells its listeners
(the conveyor) about each one as it is taken in.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from simulators.plc_map import REPLY_RING, RING_LENGTH, WRAP, reply_from_words

__all__ = ["PlcReply", "ReplyDesk", "ReplyListener"]

log = logging.getLogger("simulators.plc")


@dataclass(frozen=True, slots=True)
class PlcReply:
    """One reply slot as the PLC read it from the host."""

    seq: int
    tracking_id: int
    chute: int
    received_s: float  # event-loop time (monotonic) when the PLC took it in
    message: int  # reply message number mod 65536 (rep_head before this reply)


ReplyListener = Callable[[PlcReply], None]


class ReplyDesk:
    """Replies taken in, listeners, and how far the reply ring has been read."""

    def __init__(self, *, retention: int, rep_seen: int | None) -> None:
        self.retention = retention
        self.rep_seen = rep_seen  # None: resynchronise from the next rep_head seen
        self.replies: dict[tuple[int, int], PlcReply] = {}
        self._listeners: list[ReplyListener] = []

    def add_listener(self, listener: ReplyListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: ReplyListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    @property
    def view(self) -> Mapping[tuple[int, int], PlcReply]:
        return self.replies

    async def take(
        self, rep_head: int, now_s: float, load: Callable[[int, int], Awaitable[list[int]]]
    ) -> tuple[int, bool]:
        """Read the reply slots up to `rep_head`: (replies taken in, whether the head jumped
        more than a ring, which is resynchronised without reading)."""
        seen = self.rep_seen
        if seen is None:
            self.rep_seen = rep_head
            return 0, False
        new = (rep_head - seen) % WRAP
        if new == 0:
            return 0, False
        if new > RING_LENGTH:
            # More replies than the ring holds can only mean a host restart or a bug; the
            # slots no longer say which message they carry, so do not read them.
            self.rep_seen = rep_head
            log.warning("rep_head jumped from %d to %d; resynchronised", seen, rep_head)
            return 0, True
        for k in range(new):
            message = (seen + k) % WRAP
            words = await load(REPLY_RING.address(message), REPLY_RING.words)
            seq, tracking_id, chute = reply_from_words(words)
            self._keep(PlcReply(seq, tracking_id, chute, now_s, message))
        self.rep_seen = rep_head
        return new, False

    def _keep(self, reply: PlcReply) -> None:
        key = (reply.tracking_id, reply.seq)
        # Re-insert so that dict order stays "oldest first" for pruning.
        self.replies.pop(key, None)
        self.replies[key] = reply
        while len(self.replies) > self.retention:
            del self.replies[next(iter(self.replies))]
        for listener in list(self._listeners):
            listener(reply)
