"""The group commit's writer bookkeeping: an item submitted as the last writer finishes is still written."""

from __future__ import annotations

import asyncio

from bot.web.group_commit import GroupCommit


async def test_an_item_submitted_while_the_last_writer_finishes_is_still_written() -> None:
    """The race a two-process web hit under load: a request handled in the turn between the writer's last look at
    the pending items and its end found it still counted, started no writer, and waited for ever."""
    loop = asyncio.get_running_loop()
    late: list[asyncio.Task[str]] = []

    def submit_late() -> None:  # its task's first step comes right behind the writer's last one
        late.append(asyncio.ensure_future(group.submit("late")))

    async def write(items: list[str]) -> list[str]:
        if items == ["first"]:
            loop.call_soon(submit_late)
            await asyncio.sleep(0)  # the write takes a turn of the loop, as a database's round trip does
        return [f"written {item}" for item in items]

    group: GroupCommit[str, str] = GroupCommit(write)

    assert await group.submit("first") == "written first"
    for _ in range(20):  # let the late submission start
        if late:
            break
        await asyncio.sleep(0)
    assert late, "the late submission never started"
    assert await asyncio.wait_for(late[0], 30) == "written late"
