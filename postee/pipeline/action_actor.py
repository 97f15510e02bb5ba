"""ActionActor: one per configured action; owns the action's resources and sends with retries.

Deliveries arrive in its mailbox from any route. Up to `concurrency` sends run at once (an HTTP
action should not make every route wait for one slow endpoint); when all slots are busy the actor
stops taking messages, its mailbox fills and routes feel the back-pressure. A job may carry a
`Reply`: serialized routes wait on it to run their actions one after another; and an `on_done`,
which records the outcome (the node's ledger: an accepted event's action that ended is not run
again after a restart) as soon as the send ended, before anyone else hears of it.

Failures of the action (a 500, a timeout, a script exiting 1) are retried per the action's policy,
logged with their reason and counted; they never crash the actor. An unexpected exception (a bug
in an action) does crash it, after answering the waiting route, and the supervisor restarts it.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import structlog
import trio

from actors import Actor, Reply
from postee.actions.base import Action, Delivery
from postee.actions.retry import ATTEMPT_TIMEOUT_GRACE, AttemptReport, DeliveryReport, send_with_retries
from postee.metrics import Metrics

log = structlog.get_logger("postee.action")

DEFAULT_ACTION_CONCURRENCY = 8
DEFAULT_ACTION_MAILBOX = 256


@attrs.frozen
class ActionJob:
    delivery: Delivery
    done: Reply[DeliveryReport] | None = None
    on_done: Callable[[DeliveryReport], Awaitable[None]] | None = None
    """Records the outcome (the node's ledger) as soon as the send ended, before it is reported."""


@attrs.frozen
class Execution:
    """One finished send, as reported to `on_execution` (logs, `/executions`, runner reports)."""

    action: str
    action_type: str
    route: str
    event_id: str
    ok: bool
    attempts: int
    started_at: float
    duration: float
    error: str | None
    output: str


class ActionActor(Actor[ActionJob]):
    def __init__(
        self,
        action: Action,
        *,
        metrics: Metrics | None = None,
        concurrency: int = DEFAULT_ACTION_CONCURRENCY,
        capacity: int = DEFAULT_ACTION_MAILBOX,
        on_execution: Callable[[Execution], Any] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name=f"action:{action.name}", capacity=capacity)
        self.action = action
        self.metrics = metrics
        self.concurrency = concurrency
        self.on_execution = on_execution
        self._wall_clock = wall_clock
        self.sent_ok = 0
        self.sent_failed = 0

    @property
    def budget(self) -> float:
        """The longest one job can take: every attempt timing out plus every backoff."""
        policy = self.action.retry_policy
        attempts = policy.retries + 1
        waits = sum(policy.delay(n) for n in range(1, attempts))
        return attempts * (policy.timeout + ATTEMPT_TIMEOUT_GRACE) + waits

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        limiter = trio.CapacityLimiter(self.concurrency)
        async with self.action:
            async with trio.open_nursery() as nursery:
                task_status.started(self.address)
                async for job in self.mailbox:
                    slot = object()  # jobs hold mappings and are not hashable: borrow on a token's behalf
                    try:
                        limiter.acquire_on_behalf_of_nowait(slot)  # a free slot: no trip through the scheduler
                    except trio.WouldBlock:
                        await limiter.acquire_on_behalf_of(slot)
                    nursery.start_soon(self._send, job, limiter, slot)

    async def _send(self, job: ActionJob, limiter: trio.CapacityLimiter, slot: object) -> None:
        delivery = job.delivery
        action = self.action
        started_wall = self._wall_clock()
        try:
            report = await send_with_retries(action, delivery, on_attempt=self._on_attempt)
        except Exception as exc:
            if job.done is not None:
                job.done.fail(exc)
            raise
        finally:
            limiter.release_on_behalf_of(slot)
        if report.ok:
            self.sent_ok += 1
            log.debug("action sent", action=action.name, route=delivery.route, event_id=delivery.event_id,
                      attempts=report.attempts)
        else:
            self.sent_failed += 1
            log.warning("action failed", action=action.name, type=action.spec.type, route=delivery.route,
                        event_id=delivery.event_id, attempts=report.attempts,
                        error=str(report.error) if report.error else None)
        if self.metrics is not None:
            status = "ok" if report.ok else "failed"
            self.metrics.action_sends.labels(action.name, action.spec.type.lower(), status).inc()
            self.metrics.action_duration.labels(action.name).observe(report.duration)
        if job.on_done is not None:
            await self._record(job.on_done, report, delivery)
        if self.on_execution is not None:
            await self._report(
                Execution(
                    action=action.name,
                    action_type=action.spec.type.lower(),
                    route=delivery.route,
                    event_id=delivery.event_id,
                    ok=report.ok,
                    attempts=report.attempts,
                    started_at=started_wall,
                    duration=report.duration,
                    error=str(report.error) if report.error else None,
                    output=report.output,
                )
            )
        if job.done is not None:
            job.done.send(report)

    async def _record(self, on_done: Callable[[DeliveryReport], Awaitable[None]], report: DeliveryReport,
                      delivery: Delivery) -> None:
        """Record the outcome; a failure is logged (the send happened, the other sends go on)."""
        try:
            await on_done(report)
        except Exception as exc:
            log.error("action outcome not recorded", action=self.action.name, event_id=delivery.event_id,
                      error=f"{type(exc).__name__}: {exc}")

    async def _report(self, execution: Execution) -> None:
        """Hand the execution to the hook; its failure (say, a full disk under the outbox) is logged, not
        allowed to crash the actor and lose the other sends in flight."""
        assert self.on_execution is not None
        try:
            reported = self.on_execution(execution)
            if inspect.isawaitable(reported):
                await reported
        except Exception as exc:
            log.error("execution report failed", action=execution.action, event_id=execution.event_id,
                      error=f"{type(exc).__name__}: {exc}")

    def _on_attempt(self, attempt: AttemptReport) -> None:
        if attempt.retry_in is None:
            return
        log.info("action attempt failed, retrying", action=attempt.action, attempt=attempt.number,
                 retry_in=attempt.retry_in, error=str(attempt.error))
        if self.metrics is not None:
            self.metrics.action_retries.labels(attempt.action).inc()
