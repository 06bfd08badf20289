"""Key file parsing and loading (docs/protocol.md, "Key file")."""

from __future__ import annotations

import os

import pytest

from mauthcore.protocol.keys import (
    Key,
    KeyFileError,
    KeyRing,
    format_key_line,
    generate_secret,
    load_keys,
    parse_keys,
)

S16 = "00112233445566778899aabbccddeeff"
S32 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"


def test_parse_keys_first_is_current():
    ring = parse_keys(
        f"""# mauth router keys
        # rotated 2024-05-01

        7 {S32}   # current
        3 {S16.upper()}
        """
    )
    assert ring.current == Key(7, bytes.fromhex(S32))
    assert ring.key_ids == (7, 3)
    assert ring.get(3).secret == bytes.fromhex(S16)
    assert ring.get(4) is None
    assert len(ring) == 2


def test_secrets_are_not_printed():
    ring = parse_keys(f"1 {S32}\n")
    assert S32 not in repr(ring) and S32 not in repr(ring.current)


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "<key file>: the key file holds no key"),
        ("# only a comment\n\n", "holds no key"),
        (f"1 {S32} extra\n", "<key file>:1: expected '<key-id> <secret-hex>', found 3 fields"),
        ("1\n", ":1: expected '<key-id> <secret-hex>', found 1 fields"),
        (f"\n\nx1 {S32}\n", ":3: key id 'x1' is not a decimal number"),
        (f"-1 {S32}\n", "key id '-1' is not a decimal number"),
        (f"0 {S32}\n", ":1: key id 0 is outside 1-65535"),
        (f"65536 {S32}\n", "key id 65536 is outside 1-65535"),
        (f"1 {S32}\n# c\n1 {S16}\n", ":3: key id 1 already defined on line 1"),
        ("1 0011223344556677889\n", ":1: the secret of key 1 is not an even number of hex digits"),
        ("1 zz112233445566778899aabbccddeeff\n", "not an even number of hex digits"),
        ("1 00112233445566778899aabbccddee\n", "the secret of key 1 is 15 bytes long; it must be 16 to 64 bytes"),
        ("1 " + "ab" * 65 + "\n", "is 65 bytes long"),
        ("٣ " + S32 + "\n", "is not a decimal number"),  # non-ASCII digit
    ],
)
def test_parse_errors_name_the_line(text, message):
    with pytest.raises(KeyFileError) as info:
        parse_keys(text)
    assert message in str(info.value)


def test_load_keys(tmp_path):
    path = tmp_path / "router.keys"
    path.write_text(f"5 {S32}\n")
    os.chmod(path, 0o600)
    assert load_keys(path).current == Key(5, bytes.fromhex(S32))
    os.chmod(path, 0o400)
    assert load_keys(str(path)).current.key_id == 5


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o601])
def test_load_keys_refuses_a_file_others_can_access(tmp_path, mode):
    path = tmp_path / "router.keys"
    path.write_text(f"5 {S32}\n")
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        load_keys(path)
    message = str(info.value)
    assert f"key file {path} is accessible by group or others (mode {mode:04o})" in message
    assert f"chmod 600 {path}" in message
    assert "\n" not in message


def test_load_keys_errors_name_the_file(tmp_path):
    with pytest.raises(KeyFileError, match="does not exist"):
        load_keys(tmp_path / "missing")
    with pytest.raises(KeyFileError, match="is not a regular file"):
        os.chmod(tmp_path, 0o700)
        load_keys(tmp_path)
    path = tmp_path / "bad.keys"
    path.write_text("1 00\n")
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError) as info:
        load_keys(path)
    assert str(info.value).startswith(f"{path}:1: ")
    path.write_bytes(b"\xff\xfe1 00\n")
    with pytest.raises(KeyFileError, match="not UTF-8"):
        load_keys(path)


def test_format_and_generate_round_trip():
    secret = generate_secret()
    assert len(secret) == 32 and generate_secret() != secret
    ring = parse_keys(format_key_line(42, secret) + format_key_line(7, generate_secret(16)))
    assert ring.current == Key(42, secret)
    with pytest.raises(ValueError):
        format_key_line(0, secret)
    with pytest.raises(ValueError):
        generate_secret(8)


def test_key_ring_invariants():
    with pytest.raises(ValueError):
        KeyRing([])
    with pytest.raises(ValueError):
        KeyRing([Key(1, b"a" * 16), Key(1, b"b" * 16)])
    with pytest.raises(ValueError):
        Key(1, b"short")
    assert KeyRing.single(9, b"k" * 16).current.key_id == 9
