"""The pipeline's Durable (sorter/ports.py): journal first, then the MQTT outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.mqtt import MqttPublisher, OutMessage, encode
from sorter.ports import MessageKind, Outgoing, SortRequest

if TYPE_CHECKING:
    # drivers.journal re-exports this class: a run-time import would be circular.
    from drivers.journal import Journal

__all__ = ["JournalOutbox"]


class JournalOutbox:
    """The pipeline's Durable: journal first, then the MQTT outbox with the row id.

    A step's messages reach the outbox at its commit: with their row ids when the commit
    succeeded, as memory-only messages when any write of the step failed (a failed write
    rolls the whole step back, so none of its rows exist, and their ids will be reused).
    """

    def __init__(self, journal: Journal, publisher: MqttPublisher) -> None:
        self.journal = journal
        self.publisher = publisher
        self._step: list[tuple[str, bytes, int | None]] = []
        self._decided: list[tuple[int, int]] = []
        self._step_failed = False

    def add_pending(self, req: SortRequest) -> None:
        if not self._step_failed and not self.journal.add_pending(req):
            self._step_failed = True

    def record(self, msg: Outgoing) -> None:
        data = encode(msg.payload)
        rowid = None if self._step_failed else self.journal.append(msg, data)
        if rowid is None:
            self._step_failed = True
        self._step.append((msg.topic, data, rowid))
        if msg.kind is MessageKind.DECISION:
            self._decided.append((msg.tracking_id, msg.seq))

    def commit(self) -> None:
        durable = not self._step_failed and self.journal.commit()
        if not durable:
            for tid, seq in self._decided:
                self.journal.decided_elsewhere(tid, seq)
        self._decided.clear()
        step, self._step = self._step, []
        self._step_failed = False
        if step:
            # Published once on the disk, so that the broker does not carry a decision a
            # power cut could take from the journal (to be decided again, under another id).
            self.journal.after_sync(lambda: self._publish(step, durable))

    def _publish(self, step: list[tuple[str, bytes, int | None]], durable: bool) -> None:
        for topic, data, rowid in step:
            self.publisher.publish_raw(
                OutMessage(topic, data, 1, False), rowid if durable else None
            )
