"""A TCP relay to a Unix socket that a test can freeze, as a network cut would.

`FrozenProxy(listener, unix_path)` accepts on `listener` (a bound, listening
TCP socket the caller made, in whatever network namespace it wants) and
relays each connection to the Unix socket at `unix_path` (a PostgreSQL
server's). `freeze()` stops relaying in both directions while every
connection stays open: what the client sees when the network between it and
the server is cut (no reset, no answer). Threads end with `stop()`.
"""

from __future__ import annotations

import select
import socket
import threading


class FrozenProxy(threading.Thread):
    def __init__(self, listener: socket.socket, unix_path: str) -> None:
        super().__init__(daemon=True, name="frozen-proxy")
        self.listener = listener
        self.port = listener.getsockname()[1]
        self.unix_path = unix_path
        self.frozen = threading.Event()
        self._done = threading.Event()
        self._all: list[socket.socket] = []

    def freeze(self) -> None:
        self.frozen.set()

    def run(self) -> None:
        peers: dict[socket.socket, socket.socket] = {}
        while not self._done.is_set():
            watched = [self.listener] if self.frozen.is_set() else [self.listener, *peers]
            ready, _, _ = select.select(watched, [], [], 0.1)
            for s in ready:
                if s is self.listener:
                    client, _ = self.listener.accept()
                    if self.frozen.is_set():  # a new connection during the cut goes nowhere
                        self._all.append(client)
                        continue
                    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    server.connect(self.unix_path)
                    peers[client], peers[server] = server, client
                    self._all += [client, server]
                    continue
                if s not in peers:  # closed with its peer earlier in this round
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    other = peers.pop(s)
                    peers.pop(other, None)
                    s.close()
                    other.close()
                    continue
                peers[s].sendall(data)

    def stop(self) -> None:
        self._done.set()
        if self.is_alive():
            self.join(timeout=5)
        for s in self._all:
            s.close()
        self.listener.close()


def listening(host: str = "127.0.0.1") -> socket.socket:
    """A TCP listener on an ephemeral port of `host`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(16)
    return sock
