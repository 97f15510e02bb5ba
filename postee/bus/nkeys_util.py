"""NKeys seed files: read them, derive their public key, sign a server nonce — without ever leaking them.

A seed file holds an Ed25519 private key in NATS' base32 "seed" encoding (`SU...` for a user). Postee's
`--controller-seed-file` / `--runner-seed-file` accept either a bare seed (one line, as written by
`nk -gen user`) or a decorated credentials block (`-----BEGIN USER NKEY SEED-----` ... as in a `.creds`
file): we take the first line that parses as a seed.

The seed is a secret. Nothing here puts it in a log line, an exception message or a `repr`: errors
name the file and say what is wrong with it, never what is in it.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import nkeys

# A base32 seed: 'S', then the key type ('U' user, 'A' account, 'N' server, ...), 56 more characters.
_SEED_RE = re.compile(rb"^S[UANOCP][A-Z2-7]{56}$")
_PUBLIC_RE = re.compile(r"^[UANOC][A-Z2-7]{55}$")
MAX_SEED_FILE_SIZE = 64 * 1024  # a seed file is a few lines; anything bigger is not a seed file


class NKeyError(ValueError):
    """A seed file or public key is unusable. The message never contains key material."""


def read_seed(path: str | os.PathLike[str]) -> bytes:
    """The seed found in the file at `path` (bytes, e.g. b"SUA..."); raises `NKeyError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SEED_FILE_SIZE:
            raise NKeyError(f"seed file {str(path)!r} is too large ({size} bytes) to be a seed file")
        data = path.read_bytes()
    except OSError as exc:
        raise NKeyError(f"cannot read seed file {str(path)!r}: {exc.strerror or type(exc).__name__}") from None
    for line in data.splitlines():
        candidate = line.strip()
        if _SEED_RE.match(candidate):
            if not _valid_seed(candidate):
                raise NKeyError(f"seed file {str(path)!r} holds an invalid NKEY seed (bad checksum)")
            return bytes(candidate)
    raise NKeyError(f"no NKEY seed found in seed file {str(path)!r} (expected a line like 'SU...')")


def _valid_seed(seed: bytes) -> bool:
    """Checksum and key type of a base32 seed (nkeys' own `from_seed` does not check the CRC)."""
    try:
        raw = base64.b32decode(seed + b"=" * (-len(seed) % 8))
        nkeys.decode_seed(bytearray(seed))
    except Exception:  # nkeys raises several types; none may carry the seed into a log
        return False
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    return nkeys.crc16(bytearray(body)) == crc


def public_key_from_seed(seed: bytes) -> str:
    """The public key (`U...` for a user seed) of `seed`."""
    if not _valid_seed(bytes(seed)):
        raise NKeyError("invalid NKEY seed")
    try:
        return nkeys.from_seed(bytearray(seed)).public_key.decode()
    except Exception:
        raise NKeyError("invalid NKEY seed") from None


def public_key_from_seed_file(path: str | os.PathLike[str]) -> str:
    """The public key of the seed in the file at `path`: what the server lists as an allowed user."""
    return public_key_from_seed(read_seed(path))


def validate_public_key(key: str) -> str:
    """`key` stripped, if it is a well-formed NKEY public key; raises `NKeyError` otherwise."""
    key = key.strip()
    if key.startswith("S"):
        # Someone passed a seed where a public key belongs: refuse without echoing it.
        raise NKeyError("a seed was given where an NKEY public key is expected")
    if not _PUBLIC_RE.match(key):
        raise NKeyError(f"not an NKEY public key: {key[:8]!r}...")
    raw = base64.b32decode(key)  # 56 base32 characters: exactly 35 bytes, no padding
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if not nkeys.valid_public_prefix_byte(body[0]) or nkeys.crc16(bytearray(body)) != crc:
        raise NKeyError(f"not a valid NKEY public key (bad checksum): {key[:8]!r}...")
    return key


def sign_nonce(seed: bytes, nonce: str | bytes) -> str:
    """Sign a server's `nonce` with `seed`; returns the signature as the `sig` field of CONNECT wants it."""
    data = nonce.encode() if isinstance(nonce, str) else nonce
    try:
        signature = nkeys.from_seed(bytearray(seed)).sign(data)
    except Exception:
        raise NKeyError("cannot sign with this NKEY seed") from None
    return base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def new_user_seed() -> bytes:
    """A fresh random user seed (b"SU..."), e.g. for tests or a `postee` helper command."""
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
