"""Retries with capped exponential backoff, and a hard time limit per attempt.

Postee tries each action once. Here every send goes through `send_with_retries`: an attempt that
fails with a retryable `ActionError` (timeout, connection refused, 5xx, 429) is tried again after
`backoff`, `backoff * factor`, ... capped at `max_backoff` (or later, when the remote asked for it
with Retry-After); a non-retryable failure (4xx, bad content, a script exiting non-zero) stops at
once. Each attempt runs under `timeout` (plus a small grace, so the action's own, more precise
timeout error normally wins).

Action failures are returned as a `DeliveryReport`, never raised: one failing action must not
take its actor down. Cancellation goes through untouched, and so do exceptions that are not
`ActionError` (bugs), so the supervisor sees and restarts a broken actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from postee.actions.model import ActionError, Delivery, SendResult

if TYPE_CHECKING:
    from postee.actions.base import Action
    from postee.actions.settings import SettingsReader

DEFAULT_RETRIES = 3
"""Retries after the first attempt (so 4 attempts in all)."""

DEFAULT_BACKOFF = 1.0
"""Seconds before the first retry."""

DEFAULT_BACKOFF_FACTOR = 2.0

DEFAULT_MAX_BACKOFF = 60.0
"""No wait between two attempts is longer than this, whatever the factor or Retry-After says."""

DEFAULT_ATTEMPT_TIMEOUT = 30.0
"""Per-attempt limit for an action type that declares no timeout of its own."""

ATTEMPT_TIMEOUT_GRACE = 1.0
"""Added to the per-attempt limit, so the action's own timeout (same value) reports first."""

RETRY_SETTINGS = frozenset({"retries", "retry-backoff", "retry-backoff-max", "timeout"})
"""Settings keys every action accepts."""


@attrs.frozen
class RetryPolicy:
    """How often, how patiently and how long each send of an action is tried."""

    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    factor: float = DEFAULT_BACKOFF_FACTOR
    max_backoff: float = DEFAULT_MAX_BACKOFF
    timeout: float = DEFAULT_ATTEMPT_TIMEOUT

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        delay = self.backoff * self.factor ** (retry - 1)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_backoff)


def read_retry_policy(settings: SettingsReader, default_timeout: float) -> RetryPolicy:
    """The policy from the action's `retries`, `retry-backoff`, `retry-backoff-max` and `timeout` keys."""
    return RetryPolicy(
        retries=settings.integer("retries", DEFAULT_RETRIES, minimum=0),
        backoff=settings.duration("retry-backoff", DEFAULT_BACKOFF),
        max_backoff=settings.duration("retry-backoff-max", DEFAULT_MAX_BACKOFF),
        timeout=settings.positive_duration("timeout", default_timeout),
    )


@attrs.frozen
class AttemptReport:
    """One attempt, as `on_attempt` sees it: `retry_in` is the wait before the next one, or None."""

    action: str
    number: int
    error: ActionError | None
    duration: float
    retry_in: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.frozen
class DeliveryReport:
    """The outcome of `send_with_retries`: success or the last failure, after how many attempts."""

    action: str
    ok: bool
    attempts: int
    duration: float
    error: ActionError | None = None
    result: SendResult | None = None

    @property
    def output(self) -> str:
        if self.result is not None:
            return self.result.output
        return self.error.output if self.error is not None else ""

    @property
    def status(self) -> int | None:
        if self.result is not None:
            return self.result.status
        return self.error.status if self.error is not None else None


OnAttempt = Callable[[AttemptReport], None]


async def send_with_retries(
    action: Action,
    delivery: Delivery,
    policy: RetryPolicy | None = None,
    *,
    on_attempt: OnAttempt | None = None,
) -> DeliveryReport:
    """Send `delivery` through `action` per `policy` (default: the action's own) and report the outcome."""
    policy = action.retry_policy if policy is None else policy
    started = trio.current_time()
    number = 0
    while True:
        number += 1
        attempt_started = trio.current_time()
        error: ActionError | None = None
        result: SendResult | None = None
        with trio.move_on_after(policy.timeout + ATTEMPT_TIMEOUT_GRACE) as scope:
            try:
                result = await action.send(delivery)
            except ActionError as exc:
                error = exc
        if scope.cancelled_caught:
            error = ActionError(f"attempt timed out after {policy.timeout:g}s", retryable=True)
        now = trio.current_time()
        retry_in = None
        if error is not None and error.retryable and number <= policy.retries:
            retry_in = policy.delay(number, error.retry_after)
        if on_attempt is not None:
            on_attempt(AttemptReport(action.name, number, error, now - attempt_started, retry_in))
        if error is None or retry_in is None:
            return DeliveryReport(
                action=action.name,
                ok=error is None,
                attempts=number,
                duration=now - started,
                error=error,
                result=result,
            )
        await trio.sleep(retry_in)
