"""A body template that is a JSON document: event values go in as JSON data, never as JSON syntax.

Plain substitution (`eventpath.substitute`) pastes an event's text as it is, so an image named
`alpine", "from": "ATTACKER", "x": "` adds keys to a JSON body and a newline makes it invalid. A
template that is JSON is therefore compiled once, at load time, into literal text and slots, each
slot knowing where its `event.input.<path>` reference stands:

- inside a JSON string (`"image: event.input.image"`): the value's text (as plain substitution
  gives it) is JSON-escaped, without quotes of its own, so it stays inside that string;
- as a whole JSON value (`{"count": event.input.count}`): the value is encoded with `json.dumps`
  (a string becomes a quoted string, a number a number, an object an object; a missing path `null`).

A template is JSON when, with its value references standing for `null`, it parses as a JSON object
or array. Rendering then always yields valid JSON with exactly the template's keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from postee.values.eventpath import REFERENCE_RE, lookup, value_text

_STRING = r'"(?:[^"\\]|\\.)*"'
_SCAN = re.compile(rf"(?P<string>{_STRING})|(?P<reference>{REFERENCE_RE.pattern})", re.DOTALL)
"""A JSON string (references inside it are found afterwards), or a reference outside any string."""

_JSON_TYPES = (dict, list, str, int, float, bool, type(None))


class NotJsonTemplate(ValueError):
    """The template is not a JSON object or array (with its references standing for values)."""


@attrs.frozen
class Slot:
    """Where one `event.input.<path>` reference stands: inside a JSON string, or as a whole value."""

    path: str
    in_string: bool

    def render(self, event: Mapping[str, Any]) -> str:
        value = lookup(event, self.path)
        if self.in_string:
            return _dumps(value_text(value))[1:-1]
        if not isinstance(value, _JSON_TYPES):  # only a missing path gives a value that is not JSON data
            return "null"
        return _dumps(value)


@attrs.frozen
class JsonTemplate:
    """A compiled JSON body template: literal JSON text and `Slot`s, in order."""

    parts: tuple[str | Slot, ...]

    def render(self, event: Mapping[str, Any]) -> str:
        return "".join(part if isinstance(part, str) else part.render(event) for part in self.parts)


def _dumps(value: Any) -> str:
    """Compact JSON, non-ASCII as is; all escaped when the value holds lone surrogates (no UTF-8 for them)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"))
    return text


def compile_json_template(text: str) -> JsonTemplate:
    """`text` as a `JsonTemplate`; `NotJsonTemplate` (saying why) when it is not a JSON object or array."""
    parts: list[str | Slot] = []
    probe: list[str] = []  # the template with each value reference as `null`, padded to keep positions
    position = 0
    for match in _SCAN.finditer(text):
        literal = text[position : match.start()]
        parts.append(literal)
        probe.append(literal)
        if match["string"] is not None:
            _split_string(match["string"], parts)
            probe.append(match["string"])
        else:
            reference = match["reference"]
            parts.append(Slot(REFERENCE_RE.fullmatch(reference)[1], in_string=False))  # type: ignore[index]
            probe.append("null".ljust(len(reference)))
        position = match.end()
    parts.append(text[position:])
    probe.append(text[position:])
    try:
        document = json.loads("".join(probe))
    except json.JSONDecodeError as exc:
        raise NotJsonTemplate(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(document, dict | list):
        raise NotJsonTemplate(f"a JSON document is an object or an array, not a {type(document).__name__}")
    return JsonTemplate(tuple(part for part in parts if part != ""))


def _split_string(string: str, parts: list[str | Slot]) -> None:
    """Append a JSON string's literal text and the slots of the references inside it."""
    position = 0
    for match in REFERENCE_RE.finditer(string):
        parts.append(string[position : match.start()])
        parts.append(Slot(match[1], in_string=True))
        position = match.end()
    parts.append(string[position:])


def is_json_media_type(content_type: str) -> bool:
    """True for `application/json` and `*/*+json` media types (parameters such as charset ignored)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
