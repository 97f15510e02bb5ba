"""The contract every action type implements.

An action turns a rendered message (`Delivery`) into one outside effect: a line on stdout, an HTTP
request, a script run, a Slack post. The runtime around it (the ActionActor, `send_with_retries`)
owns retries, timeouts per attempt, logging and metrics, so an action only has to:

- declare its settings once, as `setting(...)` fields of a `@define_action` class; the generic
  `from_spec` checks them at load time, reporting *every* problem at once, so that `postee check`
  can print them all with their paths;
- acquire and release its resources (`open` / `aclose`, or `async with action:`), such as the ONE
  `httpx.AsyncClient` it reuses for every send;
- send one delivery (`send`), and say through `ActionError.retryable` whether trying again could help.

Actions do not know where events come from (HTTP intake, NATS) nor who calls them. The data they
exchange (`ActionSpec`, `Delivery`, `SendResult`, the errors) is defined in `model` and offered
here too, as part of the contract.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import attrs

from postee.actions.model import (
    MAX_OUTPUT_CHARS,
    TRUNCATION_MARK,
    ActionConfigError,
    ActionError,
    ActionSpec,
    Delivery,
    Problem,
    SendResult,
    as_text,
    excerpt,
)
from postee.actions.settings import SettingsReader, declared_keys, read_settings

if TYPE_CHECKING:
    from postee.actions.retry import RetryPolicy

__all__ = [
    "MAX_OUTPUT_CHARS",
    "NOT_OPENED",
    "TRUNCATION_MARK",
    "Action",
    "ActionConfigError",
    "ActionError",
    "ActionSpec",
    "Delivery",
    "Problem",
    "SendResult",
    "as_text",
    "define_action",
    "excerpt",
]

A = TypeVar("A", bound=type["Action"])

NOT_OPENED = "the action was not opened: call `await action.open()` (or `async with action:`) first"
"""The message of the RuntimeError a `send` before `open` raises (a bug in the caller, not a failed send)."""


def define_action(cls: A) -> A:
    """Class decorator for an action class: its fields become attrs fields, its settings declared.

    The fields made with `setting(...)` are read by `from_spec` and make up `settings_keys`; other
    fields are constructor arguments with defaults (`verify`, a `stream`) or, with `init=False`,
    the action's own state (a client, caches). The options are those every action needs: no
    generated `==` (actions are compared and hashed by identity), no generated repr (settings hold
    secrets), keyword-only arguments after `spec`.
    """
    cls = attrs.define(cls, slots=False, eq=False, repr=False, kw_only=True)
    cls.settings_keys = declared_keys(cls)
    return cls


@attrs.define(slots=False, eq=False, repr=False)
class Action(ABC):
    """Base class of every action type.

    Subclasses set `type_name` (Postee's `type`, matched case-insensitively by the registry) and
    `default_timeout`, declare their settings as fields (see `define_action` and `settings.setting`),
    and implement `send`. Actions that hold resources override `open` and `aclose`; `async with
    action:` calls both. `settings_keys` (the keys read, so the loader can warn about the others) is
    derived from the declaration.

    Every instance carries `spec` and the `retry_policy` parsed from its settings (`retries`,
    `retry-backoff`, `retry-backoff-max`, `timeout`), which the ActionActor hands to
    `send_with_retries`.
    """

    type_name: ClassVar[str]
    settings_keys: ClassVar[frozenset[str]] = frozenset()
    default_timeout: ClassVar[float]

    spec: ActionSpec
    retry_policy: RetryPolicy = attrs.field(kw_only=True)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def timeout(self) -> float:
        """Seconds one attempt may take (the retry policy's `timeout`)."""
        return self.retry_policy.timeout

    @classmethod
    def from_spec(cls, spec: ActionSpec, **options: Any) -> Self:
        """Validate `spec.settings` and build the action; raise `ActionConfigError` with all problems.

        Reads the declared settings in order, lets `check_settings` check what spans several keys,
        reads the retry policy, and passes everything (and `options`, constructor arguments that are
        not settings) to the constructor.

        The pipeline builder calls this in a worker thread, because it may block (a `body-file`, a
        kubeconfig, TLS material): it must be thread-safe, must not call Trio, and must not open
        connections or start processes.
        """
        reader = SettingsReader(spec)
        values = read_settings(cls, reader)
        cls.check_settings(reader, values)
        policy = reader.retry_policy(cls.default_timeout)
        reader.done()
        return cls(spec, retry_policy=policy, **{**values, **options})

    @classmethod  # noqa: B027 - an optional hook: most actions have no checks across keys
    def check_settings(cls, reader: SettingsReader, values: dict[str, Any]) -> None:
        """Hook for what one setting alone cannot say: checks across keys, values derived from several.

        `values` holds the declared settings as read (placeholders where a problem was recorded),
        by constructor argument; record problems on `reader`, and add or replace `values` entries
        (e.g. a TLS context built from several settings). Nothing to do by default.
        """

    async def open(self) -> None:  # noqa: B027 - deliberately a no-op: most actions hold nothing
        """Acquire resources (HTTP client, ...). Called once before the first `send`."""

    async def aclose(self) -> None:  # noqa: B027 - deliberately a no-op, as `open`
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
