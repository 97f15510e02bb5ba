"""`event.input.<dotted.path>` references: values of the raw event pasted into an action's text.

Postee's http action replaces one such reference, and only at the end of a line; here every
reference is replaced, anywhere, several per line. Paths walk mappings by key and lists by index
(`event.input.Resources.0.Name`). A missing path becomes "", a string is pasted as is, any other
value as compact JSON. The kubernetes action (labels, annotations) uses the same rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

REFERENCE_PREFIX = "event.input."
_KEY = r"[A-Za-z0-9_]+(?:-(?!event\.input\.)[A-Za-z0-9_]+)*"
REFERENCE_RE = re.compile(rf"event\.input\.({_KEY}(?:\.{_KEY})*)")
"""A reference: the prefix, then dot-separated keys (letters, digits, `_`, inner `-`). A trailing "." (end of a
sentence) is not part of it, nor is a "-" that joins two references (`event.input.a-event.input.b`)."""

_MISSING = object()


def lookup(event: Any, path: str) -> Any:
    """The value at dotted `path` in `event`, or `_MISSING`."""
    value = event
    for key in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(key, _MISSING)
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes) and key.isdigit():
            index = int(key)
            value = value[index] if index < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def value_text(value: Any) -> str:
    """How a value is pasted: strings as is, missing as "", anything else as compact JSON."""
    if value is _MISSING:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def resolve(event: Any, path: str) -> str:
    """The text for one path (without the `event.input.` prefix)."""
    return value_text(lookup(event, path))


def substitute(text: str, event: Mapping[str, Any]) -> str:
    """`text` with every `event.input.<path>` replaced by that value of `event`."""
    if REFERENCE_PREFIX not in text:
        return text
    return REFERENCE_RE.sub(lambda match: resolve(event, match.group(1)), text)
