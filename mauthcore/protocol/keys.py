"""Pre-shared keys of protocol v2: the key file and the key ring built from it.

Strategy: the file is text, one key per line, so an operator can rotate keys
with an editor (docs/protocol.md, "Key file"):

    # comment lines and blank lines are ignored; '#' also starts a trailing comment
    <key-id> <secret-hex>        key id decimal 1..65535, secret 16..64 bytes as hex

The first key is the *current* key, the one clients sign with; a server
accepts every key in its file. Parsing is pure (`parse_keys(text)`) and
raises `KeyFileError` naming file and line; `load_keys(path)` adds the file
checks (readable, a regular file, not readable by group or others), done on
the open file descriptor so the check and the read see the same file.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from mauthcore.secretfile import SecretFileError, read_secret_file

MIN_KEY_ID = 1
MAX_KEY_ID = 0xFFFF
MIN_SECRET = 16
MAX_SECRET = 64

_HEX = re.compile(r"[0-9a-fA-F]+")


class KeyFileError(ValueError):
    """The key file is unusable; the message is one sentence naming file and line."""


@dataclass(frozen=True)
class Key:
    key_id: int
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not MIN_KEY_ID <= self.key_id <= MAX_KEY_ID:
            raise ValueError(f"key id {self.key_id} is outside {MIN_KEY_ID}-{MAX_KEY_ID}")
        if not MIN_SECRET <= len(self.secret) <= MAX_SECRET:
            raise ValueError(f"a secret must be {MIN_SECRET} to {MAX_SECRET} bytes long")


class KeyRing:
    """The keys one side knows; `current` is the one to sign with (the file's first)."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self._keys: dict[int, Key] = {}
        for key in keys:
            if key.key_id in self._keys:
                raise ValueError(f"key id {key.key_id} appears twice")
            self._keys[key.key_id] = key
        if not self._keys:
            raise ValueError("a key ring needs at least one key")
        self._current = next(iter(self._keys.values()))

    @classmethod
    def single(cls, key_id: int, secret: bytes) -> KeyRing:
        return cls([Key(key_id, secret)])

    @property
    def current(self) -> Key:
        return self._current

    def get(self, key_id: int) -> Key | None:
        return self._keys.get(key_id)

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={self.key_ids!r})"


def parse_keys(text: str, source: str = "<key file>") -> KeyRing:
    """Parse key-file text; raise KeyFileError naming `source` and the line."""
    keys: list[Key] = []
    seen: dict[int, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        fields = line.split()
        if len(fields) != 2:
            raise KeyFileError(f"{where}: expected '<key-id> <secret-hex>', found {len(fields)} fields")
        id_text, secret_text = fields
        if not id_text.isdigit() or not id_text.isascii():
            raise KeyFileError(f"{where}: key id {id_text!r} is not a decimal number")
        key_id = int(id_text)
        if not MIN_KEY_ID <= key_id <= MAX_KEY_ID:
            raise KeyFileError(f"{where}: key id {key_id} is outside {MIN_KEY_ID}-{MAX_KEY_ID}")
        if key_id in seen:
            raise KeyFileError(f"{where}: key id {key_id} already defined on line {seen[key_id]}")
        if not _HEX.fullmatch(secret_text) or len(secret_text) % 2:
            raise KeyFileError(f"{where}: the secret of key {key_id} is not an even number of hex digits")
        secret = bytes.fromhex(secret_text)
        if not MIN_SECRET <= len(secret) <= MAX_SECRET:
            raise KeyFileError(
                f"{where}: the secret of key {key_id} is {len(secret)} bytes long;"
                f" it must be {MIN_SECRET} to {MAX_SECRET} bytes ({2 * MIN_SECRET} to {2 * MAX_SECRET} hex digits)"
            )
        seen[key_id] = lineno
        keys.append(Key(key_id, secret))
    if not keys:
        raise KeyFileError(f"{source}: the key file holds no key")
    return KeyRing(keys)


def load_keys(path: str | os.PathLike[str]) -> KeyRing:
    """Read and parse a key file, refusing one that group or others can read."""
    path = os.fspath(path)
    try:
        data = read_secret_file(path, "key file")
    except SecretFileError as exc:
        raise KeyFileError(str(exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not UTF-8 text") from None
    return parse_keys(text, source=path)


def format_key_line(key_id: int, secret: bytes) -> str:
    """One key-file line for `key_id` and `secret`."""
    Key(key_id, secret)  # validates
    return f"{key_id} {secret.hex()}\n"


def generate_secret(length: int = 32) -> bytes:
    """A fresh random secret (32 bytes = the HMAC-SHA256 output size)."""
    if not MIN_SECRET <= length <= MAX_SECRET:
        raise ValueError(f"a secret must be {MIN_SECRET} to {MAX_SECRET} bytes long")
    return secrets.token_bytes(length)
