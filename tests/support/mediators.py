"""Mediators on a real SQLite store in a test's directory, with a clock the test moves (unit tests).

`mediator_env(tmp_path)` yields (clock, make, stores): `make(**directory)` opens the store file again
(as a restart would) and returns a new Mediator on it with a Directory of those bounds; every store
made is closed at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mauthserver.events import EventBus
from mauthserver.service import Mediator
from mauthserver.store import Store
from sap.directory import Directory

T0 = 1_700_000_000.0


class Clock:
    """Unix time that moves only when the test sets `t`."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@contextmanager
def mediator_env(tmp_path: Path) -> Iterator[tuple[Clock, object, list[Store]]]:
    clock = Clock(T0)
    stores: list[Store] = []

    def make(**directory) -> Mediator:
        store = Store.open(tmp_path / "m.db", now=clock())
        stores.append(store)
        return Mediator(store, Directory(**directory), EventBus(), [], clock=clock)

    try:
        yield clock, make, stores
    finally:
        for s in stores:
            s.close()
