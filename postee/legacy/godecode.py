"""Decode parsed JSON into a fixed model exactly as Go 1.18's `encoding/json` decodes into structs.

Postee's legacy renderers and its Slack action unmarshal JSON into Go structs, and the goldens depend
on Go's rules, which differ from "read the keys you know" in ways a user can hit:

- a key fills a field when it equals the field's JSON name exactly or ignoring ASCII case (plus two
  Unicode oddities: `ſ` (U+017F) folds to `s`, the Kelvin sign (U+212A) to `k`); every other key is
  ignored, and its value is never looked at;
- when several keys fill one field, each later one is decoded *on top of* the earlier ones: an object
  updates the struct field by field, `null` leaves a string, number, bool or struct as it was (but
  empties an array and resets a pointer), and an array is decoded element by element into the slice
  Go already holds, in place, which keeps stale elements within its capacity (`GoSlice` reproduces
  the growth policy to get this right);
- the order is the order the keys reach the decoder: for an event Postee first parses into a Go map
  and marshals it again, so keys come sorted (a `Mapping` here); for a text Postee decodes directly,
  they come as written (`Pairs`, from `loads_pairs`);
- integers go through float64: the value is written back in Go's shortest fixed notation, which must
  parse as an int64 (`3.0` is 3, `1.5` and `1e20` are errors, 2**60 becomes 1152921504606847000);
- any value of the wrong JSON type for a known field is an error (`GoDecodeError`, with the path);
- lone UTF-16 surrogates (what Python's `json` gives for `"\\ud800"`) become U+FFFD, as Go does.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
EXACT_FLOAT_INT = 2**53
"""Integers up to this magnitude survive the float64 round trip unchanged."""

GO_FIXED_MIN = 1e-6
GO_FIXED_MAX = 1e21
"""Go writes a float64 in fixed notation only for GO_FIXED_MIN <= |x| < GO_FIXED_MAX (else `1e+21`)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_KEY_FOLD = str.maketrans({"\u017f": "s", "\u212a": "k"})


class GoDecodeError(ValueError):
    """A value has the wrong JSON type for the model field at `path` (Go's UnmarshalTypeError)."""

    def __init__(self, path: str, expected: str, got: str) -> None:
        super().__init__(f"{path or 'the document'}: expected {expected}, got {got}")
        self.path = path


class Kind(enum.Enum):
    """The scalar field types of the models."""

    STRING = "a string"
    BOOL = "true or false"
    INT = "an integer"


@attrs.frozen
class Struct:
    """A Go struct: its fields as (JSON name, schema), in declaration order."""

    name: str
    fields: tuple[tuple[str, Schema], ...]
    _by_name: dict[str, tuple[str, Schema]] = attrs.field(init=False, eq=False, repr=False)
    _by_folded_name: dict[str, tuple[str, Schema]] = attrs.field(init=False, eq=False, repr=False)
    _zero: dict[str, Any] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {name: (name, schema) for name, schema in self.fields})
        object.__setattr__(self, "_by_folded_name", {name.lower(): (name, schema) for name, schema in self.fields})
        object.__setattr__(self, "_zero", {name: zero_value(schema) for name, schema in self.fields})

    def field_for(self, key: str) -> tuple[str, Schema] | None:
        """The field `key` fills, by exact name or Go's case folding; None for an unknown key."""
        exact = self._by_name.get(key)
        if exact is not None:
            return exact
        folded = key.translate(_KEY_FOLD)
        if not folded.isascii():
            return None
        return self._by_folded_name.get(folded.lower())

    def zero(self) -> dict[str, Any]:
        """The zero value, shared: decoded structs are new dicts, never this one changed in place."""
        return self._zero


@attrs.frozen
class Slice:
    """A Go slice of `element` (nil when absent or `null`)."""

    element: Schema


@attrs.frozen
class Pointer:
    """A Go pointer to a struct (nil when absent or `null`, allocated by the first object)."""

    target: Struct


Schema = Kind | Struct | Slice | Pointer


@attrs.define
class GoSlice:
    """A Go slice as the decoder sees it: a backing array (its capacity) and a length.

    Elements past `length` are kept, because Go's decoder reuses them: a second array for the same
    field is decoded element by element on top of what the first one left. Like Go, the decoder
    changes the backing list in place and copies it only to grow it: copying it for every array
    would make many short arrays on top of one long one cost their number times its length.
    """

    backing: list[Any]
    length: int
    element: Schema

    @property
    def items(self) -> tuple[Any, ...]:
        """The elements (an unused slot of the backing array, None, is the element's zero value)."""
        return tuple(zero_value(self.element) if item is None else item for item in self.backing[: self.length])


class Pairs(list[tuple[str, Any]]):
    """A JSON object whose members keep their text order and duplicates (from `loads_pairs`)."""


