"""Subjects and message formats between a controller and its runners.

Postee's own wire format is kept where it exists, so a Postee runner can use our controller:

| subject | direction | payload | reply |
|---|---|---|---|
| `postee.config` | runner → controller, request | the runner's bare name | the runner's config slice, YAML |
| `postee.events` | runner → controller | the raw event bytes | `ack` (ours; a Postee runner expects none) |
| `postee.executions` | runner → controller, request | one `ExecutionReport`, JSON | `ack` |
| `postee.heartbeat` | runner → controller | one `Heartbeat`, JSON | — |
| `postee.config.changed` | controller → runners | the new config version | — |

Headers (ours; absent from a Postee runner's messages): `Postee-Runner` (the runner's name) and
`Postee-Event-Id` (a unique id, so a resent event is processed once) on events and executions,
`Postee-Config-Version` on config replies.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

CONFIG_SUBJECT = "postee.config"
EVENTS_SUBJECT = "postee.events"
EXECUTIONS_SUBJECT = "postee.executions"
HEARTBEAT_SUBJECT = "postee.heartbeat"
CONFIG_CHANGED_SUBJECT = "postee.config.changed"

HEADER_RUNNER = "Postee-Runner"
HEADER_EVENT_ID = "Postee-Event-Id"
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
    """A runner's periodic sign of life."""

    runner: str
    sent_at: float
    config_version: str = ""
    events: int = 0
    executions: int = 0
    outbox: int = 0

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Heartbeat:
        raw: dict[str, Any] = json.loads(data)
        fields = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields})
