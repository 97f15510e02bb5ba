"""The data an action deals with: its config entry, what it is asked to send, what it answers, its errors.

A leaf module: `settings`, `retry` and `base` all build on it, so it imports nothing of theirs.
`base` presents these names as part of the action contract (`from postee.actions.base import ...`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import attrs

MAX_OUTPUT_CHARS = 2000
"""Longest excerpt of a remote answer or script output kept in a `SendResult` or an error."""

TRUNCATION_MARK = "…[truncated]"

Problem = tuple[str, str]
"""A settings problem: (key, message), e.g. ("url", "required"). The key is relative to the action."""


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


@attrs.frozen
class ActionSpec:
    """One entry of the config's `actions:` list.

    `settings` holds the action's other YAML keys exactly as written in Postee's config (`url`,
    `method`, `body-content`, `exec-script`, ...), with `$VAR` secrets already resolved by the loader.
    """

    name: str
    type: str
    enable: bool = True
    runs_on: str | None = None
    settings: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False, repr=False)
    """Read-only; compared by `==`, not hashed, and never in the repr: it holds secrets (passwords, tokens)."""
    where: str = attrs.field(default="", eq=False)
    """Where the entry is in the config file, as problems name it (`routes[2] (name: r2)`)."""


@attrs.frozen
class Delivery:
    """What an action is asked to send.

    `content` is what the template rendered (title, description, url, date, severity, summary,
    category, subcategory, assignedTo, assignedGroup, optionally owners); `event` is the raw event,
    for actions that substitute `event.input.<path>` values.
    """

    content: Mapping[str, Any]
    event: Mapping[str, Any] = attrs.field(factory=dict)
    route: str = ""
    event_id: str = ""

    @property
    def description(self) -> str:
        """The rendered description as text ("" when the template gave none)."""
        return as_text(self.content.get("description"))

    @property
    def title(self) -> str:
        return as_text(self.content.get("title"))


@attrs.frozen
class SendResult:
    """A successful send: an excerpt of what the remote (or script) answered, and its status."""

    output: str = ""
    status: int | None = None


class ActionConfigError(ValueError):
    """An action's settings are invalid. Carries every problem found, not just the first.

    `problems` are (key, message) pairs relative to the action; `lines(prefix)` renders them with a
    path prefix, e.g. `actions[my-hook].url: required`, which is also what `str()` shows.
    """

    def __init__(self, action: str, problems: Sequence[Problem]) -> None:
        self.action = action
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(self.lines()))

    def lines(self, prefix: str | None = None) -> list[str]:
        """One line per problem, each prefixed with `prefix` (default `actions[<name>]`)."""
        base = f"actions[{self.action}]" if prefix is None else prefix
        return [f"{base}{_join_key(key)}: {message}" for key, message in self.problems]


def _join_key(key: str) -> str:
    if not key:
        return ""
    return key if key.startswith("[") else f".{key}"


class ActionError(Exception):
    """A send failed. `retryable` tells the retry loop whether another attempt could succeed.

    Retryable: timeouts, connection errors, 5xx, 429 (with `retry_after` seconds when the remote
    said so). Not retryable: other 4xx, content the remote or the action cannot use, a script that
    exited non-zero.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        output: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.output = output
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"ActionError({self.message!r}, retryable={self.retryable}, status={self.status})"


def as_text(value: object) -> str:
    """Content values are normally strings; anything else is shown, None as ""."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def excerpt(text: str | bytes, limit: int = MAX_OUTPUT_CHARS) -> str:
    """`text` cut to `limit` characters with a visible mark, for logs, results and errors."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if len(text) <= limit:
        return text
    return text[:limit] + TRUNCATION_MARK
