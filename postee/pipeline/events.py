"""Events as the pipeline carries them, and the ring of recent events behind `GET /events`.

An event is parsed once at intake: the raw bytes are decoded, Postee's backtick rewrite is
applied, and the JSON is checked to be an object. The text as received (after that rewrite, not
re-encoded: key order, spacing and number spelling are the sender's) is kept next to the parsed
value. Route rules get it as their Rego input, a runner reports it upstream as is, and
`GET /events` pastes it into its array, so none of them re-encodes a large scan report once per
route or per request.
"""

from __future__ import annotations

import collections
import json
import sys
import time
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

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


def new_event_id() -> str:
    return uuid.uuid4().hex


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
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidEvent(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise InvalidEvent("invalid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidEvent(f"an event must be a JSON object, got a JSON {json_kind(body)}")
    return Event(
        id=event_id or new_event_id(),
        body=body,
        text=text,
        received_at=time.time() if received_at is None else received_at,
        source=source,
        route=route,
    )


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

    def to_json(self) -> str:
        parts = [
            f'{{"id": {json.dumps(event_id)}, "received_at": {received_at!r}, "source": {json.dumps(source)}, '
            f'"event": {text}}}'
            for event_id, received_at, source, text, _ in list(self._events)
        ]
        return "[" + ", ".join(parts) + "]"
