"""The fan-out's rules without a router: it needs keys; stopping it ends a task that lost a cancellation.

The fan-out to a router over real UDP on 127.0.0.1 is tests/loopback/test_mauthserver_fanout.py.
"""

from __future__ import annotations

import asyncio

import pytest

from mauthcore.protocol.client import RetryPolicy
from mauthserver.core import RouterCore
from mauthserver.events import EventBus
from mauthserver.fanout import FanOut
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory


def test_fanout_needs_keys(tmp_path):
    store = Store.open(tmp_path / "m.db", now=1.0)
    try:
        m = Mediator(store, Directory(), EventBus(), [RouterCore("r1", "127.0.0.1", 1)])
        with pytest.raises(ValueError):
            FanOut(m, store, m.bus, None, RetryPolicy())
    finally:
        store.close()


def test_cancel_all_ends_a_task_that_lost_its_first_cancellation():
    """As Python 3.11's wait_for() can: the first CancelledError is swallowed and the loop goes on."""
    from mauthserver.fanout import cancel_all

    async def main():
        swallowed = []
        running = asyncio.Event()

        async def loop_forever():
            never = asyncio.Event()
            running.set()
            while True:
                try:
                    await never.wait()
                except asyncio.CancelledError:
                    if swallowed:
                        raise
                    swallowed.append(True)

        async def crashing():
            raise RuntimeError("reported already")

        tasks = [asyncio.create_task(loop_forever()), asyncio.create_task(crashing())]
        await running.wait()
        await asyncio.wait([tasks[1]])  # it has crashed
        stopping = asyncio.create_task(cancel_all(tasks))
        done, _ = await asyncio.wait([stopping], timeout=3)
        assert stopping in done, "cancel_all() still waits for a task that lost its cancellation"
        assert swallowed == [True] and all(t.done() for t in tasks)

    asyncio.run(main())
