"""A lossy, duplicating UDP relay for protocol tests in the lab.

Sits between a client and a server, both directions through one thread:
each datagram is dropped with probability `loss`, and otherwise sent twice
with probability `dup`. Seeded, so a failing run can be replayed. (The
kernel here has no netem; this is the lab's stand-in.)
"""

from __future__ import annotations

import random
import select
import socket
import threading


class LossyRelay:
    def __init__(self, listen: tuple[str, int], server: tuple[str, int], *, loss: float, dup: float,
                 seed: int = 1):
        self.server = server
        self.loss, self.dup = loss, dup
        self.rng = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(listen)
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind((listen[0], 0))
        self.address = self.front.getsockname()
        self.client: tuple | None = None
        self.stats = {"in": 0, "dropped": 0, "duplicated": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> LossyRelay:
        self._thread.start()
        return self

    def _forward(self, sock: socket.socket, data: bytes, dest) -> None:
        self.stats["in"] += 1
        if self.rng.random() < self.loss:
            self.stats["dropped"] += 1
            return
        copies = 2 if self.rng.random() < self.dup else 1
        self.stats["duplicated"] += copies - 1
        for _ in range(copies):
            sock.sendto(data, dest)

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.front, self.back], [], [], 0.1)
            for s in ready:
                data, peer = s.recvfrom(65535)
                if s is self.front:
                    self.client = peer
                    self._forward(self.back, data, self.server)
                elif self.client is not None:
                    self._forward(self.front, data, self.client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.front.close()
        self.back.close()
