"""The outbox of command frames: order, back-pressure, and what survives a disconnect."""

from __future__ import annotations

import asyncio

from servermanager.agent.exec.outbox import Outbox
from servermanager.common.protocol import CommandOutput, CommandResult

# ---------------------------------------------------------------- outbox


def _out(cid: str, data: str = "x") -> CommandOutput:
    return CommandOutput(command_id=cid, stream="stdout", data=data)


async def test_outbox_orders_frames_and_holds_results_while_offline() -> None:
    box = Outbox(max_output=2, max_results=2)
    assert not await box.put_output(_out("a"))  # offline: dropped, counted
    assert box.outputs_dropped == 1
    box.put_result(CommandResult(command_id="a", status="ok"))
    box.set_online(True)
    assert await box.put_output(_out("b", "1"))
    box.put_result(CommandResult(command_id="b", status="ok"))
    got = [await box.get(), await box.get(), await box.get()]
    assert [(type(f).__name__, f.command_id) for f in got] == [
        ("CommandResult", "a"),
        ("CommandOutput", "b"),
        ("CommandResult", "b"),
    ]


async def test_outbox_back_pressure_and_disconnect() -> None:
    box = Outbox(max_output=2, max_results=2)
    box.set_online(True)
    assert await box.put_output(_out("a", "1"))
    assert await box.put_output(_out("a", "2"))
    blocked = asyncio.create_task(box.put_output(_out("a", "3")))
    await asyncio.sleep(0)
    assert not blocked.done()  # full: the reader waits
    first = await box.get()
    assert isinstance(first, CommandOutput) and first.data == "1"
    assert await blocked  # room again
    box.put_result(CommandResult(command_id="a", status="ok"))
    box.set_online(False)  # the connection dropped: output goes, the result stays
    assert box.outputs_dropped == 2 and len(box) == 1 and box.held_results == 1
    box.requeue(_out("a", "lost"))
    assert box.outputs_dropped == 3
    # Too many results while offline: the oldest goes.
    box.put_result(CommandResult(command_id="b", status="ok"))
    box.put_result(CommandResult(command_id="c", status="ok"))
    assert box.results_dropped == 1
    box.set_online(True)
    assert [(await box.get()).command_id for _ in range(2)] == ["b", "c"]
