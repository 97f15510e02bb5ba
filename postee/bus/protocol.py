"""Subjects and message formats between a controller and its runners.

Each runner speaks on subjects that carry its name, so the NATS server can tell who may say what
(`postee.bus.permissions`): with its own NKey a runner may publish only under `postee.runner.<name>.`
and read only its own inbox and announcements, and the controller takes the runner's name from the
subject, never from the payload or a header.

| subject | direction | payload | reply |
|---|---|---|---|
| `postee.runner.<name>.config` | runner → controller, request | the runner's name | its config slice, YAML |
| `postee.runner.<name>.events` | runner → controller, request | the raw event bytes | `ack` |
| `postee.runner.<name>.executions` | runner → controller, request | one `ExecutionReport`, JSON | `ack` |
| `postee.runner.<name>.heartbeat` | runner → controller | one `Heartbeat`, JSON | — |
| `postee.config.changed` | controller → runners | the version of the configuration now running | — |
| `postee.config.changed.<name>` | controller → one runner | that runner's current slice version | — |

`<name>` is one subject token (`subject_token`). Replies go to the runner's own inbox,
`_INBOX.runner.<name>.` (`runner_inbox_prefix`), which only that runner may read.

Postee's own subjects are still served, so a Postee runner can use our controller: `postee.config`
(request, the runner's bare name as payload), `postee.events`, `postee.executions`, `postee.heartbeat`.
A runner's name there is only what the message says; the controller treats it as unverified.

The per-runner notice is how a runner that missed a broadcast converges: the controller sends it when
a heartbeat carries another slice version than the runner's current one, at most once per heartbeat
interval; the runner fetches its slice again unless it already runs that version.

Headers (ours; absent from a Postee runner's messages): `Postee-Runner` (the runner's name, only read
on Postee's subjects) and `Postee-Event-Id` (a unique id, so a resent event is processed once) on
events and executions, `Postee-Route` on an event posted to a runner's `POST /tenant/{route}` (run
only that route), `Postee-Config-Version` on config replies.
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

RUNNER_SUBJECT_PREFIX = "postee.runner"
RUNNER_INBOX_ROOT = "_INBOX.runner"

#: What a runner sends, each on `postee.runner.<name>.<kind>`.
CONFIG_KIND = "config"
EVENTS_KIND = "events"
EXECUTIONS_KIND = "executions"
HEARTBEAT_KIND = "heartbeat"
HANDOVERS_KIND = "handovers"
"""A runner asking the controller for the steps handed over to it (`postee.pipeline.plan`); no Postee subject."""
RUNNER_KINDS = (CONFIG_KIND, EVENTS_KIND, EXECUTIONS_KIND, HEARTBEAT_KIND, HANDOVERS_KIND)
#: Postee's shared subject for each kind.
LEGACY_SUBJECTS = {CONFIG_KIND: CONFIG_SUBJECT, EVENTS_KIND: EVENTS_SUBJECT,
                   EXECUTIONS_KIND: EXECUTIONS_SUBJECT, HEARTBEAT_KIND: HEARTBEAT_SUBJECT}

_SUBJECT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ESCAPE = re.compile(r"~([0-9A-F]{2})")


def subject_token(name: str) -> str:
    """`name` as one NATS subject token, whatever it holds (one name, one token; no two names alike).

    Characters a token cannot carry (dots, spaces, wildcards, `~` itself, ...) become `~XX` escapes of
    their UTF-8 bytes; the empty name is `~`.
    """
    token = _SUBJECT_UNSAFE.sub(lambda m: "".join(f"~{b:02X}" for b in m.group().encode()), name)
    return token or "~"


def name_of_token(token: str) -> str | None:
    """The name `subject_token` made `token` from; None for a token it cannot have made."""
    if token == "~":
        return ""
    raw = bytearray()
    position = 0
    for match in _ESCAPE.finditer(token):
        plain = token[position:match.start()]
        if _SUBJECT_UNSAFE.search(plain):
            return None
        raw += plain.encode()
        raw.append(int(match.group(1), 16))
        position = match.end()
    tail = token[position:]
    if _SUBJECT_UNSAFE.search(tail):
        return None
    raw += tail.encode()
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        return None
    return name if subject_token(name) == token else None


def runner_subject(runner: str, kind: str) -> str:
    """`postee.runner.<name>.<kind>`: where the runner `runner` sends messages of `kind`."""
    return f"{RUNNER_SUBJECT_PREFIX}.{subject_token(runner)}.{kind}"


def runner_subjects_pattern(kind: str) -> str:
    """The controller's subscription to every runner's messages of `kind`."""
    return f"{RUNNER_SUBJECT_PREFIX}.*.{kind}"


def runner_of_subject(subject: str) -> str | None:
    """The runner a `postee.runner.<name>.<kind>` subject belongs to; None for any other subject."""
    prefix = RUNNER_SUBJECT_PREFIX + "."
    if not subject.startswith(prefix):
        return None
    token, _, kind = subject[len(prefix):].partition(".")
    if kind not in RUNNER_KINDS:
        return None
    return name_of_token(token)


def runner_inbox_prefix(runner: str) -> str:
    """The inbox prefix of the runner `runner`: replies to its requests arrive under it, for it alone."""
    return f"{RUNNER_INBOX_ROOT}.{subject_token(runner)}"


def runner_config_subject(runner: str) -> str:
    """`postee.config.changed.<name>`: the controller's notices to one runner."""
    return f"{CONFIG_CHANGED_SUBJECT}.{subject_token(runner)}"


