"""The checks a message passes on the Trio side before it is queued for nats-py: subject, headers, size.

They run in `NatsTransport.publish` and `request`, so a message NATS would refuse is the caller's
`TransportError` at once, not a failure on the asyncio thread later (where it could only be
counted). Subjects and header names repeat (a handful per application) and these checks run once
per message, so what passed is remembered in small bounded caches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from actors.errors import TransportError
from actors.transport import validate_subject

__all__ = ["check_headers", "check_size", "check_subject"]

#: Publish subjects remembered as valid; the cache is emptied when full (subjects built per event
#: must not grow it without bound).
SUBJECT_CACHE_SIZE = 4096
#: Header names remembered as valid; past this many, names are checked every time.
HEADER_CACHE_SIZE = 1024

_HEADER_KEY_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: `NATS/1.0\r\n` before the headers and `\r\n` after them, as nats-py writes them.
_HDR_OVERHEAD = len(b"NATS/1.0\r\n") + 2

_VALID_KEYS: set[str] = set()
_VALID_SUBJECTS: dict[str, None] = {}


def check_subject(subject: str) -> None:
    """`validate_subject` for publishes (no wildcards), with a small cache: subjects repeat."""
    if subject in _VALID_SUBJECTS:
        return
    validate_subject(subject, wildcards=False)
    if len(_VALID_SUBJECTS) >= SUBJECT_CACHE_SIZE:
        _VALID_SUBJECTS.clear()
    _VALID_SUBJECTS[subject] = None


def check_headers(headers: Mapping[str, str] | None) -> tuple[dict[str, str] | None, int]:
    """Validated headers (None when empty) and their encoded size, as nats-py will write them."""
    if not headers:
        return None, 0
    out: dict[str, str] = {}
    size = _HDR_OVERHEAD
    for key, value in headers.items():
        if key not in _VALID_KEYS:
            if not isinstance(key, str) or not _HEADER_KEY_RE.fullmatch(key):
                raise TransportError(f"invalid header name {key!r}")
            if len(_VALID_KEYS) < HEADER_CACHE_SIZE:
                _VALID_KEYS.add(key)
        if not isinstance(value, str):
            raise TransportError(f"header {key!r}: values must be str")
        if "\r" in value or "\n" in value:
            raise TransportError(f"header {key!r}: value must not contain CR or LF")
        out[key] = value
        size += len(key) + 4 + (len(value) if value.isascii() else len(value.encode()))
    return out, size


def check_size(subject: str, data: bytes, header_size: int, max_payload: int) -> None:
    """`TransportError` when payload and headers exceed the server's `max_payload` (it would close
    the connection over it)."""
    size = len(data) + header_size
    if size > max_payload:
        raise TransportError(
            f"message on {subject!r} is {size} bytes (payload {len(data)} + headers), over the server's "
            f"max_payload of {max_payload} bytes"
        )
