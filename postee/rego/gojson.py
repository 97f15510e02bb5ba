"""Go-compatible JSON encoding: `json.Marshal` and `json.MarshalIndent`, byte for byte.

Postee is written in Go, so every JSON text it produces from a template result (a non-string `result`,
the custom Rego builtin `jsonformat`) is what Go's `encoding/json` writes. Users diff those texts,
tickets are deduplicated on them, and our golden tests compare them byte for byte, so we reproduce Go's
choices rather than Python's:

- object keys sorted (byte order of UTF-8, which is code point order), no spaces in compact form;
- `<`, `>`, `&`, U+2028 and U+2029 written as `\\u003c`, `\\u003e`, `\\u0026`, `\\u2028`, `\\u2029`
  (Go's HTML-safe default); other non-ASCII text kept as UTF-8; invalid text (a lone surrogate, which
  is what Python gives for a JSON `"\\ud800"`) written as U+FFFD like Go does for invalid UTF-8;
- floats formatted like Go's float64 encoder: shortest round-trip digits, `3` not `3.0`, fixed notation
  for 1e-6 <= |x| < 1e21 and exponent form (`1e+21`, `1e-7`) outside it; NaN and infinities are errors.
- `MarshalIndent` puts `prefix` after every newline, not before the first line, and writes empty
  arrays and objects as `[]` and `{}`.

It runs on whole Trivy reports, so it is `json.dumps` (C-accelerated in compact form) plus targeted
post-processing: character replacements that are safe because those characters can only occur inside
string literals, and a float rewrite that first checks, with one regex scan, whether any number in the
output can differ from Go at all (the common case is that none can, and nothing more is done).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

DEFAULT_INDENT = " "
"""Postee's `jsonformat` calls `json.MarshalIndent(x, "", " ")`: a one-space indent."""

# Go's float64 encoder switches to exponent form outside [1e-6, 1e21).
_GO_FIXED_MIN = 1e-6
_GO_FIXED_MAX = 1e21

# Characters Go escapes although JSON does not require it. They are never structural in JSON text,
# so a plain replace over the encoded output only touches string contents.
_GO_EXTRA_ESCAPES = (
    ("&", "\\u0026"),
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# A float as Python writes it that Go would write differently: a whole number (`3.0`), or any
# exponent form (Python uses it from 1e16 and below 1e-4, Go from 1e21 and below 1e-6, and Go also
# drops the leading zero of a negative exponent). This may also match inside a string literal; it is
# only the cheap test that decides whether the exact, string-aware rewrite below has to run.
_MAYBE_GO_DIFFERENT = re.compile(r"\.0(?![0-9])|[0-9]e[-+]")
# One match per float token: everything before it that is not a float (string literals, punctuation,
# whitespace, integers) is consumed possessively as group 1, so the callback runs once per float rather
# than once per string. The float is optional so that the last match runs to the end of the text:
# matches are contiguous and never start inside a string literal.
_UP_TO_FLOAT = re.compile(
    r"((?:"
    r'"[^"\\]*(?:\\.[^"\\]*)*"'  # a string literal
    r'|[^"0-9-]+'  # punctuation, whitespace, true/false/null
    r"|-?[0-9]+(?![.0-9e])"  # an integer
    r")*+)"
    r"(-?[0-9]+(?:\.[0-9]+)?(?:e[-+][0-9]+)?)?"  # a float as Python's repr writes it
)


def _go_float(text: str) -> str:
    """Rewrite one float token from Python's `repr` form into Go's `encoding/json` form."""
    value = float(text)
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < _GO_FIXED_MIN or magnitude >= _GO_FIXED_MAX):
        # Python's repr already uses exponent form here, with the same shortest digits as Go;
        # Go then shortens `e-07` to `e-7` (only for negative exponents).
        go = repr(value)
        if "e-0" in go:
            go = go.replace("e-0", "e-")
        return go
    fixed = format(Decimal(repr(value)), "f")
    if "." in fixed:
        fixed = fixed.rstrip("0").rstrip(".")
    return fixed


def _fix_float(match: re.Match[str]) -> str:
    before, number = match.groups()
    return before if number is None else before + _go_float(number)


def _go_postprocess(text: str) -> str:
    if _MAYBE_GO_DIFFERENT.search(text) is not None:
        text = _UP_TO_FLOAT.sub(_fix_float, text)
    for raw, escaped in _GO_EXTRA_ESCAPES:
        if raw in text:  # a substring test is much faster than a regex scan of a big report
            text = text.replace(raw, escaped)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _LONE_SURROGATE.sub("\ufffd", text)
    return text


def _rego_order(value: Any) -> tuple[int, Any]:
    """Sort key for set members in Rego's term order: null < bool < number < string < others."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    return (4, marshal(value))


def _encode_default(value: Any) -> Any:
    """Rego sets (Python sets from an engine) are written as sorted arrays, as OPA does."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=_rego_order)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def marshal(value: Any) -> str:
    """Encode `value` exactly as Go's `json.Marshal` would (see the module docstring).

    Raises `ValueError` for NaN or infinite floats (Go's `UnsupportedValueError`) and `TypeError` for
    values that are not JSON (including objects whose keys mix strings and numbers).
    """
    text = json.dumps(
        value,
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
        default=_encode_default,
    )
    return _go_postprocess(text)


def marshal_indent(value: Any, prefix: str = "", indent: str = DEFAULT_INDENT) -> str:
    """Encode `value` exactly as Go's `json.MarshalIndent(value, prefix, indent)` would.

    This is what Postee's custom Rego builtin `jsonformat` returns (`prefix=""`, `indent=" "`).
    """
    text = json.dumps(
        value,
        ensure_ascii=False,
        sort_keys=True,
        indent=indent,
        separators=(",", ": "),
        allow_nan=False,
        default=_encode_default,
    )
    text = _go_postprocess(text)
    if prefix:
        # Newlines inside strings are escaped, so every newline here is a structural one.
        text = text.replace("\n", "\n" + prefix)
    return text
