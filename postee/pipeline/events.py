"""Events as the pipeline carries them, and the ring of recent events behind `GET /events`.

An event is parsed once at intake: the raw bytes are decoded, Postee's backtick rewrite is
applied, and the JSON is checked to be an object. The text as received (after that rewrite, not
re-encoded: key order, spacing and number spelling are the sender's) is kept next to the parsed
value. Route rules get it as their Rego input, a runner reports it upstream as is, and
`GET /events` pastes it into its array, so none of them re-encodes a large scan report once per
route or per request.

The JSON is read as strictly as Postee's Go decoder reads it, so that what a route rule, a template
and an action see is one and the same value whatever Rego engine runs the route:

- `NaN`, `Infinity` and `-Infinity` are not JSON (RFC 8259): refused, as are numbers beyond the
  range of a float (`1e400`, an integer of 309 digits), which Go refuses too;
- a key given twice keeps its last value, as in Go (the Rego engines disagree: regopy keeps the
  first), and a lone UTF-16 surrogate (`"\\ud800"`) becomes U+FFFD, as in Go (left alone, it cannot
  be encoded as UTF-8, for the store, an engine or an action). Only then is the text re-encoded from
  the parsed value, so that every reader of the text sees the same thing.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from postee.runtime import new_id, offload, wall_clock
from postee.values.jsonkind import json_kind

RECENT_EVENTS = 1000
"""How many events `GET /events` shows (Postee keeps the last 1000 too)."""

RECENT_EVENTS_BYTES = 64 * 1024 * 1024
"""Memory the texts behind `GET /events` may take together (the oldest go first). Without it an
outsider posting events of the largest accepted size could make the node hold 1000 × 16 MiB."""

SOURCE_WEBHOOK = "webhook"


class InvalidEvent(ValueError):
    """The body is not an event: not UTF-8, not JSON, or not a JSON object. Says why and where."""


@attrs.frozen
class Event:
    """One received event. `source` is "webhook" or the name of the runner that reported it."""

    id: str
    body: Mapping[str, Any]
    text: str
    received_at: float
    source: str = SOURCE_WEBHOOK
    route: str | None = None
    """The one route to run (an event posted to `POST /tenant/{route}`, also when a runner reports it
    upstream); None: every route."""
    step: int | None = None
    """A continuation (`postee.pipeline.plan`): the step of `route` another side handed this event over
    at; its rule and dedup were decided where it entered. None: a new event."""
    only_step: bool = False
    """A continuation that runs `step` alone (a controller's dispatch), not the steps after it."""
    origin_id: str | None = None
    """A continuation's event id where it entered (its own `id` is per route and step)."""
    entered: str | None = None
    """A continuation's side where it entered: a runner, or "" for the controller (which steps it runs)."""
    step_action: str | None = None
    """A continuation's action at `step`, as the handing side's plan said (found by name after a reload)."""

    @property
    def continues(self) -> bool:
        return self.step is not None


def new_event_id() -> str:
    return new_id()


PARSE_IN_THREAD = 256 * 1024
"""Bodies larger than this are parsed in a worker thread (a 15 MiB scan takes most of a second)."""


async def parse_event_off_loop(raw: bytes, **options: Any) -> Event:
    """`parse_event`, in a worker thread when `raw` is large, so the event loop is never held by it."""
    if len(raw) <= PARSE_IN_THREAD:
        return parse_event(raw, **options)
    return await offload(functools.partial(parse_event, raw, **options))


def parse_event(
    raw: bytes | str,
    *,
    event_id: str | None = None,
    source: str = SOURCE_WEBHOOK,
    received_at: float | None = None,
    route: str | None = None,
) -> Event:
    """Parse a webhook body into an Event, or raise InvalidEvent with the reason.

    Backticks become `'` before parsing, as Postee does (its templates embed values in Markdown).
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"body is not UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    text = text.replace("`", "'")
    body, text = _strict_json(text, may_hold_surrogates=not isinstance(raw, bytes))
    if not isinstance(body, dict):
        raise InvalidEvent(f"an event must be a JSON object, got a JSON {json_kind(body)}")
    return Event(
        id=event_id or new_event_id(),
        body=body,
        text=text,
        received_at=wall_clock() if received_at is None else received_at,
        source=source,
        route=route,
    )


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""An escaped UTF-16 surrogate (`\\ud800`-`\\udfff`): where lone surrogates come from in a decoded body."""
_SURROGATE = re.compile("[\ud800-\udfff]")
_NUMBER_SHOWN = 40
"""Characters of an out-of-range number quoted in the error."""
MAX_DEPTH = 100
"""Deepest nesting of arrays and objects accepted. regorus refuses inputs nested past 126 levels, and no
security tool's report comes near: refusing at intake keeps every engine seeing the same events."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class _NotJson(ValueError):
    """Raised from inside the decoder's hooks: a value that Python reads but JSON (and Go) does not."""


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def _finite_float(spelling: str) -> float:
    value = float(spelling)
    if math.isinf(value):
        raise _NotJson(f"number {_shown(spelling)} is out of range (beyond a 64-bit float)")
    return value


class _Integers:
    """`parse_int`: integers as Python reads them, except that one past 64 bits becomes the float64 Go
    reads (engines differ on them: regorus refuses them, regopy keeps them exact); counts those."""

    def __init__(self) -> None:
        self.converted = 0

    def __call__(self, spelling: str) -> int | float:
        try:
            value = int(spelling)
            as_float = float(value)  # Go reads every number as a float64: past its range, it refuses the event
        except (ValueError, OverflowError):  # ValueError: past Python's own limit on digits
            raise _NotJson(f"number {_shown(spelling)} is out of range (beyond a 64-bit float)") from None
        if INT64_MIN <= value <= INT64_MAX:
            return value
        self.converted += 1
        return as_float


def _too_deep(text: str, value: Any) -> bool:
    """Whether arrays and objects nest deeper than `MAX_DEPTH` in `value` (parsed from `text`).

    A body with fewer openers than that cannot; otherwise the parsed value is walked, containers only."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


def _shown(spelling: str) -> str:
    return spelling if len(spelling) <= _NUMBER_SHOWN else f"{spelling[:_NUMBER_SHOWN]}… ({len(spelling)} characters)"


def _strict_json(text: str, *, may_hold_surrogates: bool) -> tuple[Any, str]:
    """The value of `text` read as Go reads it, and the text to keep for it (re-encoded only if they differ).

    `may_hold_surrogates`: the text did not come from UTF-8 bytes, so it may hold surrogates as such.
    """
    duplicates = False

    def last_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicates
        mapping = dict(pairs)
        if len(mapping) != len(pairs):
            duplicates = True
        return mapping

    integers = _Integers()
    try:
        body = json.loads(text, object_pairs_hook=last_wins, parse_constant=_refuse_constant,
                          parse_float=_finite_float, parse_int=integers)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except _NotJson as exc:
        raise InvalidEvent(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent(f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
    if isinstance(body, dict | list) and _too_deep(text, body):
        raise InvalidEvent(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    replaced = 0
    try:
        if _SURROGATE_ESCAPE.search(text) or (may_hold_surrogates and not text.isascii() and _SURROGATE.search(text)):
            body, replaced = _without_lone_surrogates(body)
        if duplicates or replaced or integers.converted:
            text = json.dumps(body, ensure_ascii=False)
    except RecursionError:
        raise InvalidEvent("invalid JSON: nested too deeply") from None
    return body, text


def _without_lone_surrogates(value: Any) -> tuple[Any, int]:
    """`value` with every lone surrogate replaced by U+FFFD (the decoder already joined valid pairs),
    and how many strings it changed."""
    if isinstance(value, str):
        fixed, count = _SURROGATE.subn("\ufffd", value)
        return fixed, min(count, 1)
    if isinstance(value, list):
        items = [_without_lone_surrogates(item) for item in value]
        return [item for item, _ in items], sum(changed for _, changed in items)
    if isinstance(value, dict):
        mapping, total = {}, 0
        for key, item in value.items():
            fixed_key, key_changed = _without_lone_surrogates(key)
            mapping[fixed_key], changed = _without_lone_surrogates(item)
            total += key_changed + changed
        return mapping, total
    return value, 0


class RecentEvents:
    """The last events, oldest first, at most `capacity` of them taking at most `max_bytes` together;
    `to_json()` is always a valid JSON array.

    Only the event's JSON text is kept (not the parsed object, which takes several times the memory
    of a large scan report), and the array is assembled from the texts when asked for. Sizes are the
    texts' memory (`sys.getsizeof`: a non-ASCII text takes up to 4 bytes a character), so the bound
    holds whatever the senders write. An event larger than the whole budget is not kept.
    """

    def __init__(self, capacity: int = RECENT_EVENTS, max_bytes: int = RECENT_EVENTS_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._events: collections.deque[tuple[str, float, str, str, int]] = collections.deque()
        self.size_bytes = 0
        """Memory the kept texts take."""

    def add(self, event: Event) -> None:
        size = sys.getsizeof(event.text)
        if size > self.max_bytes:
            return
        self._events.append((event.id, event.received_at, event.source, event.text, size))
        self.size_bytes += size
        while len(self._events) > self.capacity or self.size_bytes > self.max_bytes:
            self.size_bytes -= self._events.popleft()[4]

    def __len__(self) -> int:
        return len(self._events)

    def to_json(self, *, bodies: bool = True, limit: int | None = None,
                extra: Callable[[str], Mapping[str, Any] | None] | None = None) -> str:
        """The kept events, oldest first: the last `limit` of them; without `bodies`, each event's
        size (characters of its JSON text) instead of the event itself, and the fields `extra(id)`
        gives (what the dashboard lists)."""
        kept = list(self._events)
        if limit is not None:
            kept = kept[-limit:] if limit > 0 else []
        if bodies:
            parts = [
                f'{{"id": {json.dumps(event_id)}, "received_at": {received_at!r}, "source": {json.dumps(source)}, '
                f'"event": {text}}}'
                for event_id, received_at, source, text, _ in kept
            ]
        else:
            parts = [
                json.dumps({"id": event_id, "received_at": received_at, "source": source, "size": len(text),
                            **((extra(event_id) or {}) if extra is not None else {})})
                for event_id, received_at, source, text, _ in kept
            ]
        return "[" + ", ".join(parts) + "]"
