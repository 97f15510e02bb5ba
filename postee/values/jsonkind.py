"""The JSON name of a decoded value's kind, for error messages ("got a JSON array")."""

from __future__ import annotations

from typing import Any


def json_kind(value: Any) -> str:
    """"object", "array", "string", "boolean", "null" or "number" for a value from `json.loads`."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
