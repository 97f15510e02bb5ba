"""Postee's duration syntax: "10s", "2m", "1h", "2 d", "1h30m", or plain seconds.

Postee parses durations itself rather than with Go's `time.ParseDuration`, so a space between number
and unit ("2 d") and bare numbers meaning seconds are valid. This parser accepts that, and compound
values ("1h30m", "1d 12h"). The config loader (the routes' aggregation and dedup timeouts) and the
actions (`timeout`, `retry-backoff`) both read durations with it.
"""

from __future__ import annotations

import math
import re

UNIT_SECONDS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
"""Accepted units (case-insensitive) and their length in seconds."""

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_RE = re.compile(rf"^{_NUMBER}$")
_PART_RE = re.compile(rf"\s*({_NUMBER})\s*({'|'.join(sorted(UNIT_SECONDS, key=len, reverse=True))})\s*", re.IGNORECASE)

_EXAMPLES = "a number of seconds or a duration like '10s', '2m', '1h', '2 d', '1h30m'"


class DurationError(ValueError):
    """A value is not a duration. The message says what was given and what is expected."""


def parse_duration(value: object) -> float:
    """Seconds (a float, never negative) from a Postee duration or a plain number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DurationError(f"expected {_EXAMPLES}, not {value!r}")
    if isinstance(value, str):
        seconds = _parse_text(value)
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise DurationError(f"a duration must be finite, not {value!r}")
    if seconds < 0:
        raise DurationError(f"a duration cannot be negative ({value!r})")
    return seconds


def _parse_text(value: str) -> float:
    text = value.strip()
    negative = text.startswith("-")
    if negative:
        text = text[1:]
    if _PLAIN_RE.match(text):
        seconds = float(text)
    else:
        seconds = 0.0
        position = 0
        for match in _PART_RE.finditer(text):
            if match.start() != position:
                break
            seconds += float(match.group(1)) * UNIT_SECONDS[match.group(2).lower()]
            position = match.end()
        if position == 0 or position != len(text):
            raise DurationError(f"invalid duration {value!r}: use {_EXAMPLES}")
    return -seconds if negative and seconds else seconds


def format_duration(seconds: float) -> str:
    """A compact Postee-style spelling of `seconds` ("1d2h3m4.5s", "0s"), to the nanosecond.

    `parse_duration` reads it back; logs and `postee check` use it to show durations as users write them.
    """
    if seconds < 0 or not math.isfinite(seconds):
        raise DurationError(f"cannot format {seconds!r} as a duration")
    parts = []
    remaining = seconds
    for unit in ("d", "h", "m"):
        size = UNIT_SECONDS[unit]
        whole = int(remaining // size)
        if whole:
            parts.append(f"{whole}{unit}")
            remaining -= whole * size
    fraction = f"{remaining:.9f}".rstrip("0").rstrip(".")
    if fraction != "0" or not parts:
        parts.append(f"{fraction}s")
    return "".join(parts)
