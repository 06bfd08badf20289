"""Waiting for something to happen, with a deadline, instead of sleeping for a guess.

    wait_until(lambda: fleet.held("r1"), 10, "r1 to hold the rule")
    await until(lambda: rc.status == "down", 10, "r1 to be seen down")

The predicate is polled until it returns something true, which is returned.
When the deadline passes first the test fails with an AssertionError naming
what never happened (`what`, or else the predicate's own source line) and the
predicate's last value. The poll interval is the checking rhythm only: the
test goes on as soon as the condition holds.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

POLL = 0.01


def _timed_out(predicate, what: str | None, timeout: float, last: Any) -> AssertionError:
    if what is None:
        try:
            what = inspect.getsource(predicate).strip()
        except (OSError, TypeError):
            what = repr(predicate)
    return AssertionError(f"timed out after {timeout:g} s waiting for {what} (last seen: {last!r})")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str | None = None, *,
               interval: float = POLL) -> Any:
    """Poll `predicate` in this thread until it is true (and return its value) or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(predicate, what, timeout, last)
        time.sleep(interval)  # the polling rhythm, not a guess at how long something takes


def poll_for(predicate: Callable[[], Any], timeout: float, *, interval: float = POLL) -> Any:
    """`predicate`'s first true value, or its last value once `timeout` s passed: for a caller that
    records the outcome (a table of cases) rather than failing at the first."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last or time.monotonic() >= deadline:
            return last
        time.sleep(interval)  # the polling rhythm, not a guess at how long something takes


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str | None = None, *,
                interval: float = POLL, pause: Callable[[float], Awaitable] = asyncio.sleep) -> Any:
    """`wait_until` inside an event loop: the loop runs between polls (`pause`, e.g. a Textual pilot's,
    lets an app process its messages too). `predicate` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timed_out(predicate, what, timeout, last)
        await pause(interval)  # the polling rhythm, not a guess at how long something takes
