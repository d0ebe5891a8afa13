"""Commands on P/cmd/...: parsed by sorter/commands.py, executed here, each answered once
on P/cmd-result (docs/interfaces.md, commands)."""

from __future__ import annotations

from typing import assert_never

import structlog

from sorter.commands import (
    ChuteAction,
    ChuteCommand,
    Command,
    CommandError,
    ManifestReload,
    PlanReload,
    TrackingQuery,
    parse_command,
)
from sorter.contract import Topics
from sorter.line import Line
from sorterd.reload import Reloads
from sorterd.status import Answers

__all__ = ["CommandHandler"]

log = structlog.get_logger(__name__)


class CommandHandler:
    """The MQTT subscription's callback: refuses what does not parse, executes the rest."""

    def __init__(self, topics: Topics, pipeline: Line, reloads: Reloads, answer: Answers) -> None:
        self._prefix = f"{topics.cmd}/"
        self._pipeline = pipeline
        self._reloads = reloads
        self._answer = answer

    def on_message(self, topic: str, payload: bytes) -> None:
        if not topic.startswith(self._prefix):
            return
        suffix = topic[len(self._prefix) :]
        try:
            command = parse_command(suffix, payload)
        except CommandError as exc:
            log.warning("command refused", topic=topic, reason=str(exc))
            self._answer(suffix[:64], exc.request_id, ok=False, reason=str(exc))
            return
        self.execute(command)

    def execute(self, command: Command) -> None:
        chute = command.chute if isinstance(command, ChuteCommand) else None
        log.info("command", command=command.name.value, chute=chute, id=command.request_id)
        match command:
            case PlanReload():
                self._reloads.request_plan(command.request_id)
            case ManifestReload():
                self._reloads.request_manifests(command.request_id)
            case ChuteCommand():
                self._chute(command)
            case TrackingQuery():
                self._query(command)
            case _:
                assert_never(command)

    def _chute(self, command: ChuteCommand) -> None:
        chute, name = command.chute, command.name.value
        if chute not in self._reloads.plan.machine_chutes:
            reason = f"chute {chute} does not exist on the machine"
            self._answer(name, command.request_id, ok=False, reason=reason)
            return
        match command.action:
            case ChuteAction.DISABLE | ChuteAction.ENABLE:
                self._pipeline.set_host_disabled(chute, command.action is ChuteAction.DISABLE)
            case ChuteAction.FULL | ChuteAction.EMPTIED:
                self._pipeline.set_host_full(chute, command.action is ChuteAction.FULL)
            case _:
                assert_never(command.action)
        self._answer(name, command.request_id, ok=True, chute=chute)

    def _query(self, command: TrackingQuery) -> None:
        name, tracking_id = command.name.value, command.tracking_id
        decision = self._pipeline.last_decision(tracking_id)
        if decision is None:
            reason = f"no recent decision for tracking id {tracking_id}"
            self._answer(name, command.request_id, ok=False, reason=reason)
        else:
            # `source`: which pre-advice decided it (file, feed, customs), null for none.
            source = self._pipeline.last_source(tracking_id)
            self._answer(name, command.request_id, ok=True, decision=decision, source=source)
