"""Event keys from dotted property paths, built like Postee's `GetMessageUniqueId`.

Used by route deduplication (`unique-message-props`) and by actions that need a stable key for an
event (PagerDuty's dedup key), so it lives with the shared values rather than in either of them.

For each property in `unique-message-props` (a dotted path), walk the event; when a step meets an
array, take its first element (so `resources.resource.name` works on Aqua scans). The values found
are formatted as Go's `fmt` `%v` prints decoded JSON (numbers are float64 there: 7 → "7",
178041649 → "1.78041649e+08") and joined with "-". Properties that are missing are skipped; when
all are missing there is no key and the event is not deduplicated (Postee drops such events).
The key is scoped per route by the store (Postee's global key suppressed an event for every route
once one route had seen it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

_MISSING = object()


def dedup_key(event: Mapping[str, Any], props: Sequence[str]) -> str | None:
    """The dedup key of `event` for `props`, or None when none of the props is present."""
    values = []
    for prop in props:
        value = _lookup(event, prop)
        if value is _MISSING or value is None:
            continue
        values.append(go_format(value))
    return "-".join(values) if values else None


def _lookup(event: Any, path: str) -> Any:
    value: Any = event
    for step in path.split("."):
        if isinstance(value, list):
            if not value:
                return _MISSING
            value = value[0]
        if not isinstance(value, Mapping) or step not in value:
            return _MISSING
        value = value[step]
    if isinstance(value, list):
        return value[0] if value else _MISSING
    return value


def go_format(value: Any) -> str:
    """`fmt.Sprintf("%v", v)` for a value decoded by Go's encoding/json."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return go_float(float(value))
    if value is None:
        return "<nil>"
    # Maps and slices: Go prints map[k:v] / [a b]; a stable JSON rendering serves as well for a key.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def go_float(x: float) -> str:
    """Go's `%v` for a float64: shortest digits, exponent form when the exponent is < -4 or >= 6."""
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exponent, int)
    nd = len(digits)
    exp10 = nd + exponent - 1
    text_digits = "".join(map(str, digits))
    prefix = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = text_digits[0] + ("." + text_digits[1:] if nd > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    return prefix + format(Decimal(repr(abs(x))).normalize(), "f")
