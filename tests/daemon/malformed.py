"""Malformed webhook bodies of many kinds, reproducibly (one seed, one list).

Every body here must be refused by the webhook with a 4xx: not JSON, not RFC 8259 JSON, not a JSON
object, not UTF-8, nested past what the decoder follows, or larger than the intake limit. Used by
the flood test (`test_malformed_flood.py`); `kinds()` names each family so a failure says which.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

VALID = {"image": "alpine:3.19", "registry": "docker.io", "vulnerabilities": [{"id": "CVE-1", "score": 7.5}],
         "scan": {"critical": 0, "high": 2, "tags": ["a", "b"]}}
VALID_TEXT = json.dumps(VALID, separators=(",", ":")).encode()
"""Compact, so that every proper prefix of it is invalid JSON."""

OVERSIZE = 16 * 1024 * 1024 + 1
"""One byte past the daemon's default intake limit (16 MiB, as Postee)."""


def _truncated(rng: random.Random) -> bytes:
    return VALID_TEXT[: rng.randrange(0, len(VALID_TEXT))]


def _syntax(rng: random.Random) -> bytes:
    return rng.choice([
        b'{"a": 1,}', b"{'a': 1}", b'{a: 1}', b'{"a": 1 /* no comments */}', b'{"a": 01}', b'{"a": .5}',
        b'{"a": +1}', b'{"a": 1.}', b'{"a": 1e}', b'{"a": "\\x41"}', b'{"a": "\\u12"}', b'{"a": "unterminated}',
        b'{"a" 1}', b'{"a": 1 "b": 2}', b'{}{}', b'{"a": 1} trailing', b"", b"   \n\t ", b"\xef\xbb\xbf{}",
        b'{"a": tru}', b'{"a": nul}', b'{"a": [1, 2}', b'{"a": "tab\there"}', b'{"a": "line\nbreak"}',
    ])


def _not_an_object(rng: random.Random) -> bytes:
    return rng.choice([b"[]", b"[1, 2]", b'"a string"', b"42", b"-0.5", b"null", b"true", b"false",
                       b'[{"image": "alpine"}]', json.dumps(["x"] * rng.randrange(1, 50)).encode()])


def _deep(rng: random.Random) -> bytes:
    depth = rng.choice([2_000, 20_000, 200_000])
    if rng.random() < 0.5:
        return b"[" * depth + b"]" * depth
    closed = rng.random() < 0.5
    return b'{"a":' * depth + b"1" + (b"}" * depth if closed else b"")


def _not_json_numbers(rng: random.Random) -> bytes:
    value = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1E+309", b"9" * 400, b"1" * 5000])
    where = rng.choice([b'{"a": %s}', b'{"image": "alpine", "x": [1, %s]}', b'{"a": {"b": {"c": %s}}}'])
    return where % value


def _invalid_utf8(rng: random.Random) -> bytes:
    bad = rng.choice([b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82",
                      b"\x80", b"\xf4\x90\x80\x80"])
    cut = rng.randrange(2, len(VALID_TEXT) - 2)
    return VALID_TEXT[:cut] + bad + VALID_TEXT[cut:]


def _nul(rng: random.Random) -> bytes:
    return rng.choice([
        b'{"a": "x\x00y"}', b'\x00{"a": 1}', b'{"a": 1}\x00', b'{"a\x00b": 1}', b"\x00",
        VALID_TEXT[:10] + b"\x00" * rng.randrange(1, 100) + VALID_TEXT[10:],
    ])


def _binary(rng: random.Random) -> bytes:
    return b"{\x01" + rng.randbytes(rng.randrange(0, 300))  # \x01: never JSON, whatever follows


def _oversize(rng: random.Random) -> bytes:
    padding = OVERSIZE - len(b'{"a": ""}')
    return b'{"a": "' + b"x" * (padding + rng.randrange(0, 1000)) + b'"}'


KINDS: dict[str, Callable[[random.Random], bytes]] = {
    "truncated": _truncated,
    "syntax": _syntax,
    "not-an-object": _not_an_object,
    "deep-nesting": _deep,
    "nan-infinity-range": _not_json_numbers,
    "invalid-utf8": _invalid_utf8,
    "nul-bytes": _nul,
    "binary": _binary,
    "oversize": _oversize,
}


def malformed_bodies(count: int, *, seed: int = 12, oversize_every: int = 500) -> Iterator[tuple[str, bytes]]:
    """`count` (kind, body) pairs cycling through the kinds; an oversize body only every `oversize_every`
    (each one is 16 MiB on the wire)."""
    rng = random.Random(seed)
    names = [name for name in KINDS if name != "oversize"]
    for index in range(count):
        name = "oversize" if index % oversize_every == oversize_every - 1 else names[index % len(names)]
        yield name, KINDS[name](rng)


def one_of_each(seed: int = 0) -> list[tuple[str, bytes]]:
    """Every kind once (a warm-up that touches each code path before memory is measured)."""
    rng = random.Random(seed)
    return [(name, make(rng)) for name, make in KINDS.items()]