def loads_pairs(text: str) -> Any:
    """Parse JSON text as Go's decoder reads it: objects as `Pairs`; `NaN`/`Infinity` are not JSON.

    Raises ValueError (a `json.JSONDecodeError`) for text that is not JSON.
    """
    return json.loads(text, object_pairs_hook=Pairs, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def zero_value(schema: Schema) -> Any:
    if schema is Kind.STRING:
        return ""
    if schema is Kind.BOOL:
        return False
    if schema is Kind.INT:
        return 0
    if isinstance(schema, Struct):
        return schema.zero()
    return None  # nil slice or pointer


def slice_items(value: GoSlice | None) -> tuple[Any, ...]:
    """The elements of a decoded slice (none for nil)."""
    return () if value is None else value.items


def go_string(text: str) -> str:
    """`text` as Go holds it: every lone surrogate (invalid UTF-16/UTF-8 in the input) is U+FFFD."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def go_number_text(value: int | float) -> str:
    """How Go's `json.Marshal` writes a float64 (shortest digits; fixed notation in [1e-6, 1e21))."""
    number = float(value)
    magnitude = abs(number)
    if magnitude != 0 and (magnitude < GO_FIXED_MIN or magnitude >= GO_FIXED_MAX):
        return repr(number).replace("e-0", "e-")
    fixed = format(Decimal(repr(number)), "f")
    return fixed.rstrip("0").rstrip(".") if "." in fixed else fixed


def go_int(value: int | float, path: str) -> int:
    """The int64 Go's decoder makes of a JSON number that went through float64 and back to text."""
    if isinstance(value, int) and -EXACT_FLOAT_INT <= value <= EXACT_FLOAT_INT:
        return value
    try:
        number = float(value)
    except OverflowError:
        raise GoDecodeError(path, "an integer", "a number beyond the float64 range") from None
    if not math.isfinite(number):
        raise GoDecodeError(path, "an integer", "a number beyond the float64 range")
    if number == 0:
        return 0
    magnitude = abs(number)
    if magnitude < GO_FIXED_MIN or magnitude >= GO_FIXED_MAX or not number.is_integer():
        raise GoDecodeError(path, "an integer", f"the number {go_number_text(number)}")
    result = int(Decimal(repr(number)))
    if not INT64_MIN <= result <= INT64_MAX:
        raise GoDecodeError(path, "an integer that fits in 64 bits", f"the number {go_number_text(number)}")
    return result


def json_kind(value: Any) -> str:
    if isinstance(value, Mapping | Pairs):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def members(value: Mapping[str, Any] | Pairs) -> list[tuple[str, Any]]:
    """An object's members in the order Go's decoder applies them (see the module docstring)."""
    if isinstance(value, Pairs):
        return [(go_string(key), item) for key, item in value]
    return sorted(((go_string(key), item) for key, item in value.items()), key=lambda member: member[0])


def decode(schema: Schema, value: Any, current: Any = None, path: str = "") -> Any:
    """`value` decoded into `schema` on top of `current` (the zero value when None is given for a struct).

    Structs come back as dicts of their fields, slices as `GoSlice` (or None for nil), pointers as
    the target's dict (or None). Raises `GoDecodeError` for a type mismatch anywhere.

    As in Go, the slices of `current` are decoded into in place (their backing lists change): pass
    a value only to decode on top of it, never one still needed as it was.
    """
    if current is None and isinstance(schema, Kind | Struct):
        current = zero_value(schema)
    if value is None:
        return None if isinstance(schema, Slice | Pointer) else current
    if isinstance(schema, Kind):
        return _decode_scalar(schema, value, path)
    if isinstance(schema, Pointer):
        return decode(schema.target, value, current, path)
    if isinstance(schema, Struct):
        if not isinstance(value, Mapping | Pairs):
            raise GoDecodeError(path, "an object", json_kind(value))
        result = dict(current)
        for key, item in members(value):
            field = schema.field_for(key)
            if field is not None:
                name, field_schema = field
                result[name] = decode(field_schema, item, result[name], f"{path}.{key}" if path else key)
        return result
    if isinstance(value, Pairs) or not isinstance(value, list):
        raise GoDecodeError(path, "an array", json_kind(value))
    return _decode_array(schema, value, current, path)


def _decode_scalar(kind: Kind, value: Any, path: str) -> Any:
    if kind is Kind.STRING and isinstance(value, str):
        return go_string(value)
    if kind is Kind.BOOL and isinstance(value, bool):
        return value
    if kind is Kind.INT and isinstance(value, int | float) and not isinstance(value, bool):
        return go_int(value, path)
    raise GoDecodeError(path, kind.value, json_kind(value))


def _decode_array(schema: Slice, value: list[Any], current: GoSlice | None, path: str) -> GoSlice:
    """Go's `decodeState.array` into a slice: reuse the backing array in place, grow it by half when full.

    `current` is changed in place and returned (a new slice for nil or `[]`): its holder, the struct
    being decoded, is the only one that refers to it.
    """
    if not value:
        return GoSlice([], 0, schema.element)  # Go makes a new empty slice: nothing stale survives
    result = current if current is not None else GoSlice([], 0, schema.element)
    for index, item in enumerate(value):
        backing = result.backing
        if index >= len(backing):
            capacity = max(len(backing) + len(backing) // 2, 4)
            # Go copies the slice's length, not its capacity, into the new array; None is the zero
            # value, made on use.
            result.backing = backing[: result.length] + [None] * (capacity - result.length)
            backing = result.backing
        result.length = max(result.length, index + 1)
        backing[index] = decode(schema.element, item, backing[index], f"{path}[{index}]")
    result.length = len(value)
    return result
