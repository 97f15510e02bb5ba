"""send_with_retries with a scripted in-test action, under the autojump clock (no real I/O, no real waiting)."""

from typing import ClassVar

import pytest
import trio

from postee.actions import ActionError, ActionSpec, Delivery, RetryPolicy, SendResult, send_with_retries
from postee.actions.base import Action
from postee.actions.retry import ATTEMPT_TIMEOUT_GRACE, DEFAULT_BACKOFF, DEFAULT_MAX_BACKOFF, DEFAULT_RETRIES
from postee.actions.settings import SettingsReader

DELIVERY = Delivery(content={"description": "hello"})


class ScriptedAction(Action):
    """Plays back a list of outcomes: an ActionError to raise, a number of seconds to hang, or success."""

    type_name: ClassVar[str] = "scripted"
    default_timeout: ClassVar[float] = 10.0

    def __init__(self, outcomes, policy=None):
        super().__init__(ActionSpec(name="scripted", type="scripted"), retry_policy=policy or RetryPolicy())
        self.outcomes = list(outcomes)
        self.calls: list[float] = []

    @classmethod
    def from_spec(cls, spec):
        raise NotImplementedError

    async def send(self, delivery):
        self.calls.append(trio.current_time())
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, ActionError):
            raise outcome
        if isinstance(outcome, int | float):
            await trio.sleep(outcome)
        return SendResult(output="done", status=200)


def retryable(message="HTTP 503", **kwargs):
    return ActionError(message, retryable=True, **kwargs)


async def test_success_first_time(autojump_clock):
    action = ScriptedAction([None])
    report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.output, report.status, report.error) == (True, 1, "done", 200, None)


async def test_retryable_failures_back_off_exponentially_then_succeed(autojump_clock):
    seen = []
    action = ScriptedAction([retryable(), retryable(), None], RetryPolicy(retries=3, backoff=1.0, factor=2.0))
    report = await send_with_retries(action, DELIVERY, on_attempt=seen.append)
    assert report.ok and report.attempts == 3
    gaps = [later - earlier for earlier, later in zip(action.calls, action.calls[1:], strict=False)]
    assert gaps == pytest.approx([1.0, 2.0])
    assert [(a.number, a.ok, a.retry_in) for a in seen] == [(1, False, 1.0), (2, False, 2.0), (3, True, None)]
    assert report.duration == pytest.approx(3.0)


async def test_gives_up_after_retries_and_returns_the_last_error(autojump_clock):
    errors = [retryable(f"failure {n}") for n in range(10)]
    action = ScriptedAction(errors, RetryPolicy(retries=2, backoff=1.0))
    report = await send_with_retries(action, DELIVERY)
    assert not report.ok and report.attempts == 3
    assert report.error is errors[2]


async def test_non_retryable_failure_stops_at_once(autojump_clock):
    error = ActionError("HTTP 400", retryable=False, status=400, output="bad request")
    action = ScriptedAction([error, None])
    report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status, report.output) == (False, 1, 400, "bad request")
    assert len(action.calls) == 1


async def test_backoff_is_capped(autojump_clock):
    policy = RetryPolicy(retries=6, backoff=10.0, factor=10.0, max_backoff=25.0)
    action = ScriptedAction([retryable()] * 6 + [None], policy)
    report = await send_with_retries(action, DELIVERY)
    assert report.ok and report.attempts == 7
    gaps = [later - earlier for earlier, later in zip(action.calls, action.calls[1:], strict=False)]
    assert gaps == pytest.approx([10.0] + [25.0] * 5)


async def test_retry_after_lengthens_the_wait_but_not_past_the_cap(autojump_clock):
    policy = RetryPolicy(retries=2, backoff=1.0, max_backoff=30.0)
    action = ScriptedAction([retryable(retry_after=7.0), retryable(retry_after=500.0), None], policy)
    await send_with_retries(action, DELIVERY)
    gaps = [later - earlier for earlier, later in zip(action.calls, action.calls[1:], strict=False)]
    assert gaps == pytest.approx([7.0, 30.0])


async def test_a_hanging_attempt_is_cut_off_and_retried(autojump_clock):
    policy = RetryPolicy(retries=1, backoff=1.0, timeout=5.0)
    action = ScriptedAction([1000.0, None], policy)
    seen = []
    report = await send_with_retries(action, DELIVERY, on_attempt=seen.append)
    assert report.ok and report.attempts == 2
    assert seen[0].error is not None and seen[0].error.retryable and "timed out" in seen[0].error.message
    assert seen[0].duration == pytest.approx(5.0 + ATTEMPT_TIMEOUT_GRACE)


async def test_cancellation_passes_through(autojump_clock):
    action = ScriptedAction([retryable()] * 10, RetryPolicy(retries=10, backoff=100.0, max_backoff=100.0))
    with trio.move_on_after(150.0) as scope:
        await send_with_retries(action, DELIVERY)
    assert scope.cancelled_caught
    assert len(action.calls) == 2


async def test_bugs_are_not_swallowed(autojump_clock):
    class Broken(ScriptedAction):
        async def send(self, delivery):
            raise KeyError("bug")

    with pytest.raises(KeyError):
        await send_with_retries(Broken([]), DELIVERY)


def test_policy_from_settings():
    spec = ActionSpec(name="a", type="x", settings={"retries": "5", "retry-backoff": "2s", "timeout": "1m"})
    reader = SettingsReader(spec)
    policy = reader.retry_policy(default_timeout=9.0)
    reader.done()
    assert policy == RetryPolicy(retries=5, backoff=2.0, max_backoff=DEFAULT_MAX_BACKOFF, timeout=60.0)


def test_policy_defaults():
    reader = SettingsReader(ActionSpec(name="a", type="x"))
    policy = reader.retry_policy(default_timeout=9.0)
    assert (policy.retries, policy.backoff, policy.timeout) == (DEFAULT_RETRIES, DEFAULT_BACKOFF, 9.0)
