"""Subjects and message formats between a controller and its runners.

Postee's own wire format is kept where it exists, so a Postee runner can use our controller:

| subject | direction | payload | reply |
|---|---|---|---|
| `postee.config` | runner → controller, request | the runner's bare name | the runner's config slice, YAML |
| `postee.events` | runner → controller | the raw event bytes | `ack` (ours; a Postee runner expects none) |
| `postee.executions` | runner → controller, request | one `ExecutionReport`, JSON | `ack` |
| `postee.heartbeat` | runner → controller | one `Heartbeat`, JSON | — |
| `postee.config.changed` | controller → runners | the version of the configuration now running | — |
| `postee.config.changed.<runner>` | controller → one runner | that runner's current slice version | — |

The per-runner subject (ours) is how a runner that missed a broadcast converges: the controller sends
it when a heartbeat carries another slice version than the runner's current one, at most once per
heartbeat interval; the runner fetches its slice again unless it already runs that version.

Headers (ours; absent from a Postee runner's messages): `Postee-Runner` (the runner's name) and
`Postee-Event-Id` (a unique id, so a resent event is processed once) on events and executions,
`Postee-Route` on an event posted to a runner's `POST /tenant/{route}` (run only that route),
`Postee-Config-Version` on config replies.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

CONFIG_SUBJECT = "postee.config"
EVENTS_SUBJECT = "postee.events"
EXECUTIONS_SUBJECT = "postee.executions"
HEARTBEAT_SUBJECT = "postee.heartbeat"
CONFIG_CHANGED_SUBJECT = "postee.config.changed"

_SUBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def runner_config_subject(runner: str) -> str:
    """`postee.config.changed.<runner>`: one subject token, whatever the runner's name holds.

    Characters a NATS subject token cannot carry (dots, spaces, wildcards, ...) become `~XX` escapes,
    so every name maps to one valid subject.
    """
    token = _SUBJECT_UNSAFE.sub(lambda m: "".join(f"~{b:02X}" for b in m.group().encode()), runner)
    return f"{CONFIG_CHANGED_SUBJECT}.{token or '~'}"


HEADER_RUNNER = "Postee-Runner"
HEADER_EVENT_ID = "Postee-Event-Id"
HEADER_ROUTE = "Postee-Route"
"""On an event posted to a runner's `POST /tenant/{route}`: the controller runs only that route."""
HEADER_CONFIG_VERSION = "Postee-Config-Version"

ACK = b"ack"
NACK_PREFIX = b"nack:"

OUTPUT_EXCERPT = 2000
"""Characters of an action's output carried in an execution report."""


@attrs.frozen
class ExecutionReport:
    """One action run on a runner, reported upstream."""

    runner: str
    route: str
    action: str
    action_type: str
    event_id: str
    ok: bool
    attempts: int
    started_at: float
    duration: float
    error: str | None = None
    output: str = ""

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ExecutionReport:
        raw: dict[str, Any] = json.loads(data)
        fields = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields})

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Heartbeat:
    """A runner's periodic sign of life, with what the controller shows on `/runners`."""

    runner: str
    sent_at: float
    config_version: str = ""
    """The version of the slice the runner runs (compared with the controller's current one)."""
    events: int = 0
    executions: int = 0
    outbox: int = 0
    actions: int | None = None
    """Actions the runner runs (enabled, `runs-on` it); None from a runner that does not say."""
    problems: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """What keeps the runner from running its slice as written (one line each)."""

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Heartbeat:
        raw: dict[str, Any] = json.loads(data)
        fields = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields})
