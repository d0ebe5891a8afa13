"""Plan and manifest reloads: each built beside the running one, off the event loop, and
swapped in between two decisions (docs/interfaces.md, plan reload)."""

from __future__ import annotations

import asyncio
import time

import structlog

from drivers.plc import PlcLink
from sorter.commands import CommandName
from sorter.config import ConfigError, Site
from sorter.decide import Decider
from sorter.feeds import LiveManifest
from sorter.line import Line
from sorter.manifest import Manifest, ManifestSource
from sorter.plan import SortPlan, compile_plan, load_plan
from sorter.runtime import release_free_memory
from sorterd.jobs import Jobs
from sorterd.parts import new_decider
from sorterd.status import Answers

__all__ = ["MANIFEST_PROBLEMS_LOGGED", "Reloads", "log_plan_warnings"]

log = structlog.get_logger(__name__)

MANIFEST_PROBLEMS_LOGGED = 5  # per file: the rest are counted in bad_rows


def log_plan_warnings(plan: SortPlan) -> None:
    for warning in plan.warnings:
        log.warning("sort plan", problem=str(warning))


class Reloads:
    """Owns the running manifest and the swaps of the plan and of the manifest.

    A reload asked for by a command or SIGHUP runs as a job (sorterd/jobs.py) and is
    answered on P/cmd-result; a plan that fails its checks is refused and the running one
    stays.
    """

    def __init__(
        self,
        site: Site,
        pipeline: Line,
        plc: PlcLink,
        answer: Answers,
        jobs: Jobs,
        live: LiveManifest | None = None,
    ) -> None:
        self._site = site
        self._pipeline = pipeline
        self._plc = plc
        self._answer = answer
        self._jobs = jobs
        self._plan_lock = asyncio.Lock()
        self._manifest_lock = asyncio.Lock()
        self.manifests = ManifestSource(site.manifest_globs)
        self.manifest: Manifest | None = None
        # With live feeds: the index the decider uses, files and feed rows together. A file
        # reload replaces its files and keeps its feed rows; a plan reload hands it to the
        # new decider, which looks its rows up under the new plan's names.
        self.live = live

    @property
    def decider(self) -> Decider:
        return self._pipeline.decider

    @property
    def plan(self) -> SortPlan:
        """The sort plan running now."""
        return self._pipeline.decider.sort_plan

    def request_plan(self, request_id: str | None = None) -> None:
        """Reload the sort plan in the background (SIGHUP, P/cmd/plan/reload)."""
        self._jobs.start(
            lambda: self._reload_plan(request_id),
            "plan-reload",
            on_error=lambda exc: self._refused(CommandName.PLAN_RELOAD, request_id, exc),
        )

    def request_manifests(self, request_id: str | None = None) -> None:
        """Look at the manifest globs now (P/cmd/manifest/reload), and answer."""
        self._jobs.start(
            lambda: self.load_manifests(force=True, answer=True, request_id=request_id),
            "manifest-reload",
            on_error=lambda exc: self._refused(CommandName.MANIFEST_RELOAD, request_id, exc),
        )

    def _refused(self, command: CommandName, request_id: str | None, exc: Exception) -> None:
        self._answer(command.value, request_id, ok=False, reason=f"{type(exc).__name__}: {exc}")

    async def watch_manifests(self) -> None:
        """Rebuild the index when manifest files come, change or go."""
        interval_s = self._site.config.manifest.poll_interval_s
        while True:
            await asyncio.sleep(interval_s)
            await self.load_manifests()

    async def load_manifests(
        self, *, force: bool = False, answer: bool = False, request_id: str | None = None
    ) -> None:
        """Rebuild the pre-advice index beside the running one, then swap it in."""
        async with self._manifest_lock:
            if not force and not await asyncio.to_thread(self.manifests.changed):
                return
            names = self.decider.destination_names
            t0 = time.perf_counter()
            manifest = await asyncio.to_thread(self.manifests.build, names)
            if self.live is not None:
                self.live.replace_files(manifest)
            else:
                self.decider.use_manifest(manifest)
            self.manifest = manifest  # the old index is freed here
            elapsed_ms = (time.perf_counter() - t0) * 1000
            # The build's temporaries and the old index are free, but glibc keeps much of
            # them resident until asked: tens of bytes a row, for the whole run.
            await asyncio.to_thread(release_free_memory)
            _log_manifest(manifest, elapsed_ms)
            if answer:
                self._answer(
                    CommandName.MANIFEST_RELOAD.value,
                    request_id,
                    ok=True,
                    files=len(manifest.reports),
                    rows=manifest.rows,
                    bad_rows=manifest.bad_rows,
                )

    async def _reload_plan(self, request_id: str | None) -> None:
        async with self._plan_lock:
            path = self._site.plan_path
            try:
                # Load, check, compile and warm off the event loop: decisions go on meanwhile.
                decider = await asyncio.to_thread(self._build_decider)
            except ConfigError as exc:
                reasons = [str(p) for p in exc.problems]
                log.error("plan reload refused, old plan kept", problems=reasons)  # noqa: TRY400
                self._answer(
                    CommandName.PLAN_RELOAD.value, request_id, ok=False, reason="; ".join(reasons)
                )
                return
            old, new = self.plan, decider.sort_plan
            log_plan_warnings(new)
            # Same rows (files and feeds), the new plan's destinations.
            decider.use_manifest(self.live if self.live is not None else self.manifest)
            self._pipeline.swap_decider(decider)
            if self.manifests.globs:
                # Rows naming a destination only the new plan has are read again.
                self._jobs.start(lambda: self.load_manifests(force=True), "manifest-reload")
            self._plc.max_chute = new.max_chute
            log.info("plan reloaded", old=old.name, new=new.name, file=str(path))
            self._answer(
                CommandName.PLAN_RELOAD.value,
                request_id,
                ok=True,
                plan=new.name,
                destinations=len(new.destinations),
                rules=len(new.rules),
            )

    def _build_decider(self) -> Decider:
        decider = new_decider(self._site, compile_plan(load_plan(self._site.plan_path)))
        decider.warm()
        return decider


def _log_manifest(manifest: Manifest, elapsed_ms: float) -> None:
    log.info(
        "manifests loaded",
        files=len(manifest.reports),
        rows=manifest.rows,
        barcodes=manifest.size,
        bad_rows=manifest.bad_rows,
        ms=round(elapsed_ms, 1),
    )
    for report in manifest.reports:
        for problem in report.problems[:MANIFEST_PROBLEMS_LOGGED]:
            log.warning("manifest", problem=str(problem))
