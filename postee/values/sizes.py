"""Postee's size syntax: "10MB", "1 GB", "512KB", bytes as a plain number (binary multiples).

Used by the config (`max-db-size`). The parser raises a ValueError that says what was given and what
is expected; the config loader prefixes it with the key's path.
"""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Bytes from "10MB", "1 GB", "512KB", "1000" or 1000 (binary multiples). Negative is an error."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '10MB', not {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a size cannot be negative ({value!r})")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size like '10MB', not {value!r}")
    match = _SIZE_RE.match(value)
    if match:
        number, unit = match.groups()
        factor = _SIZE_UNITS.get(unit.lower())
        if factor is not None:
            return int(float(number) * factor)
    raise ValueError(f"invalid size {value!r}: use bytes or a value like '512KB', '10MB', '1GB'")