DISPATCH_NOTICE_PREFIX = "postee.dispatch"


def dispatch_notice_subject(runner: str) -> str:
    """`postee.dispatch.<name>`: the controller's notice to one runner that steps wait for it (no payload
    to trust: the runner fetches them from the controller on its own subject)."""
    return f"{DISPATCH_NOTICE_PREFIX}.{subject_token(runner)}"


def dispatch_store_subject(runner: str) -> str:
    """Under which subject a controller's store keeps the steps waiting for `runner` (never sent as is)."""
    return f"dispatch:{runner}"


HEADER_RUNNER = "Postee-Runner"
HEADER_EVENT_ID = "Postee-Event-Id"
HEADER_ROUTE = "Postee-Route"
"""On an event posted to a runner's `POST /tenant/{route}`: the controller runs only that route."""
HEADER_CONFIG_VERSION = "Postee-Config-Version"
HEADER_STEP = "Postee-Step"
"""On an event handed over (`postee.pipeline.plan`): the step of `Postee-Route` it continues at."""
HEADER_ONLY_STEP = "Postee-Step-Only"
"""`1`: run that step alone (a dispatch); `0`: run on from it."""
HEADER_ORIGIN = "Postee-Origin-Event"
"""On an event handed over: its id where it entered (`Postee-Event-Id` is the handover's own)."""
HEADER_STEP_ACTION = "Postee-Step-Action"
"""On an event handed over: the action of its step (the receiving side finds it by name)."""
HEADER_ENTERED = "Postee-Entered-At"
"""On an event handed over: the runner it entered at, or empty for the controller."""

ACK = b"ack"
NACK_PREFIX = b"nack:"

OUTPUT_EXCERPT = 2000
"""Characters of an action's output carried in an execution report."""


def _number(_: Any, attribute: Any, value: Any) -> None:
    """A JSON number (not a boolean, which Python counts as an int)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{attribute.name} must be a number, not {type(value).__name__}")


def _count(_: Any, attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name} must be an integer, not {type(value).__name__}")


_text = attrs.validators.instance_of(str)


@attrs.frozen
class ExecutionReport:
    """One action run on a runner, reported upstream. It comes from the bus: every field is checked
    (a report of the wrong shape is refused when read, never stored or shown)."""

    runner: str = attrs.field(validator=_text)
    route: str = attrs.field(validator=_text)
    action: str = attrs.field(validator=_text)
    action_type: str = attrs.field(validator=_text)
    event_id: str = attrs.field(validator=_text)
    ok: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    attempts: int = attrs.field(validator=_count)
    started_at: float = attrs.field(validator=_number)
    duration: float = attrs.field(validator=_number)
    error: str | None = attrs.field(default=None, validator=attrs.validators.optional(_text))
    output: str = attrs.field(default="", validator=_text)

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
