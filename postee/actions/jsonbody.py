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
or array. Rendering then always yields valid JSON with exactly the template's keys: JSON has no NaN
or infinity, so such a number standing as a value (even nested) is rendered `null`.

A body can also be a sequence of JSON documents: NDJSON / JSON Lines (an Elasticsearch `_bulk`
call), one per line, or an RFC 7464 JSON text sequence, each record after an RS (0x1E). Pasting raw
text there would let a newline in a value add a line, that is an operation, so each line (record)
is compiled as above. `compile_body_template` decides, from the media type and the template, how a
body is rendered, and refuses a template that looks like JSON but cannot be compiled.
"""

from __future__ import annotations

import json
import math
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
    """Compact, valid JSON, non-ASCII as is; all escaped when the value holds lone surrogates (no
    UTF-8 for them). A NaN or an infinity (which a lenient parser lets into an event) becomes `null`."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:  # an out-of-range float somewhere inside
        value = _finite(value)
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text


def _finite(value: Any) -> Any:
    """`value` with every NaN and infinity, however deep, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def compile_json_template(text: str, first_line: int = 1) -> JsonTemplate:
    """`text` as a `JsonTemplate`; `NotJsonTemplate` (saying why and where) when it is not a JSON object
    or array. `first_line` is the line `text` starts at in a larger body, for the error's position."""
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
        raise NotJsonTemplate(f"{exc.msg} at line {exc.lineno + first_line - 1} column {exc.colno}") from None
    if not isinstance(document, dict | list):
        line = first_line + text[: len(text) - len(text.lstrip())].count("\n")
        raise NotJsonTemplate(
            f"a JSON document is an object or an array, not a {type(document).__name__} (line {line})"
        )
    return JsonTemplate(tuple(part for part in parts if part != ""))


def _split_string(string: str, parts: list[str | Slot]) -> None:
    """Append a JSON string's literal text and the slots of the references inside it."""
    position = 0
    for match in REFERENCE_RE.finditer(string):
        parts.append(string[position : match.start()])
        parts.append(Slot(match[1], in_string=True))
        position = match.end()
    parts.append(string[position:])


def compile_sequence_template(text: str, separator: str) -> JsonTemplate:
    """`text` as a sequence of JSON documents split by `separator` ("\\n" for NDJSON, RS for
    json-seq), each compiled by `compile_json_template`; blank pieces and separators stay as they are.
    `NotJsonTemplate` gives the line (in `text`) where the first piece that is not JSON breaks."""
    parts: list[str | Slot] = []
    line = 1
    for index, piece in enumerate(text.split(separator)):
        if index:
            parts.append(separator)
            line += separator.count("\n")
        if piece.strip():
            parts.extend(compile_json_template(piece, first_line=line).parts)
        else:
            parts.append(piece)
        line += piece.count("\n")
    return JsonTemplate(tuple(part for part in parts if part != ""))


NDJSON_MEDIA_TYPES = frozenset(
    f"{prefix}/{x}{name}"
    for prefix in ("application", "text")
    for x in ("", "x-")
    for name in ("ndjson", "jsonl", "jsonlines", "json-lines", "ldjson")
)
"""Media types of one JSON document per line (no registered name: these are the ones in use)."""

JSON_SEQ_MEDIA_TYPE = "application/json-seq"
RECORD_SEPARATOR = "\x1e"


class UnsafeBodyTemplate(ValueError):
    """A body template with event references that cannot be rendered safely; the message says why and how to fix it."""


_WHERE_REFERENCES_GO = "an event.input.<path> reference may stand inside a JSON string or as a whole JSON value"


def compile_body_template(text: str, content_type: str = "") -> JsonTemplate | None:
    """How an `http` body template is rendered: a `JsonTemplate` (values escaped as JSON data), or None
    for plain substitution. Only a template with references matters (nothing is inserted otherwise):

    - an NDJSON or json-seq media type: the template is compiled line by line (record by record);
    - otherwise a template that is one JSON document, or several, one per line, is compiled;
    - a template that is neither, but starts with `{` or `[` or has a JSON media type, was meant as
      JSON, and pasting raw text into it would be injectable: `UnsafeBodyTemplate`;
    - anything else (a plain text body) keeps plain substitution.
    """
    if not REFERENCE_RE.search(text):
        return None
    media = media_type(content_type)
    if media == JSON_SEQ_MEDIA_TYPE:
        try:
            return compile_sequence_template(text, RECORD_SEPARATOR)
        except NotJsonTemplate as exc:
            raise UnsafeBodyTemplate(
                f"the Content-Type header says {content_type!r}, but the body is not a JSON text sequence ({exc}),"
                f" so event values could not be inserted safely: each record is an RS character and one JSON"
                f" document, and {_WHERE_REFERENCES_GO}"
            ) from None
    if media in NDJSON_MEDIA_TYPES:
        try:
            return compile_sequence_template(text, "\n")
        except NotJsonTemplate as exc:
            raise UnsafeBodyTemplate(
                f"the Content-Type header says {content_type!r}, but the body is not NDJSON ({exc}), so event"
                f" values could not be inserted safely: each non-empty line must be one JSON object or array,"
                f" and {_WHERE_REFERENCES_GO}"
            ) from None
    try:
        return compile_json_template(text)
    except NotJsonTemplate as whole:
        try:
            return compile_sequence_template(text, "\n")
        except NotJsonTemplate as by_line:
            reason = _why_not_json(text, whole, by_line)
    if is_json_media_type(media):
        raise UnsafeBodyTemplate(
            f"the Content-Type header says {content_type!r}, but the body is {reason}, so event values could"
            f" not be inserted safely. Fix the JSON: {_WHERE_REFERENCES_GO}"
        )
    if text.lstrip().startswith(("{", "[")):
        raise UnsafeBodyTemplate(
            f"the body starts with {text.lstrip()[0]!r} but is {reason}; pasting event values into it as raw"
            f" text would let them change its structure. Fix the JSON ({_WHERE_REFERENCES_GO}; no trailing"
            " commas; NDJSON is one document per line), or, for a plain text body, do not start it with '{' or '['"
        )
    return None


def _why_not_json(text: str, whole: NotJsonTemplate, by_line: NotJsonTemplate) -> str:
    """The error for what the user most likely meant: NDJSON when the first line alone is a document."""
    first = next(line for line in text.split("\n") if line.strip())
    try:
        compile_json_template(first)
    except NotJsonTemplate:
        return f"not a JSON document ({whole})"
    return f"neither one JSON document nor NDJSON ({by_line})"


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value, lower case, without parameters such as charset."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_media_type(content_type: str) -> bool:
    """True for `application/json` and `*/*+json` media types (parameters such as charset ignored)."""
    media = media_type(content_type)
    return media == "application/json" or media.endswith("+json")
