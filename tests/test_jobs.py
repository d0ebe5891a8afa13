"""Jobs: one-off work (reloads) inside the daemon's TaskGroup, failures reported, not lost."""

from __future__ import annotations

import asyncio

from sorterd.jobs import Jobs


async def test_jobs_asked_for_before_the_group_start_once_it_is_bound() -> None:
    jobs = Jobs()
    ran: list[str] = []

    async def work(name: str) -> None:
        ran.append(name)

    jobs.start(lambda: work("early"), "early")
    await asyncio.sleep(0)
    assert ran == []
    async with asyncio.TaskGroup() as group:
        jobs.bind(group)
        jobs.start(lambda: work("late"), "late")
    assert ran == ["early", "late"]
    assert jobs.running == 0


async def test_a_failing_job_is_reported_and_the_group_goes_on() -> None:
    jobs = Jobs()
    errors: list[Exception] = []
    done = asyncio.Event()

    async def broken() -> None:
        raise OSError("plan file vanished")

    async def sibling() -> None:
        await asyncio.sleep(0.05)
        done.set()

    async with asyncio.TaskGroup() as group:
        jobs.bind(group)
        group.create_task(sibling())
        jobs.start(broken, "plan-reload", on_error=errors.append)
    assert done.is_set()  # the sibling was not cancelled by the failure
    assert [str(e) for e in errors] == ["plan file vanished"]
    assert jobs.failed == 1


async def test_close_cancels_running_jobs_and_refuses_new_ones() -> None:
    jobs = Jobs()
    started = asyncio.Event()
    cancelled = False
    ran: list[str] = []

    async def slow() -> None:
        nonlocal cancelled
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled = True
            raise

    async def never() -> None:
        ran.append("never")

    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        jobs.bind(group)
        jobs.start(slow, "slow")
        await started.wait()
        jobs.close()
        jobs.start(never, "after-close")
        jobs.close()  # twice is fine
    assert cancelled
    assert ran == []
    assert jobs.failed == 0


async def test_a_group_that_has_ended_refuses_jobs_quietly() -> None:
    jobs = Jobs()
    ran: list[str] = []

    async def work() -> None:
        ran.append("work")

    async def crash() -> None:
        raise ValueError("a stage died")

    try:
        async with asyncio.TaskGroup() as group:
            jobs.bind(group)
            group.create_task(crash())
            await asyncio.sleep(1)  # cancelled when crash() fails
    except* ValueError:
        jobs.start(work, "too-late")  # the group is finished now
    await asyncio.sleep(0)
    assert ran == []
