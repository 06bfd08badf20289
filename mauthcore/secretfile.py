"""Secrets files (router keys, the API token): read once, safely, in one place.

A secrets file must be a regular file that neither group nor others can
access, and the checks are made on the open descriptor (no race between a
check and the open). Every problem is a `SecretFileError` whose message is one
sentence naming the file; callers that speak another error type subclass it
or translate it.
"""

from __future__ import annotations

import os
import stat

MAX_SECRET_FILE = 65536
MIN_TOKEN = 16


class SecretFileError(ValueError):
    """A secrets file is missing, unreadable, too open or malformed."""


def read_secret_file(path: str | os.PathLike[str], what: str) -> bytes:
    """The contents of secrets file `path` (`what` names it in errors, e.g. "key file")."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SecretFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise SecretFileError(f"{what} {path} cannot be read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretFileError(f"{what} {path} is not a regular file")
        if st.st_mode & 0o077:
            raise SecretFileError(f"{what} {path} is accessible by group or others (mode"
                                  f" {stat.S_IMODE(st.st_mode):04o}); run 'chmod 600 {path}'")
        try:
            data = os.read(fd, MAX_SECRET_FILE + 1)
        except OSError as exc:
            raise SecretFileError(f"{what} {path} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE:
        raise SecretFileError(f"{what} {path} is larger than {MAX_SECRET_FILE} bytes")
    return data


def load_token(path: str | os.PathLike[str]) -> str:
    """The HTTP API bearer token: the file's first line, at least 16 printable characters."""
    path = os.fspath(path)
    data = read_secret_file(path, "token file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise SecretFileError(f"token file {path} is not ASCII text") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise SecretFileError(f"token file {path} is empty")
    token = lines[0]
    if len(token) < MIN_TOKEN or not token.isprintable() or " " in token:
        raise SecretFileError(
            f"the token in {path} must be at least {MIN_TOKEN} printable characters without spaces")
    return token
