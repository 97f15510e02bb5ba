"""The contract every action type implements.

An action turns a rendered message (`Delivery`) into one outside effect: a line on stdout, an HTTP
request, a script run, a Slack post. The runtime around it (the ActionActor, `send_with_retries`)
owns retries, timeouts per attempt, logging and metrics, so an action only has to:

- check its settings once, at load time, reporting *every* problem at once (`from_spec`), so that
  `postee check` can print them all with their paths;
- acquire and release its resources (`open` / `aclose`, or `async with action:`), such as the ONE
  `httpx.AsyncClient` it reuses for every send;
- send one delivery (`send`), and say through `ActionError.retryable` whether trying again could help.

Actions do not know where events come from (HTTP intake, NATS) nor who calls them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Self

import attrs

if TYPE_CHECKING:
    from postee.actions.retry import RetryPolicy

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


class Action(ABC):
    """Base class of every action type.

    Subclasses set `type_name` (Postee's `type`, matched case-insensitively by the registry),
    `settings_keys` (the keys they read, so the loader can warn about the others) and
    `default_timeout`, and implement `from_spec` and `send`. Actions that hold resources override
    `open` and `aclose`; `async with action:` calls both.

    Every instance carries `spec` and the `retry_policy` parsed from its settings (`retries`,
    `retry-backoff`, `retry-backoff-max`, `timeout`), which the ActionActor hands to
    `send_with_retries`.
    """

    type_name: ClassVar[str]
    settings_keys: ClassVar[frozenset[str]] = frozenset()
    default_timeout: ClassVar[float]

    def __init__(self, spec: ActionSpec, *, retry_policy: RetryPolicy) -> None:
        self.spec = spec
        self.retry_policy = retry_policy

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: ActionSpec) -> Self:
        """Validate `spec.settings` and build the action; raise `ActionConfigError` with all problems.

        May do small blocking reads (a `body-file`), as the config loader does: call it where the
        config is loaded, not on a busy event loop. Must not open connections or start processes.
        """

    async def open(self) -> None:  # noqa: B027 - deliberately a no-op: most actions hold nothing
        """Acquire resources (HTTP client, ...). Called once before the first `send`."""

    async def aclose(self) -> None:  # noqa: B027
        """Release what `open` acquired. Safe to call more than once, and without `open`."""

    @abstractmethod
    async def send(self, delivery: Delivery) -> SendResult:
        """Send one delivery; raise `ActionError` on failure.

        Must be cancellable at any await (and clean up: a cancelled exec kills its processes), and
        safe to call concurrently: a route that does not serialize its actions may overlap sends.
        """

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


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
