"""The runner link and the controller's bus side are supervised: a crash restarts that part, loses nothing.

The crash comes from an injected bus part (a transport with one bug, as a real client library can
have), not from patching our own code: the runner's outbox drain and the controller's subscription
meet an exception that is not a `TransportError`, which nothing in them catches. Nodes, bus and actions
run on Trio's virtual clock (`tests/roles/sim_helpers.py`): a runner's request that is never answered
times out after the daemon's own 5 s, at no cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from actors.transport import Message, Subscription, Transport
from postee.bus.protocol import EVENTS_KIND, runner_subject, runner_subjects_pattern
from postee.roles.runner import Runner
from tests.roles.helpers import DelegatingTransport
from tests.roles.sim_helpers import (
    central_config,
    open_deployment,
    outbox_empty,
    received_numbers,
    settle,
    sim_event,
    submit,
)

EVENTS = 12


class InjectedBug(RuntimeError):
    """What the flaky transport raises: a crash, not a transport error anyone expects."""


class FlakyTransport(DelegatingTransport):
    """A `Transport` that forwards to `inner` and crashes once at a chosen point.

    `crash_after_request_number`: the Nth `request` on the events subject is delivered and answered
    (the controller has the event), then raises instead of returning the acknowledgement.
    `crash_on_message_number`: the Nth message of an events subscription raises instead of being
    handed to the subscriber (the controller never sees it; the runner's request times out).
    """

    def __init__(self, inner: Transport, *, crash_after_request_number: int = 0,
                 crash_on_message_number: int = 0) -> None:
        super().__init__(inner)
        self.crash_after_request_number = crash_after_request_number
        self.crash_on_message_number = crash_on_message_number
        self.requests = 0
        self.messages = 0
        self.crashes = 0

    async def request(self, subject: str, data: bytes, **options: Any) -> Message:
        reply = await self.inner.request(subject, data, **options)
        if subject == runner_subject("runner-1", EVENTS_KIND):
            self.requests += 1
            if self.requests == self.crash_after_request_number:
                self.crashes += 1
                raise InjectedBug("crashed after the controller answered")
        return reply

    @asynccontextmanager
    async def subscribe(self, subject: str, **options: Any) -> AsyncIterator[Subscription]:
        async with self.inner.subscribe(subject, **options) as subscription:
            crashing = subject == runner_subjects_pattern(EVENTS_KIND)
            yield _CrashingSubscription(subscription, self) if crashing else subscription


class _CrashingSubscription:
    def __init__(self, inner: Subscription, owner: FlakyTransport) -> None:
        self.inner = inner
        self.owner = owner
        self.subject = inner.subject

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        async for message in self.inner:
            self.owner.messages += 1
            if self.owner.messages == self.owner.crash_on_message_number:
                self.owner.crashes += 1
                raise InjectedBug("crashed while handing a message over")
            yield message

    async def next(self, timeout: float | None = None) -> Message:
        return await self.inner.next(timeout)


async def submit_all(runner: Runner) -> None:
    for n in range(EVENTS):
        await submit(runner, sim_event(n))


async def test_a_crash_in_the_runner_link_is_restarted_and_loses_or_doubles_nothing(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim:
        runner_transport = FlakyTransport(sim.bus.connect("runner-1"), crash_after_request_number=5)
        async with sim.controller(central_config()) as controller, \
                sim.runner("runner-1", runner_transport) as runner:
            await submit_all(runner)
            # Positive signals first: every event acknowledged and out of the outbox, the resend of
            # the one whose acknowledgement the crash swallowed recognised as a duplicate.
            await settle(lambda: runner_transport.requests == EVENTS + 1)
            await settle(lambda: controller.duplicates == 1)
            await outbox_empty(runner)
            await settle(lambda: len(received_numbers(sim)) == EVENTS)
            assert sorted(received_numbers(sim)) == list(range(EVENTS))  # each once
            assert runner_transport.crashes == 1
            assert runner.link is not None and runner.link.restart_count == 1
            assert not runner.node.stopped.is_set()  # the node never noticed
            metrics = runner.node.metrics.render().decode()
            assert 'postee_actor_restarts_total{child="outbox",supervisor="runner-link"} 1.0' in metrics


async def test_a_crash_in_the_controller_bus_side_is_restarted_and_the_runner_resends(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim:
        controller_transport = FlakyTransport(sim.bus.connect("controller"), crash_on_message_number=3)
        async with sim.controller(central_config(), controller_transport) as controller, \
                sim.runner("runner-1") as runner:
            await submit_all(runner)
            # The third event was lost with the crashed subscription: the runner's request timed out
            # and it sent that event again to the restarted one.
            await settle(lambda: len(received_numbers(sim)) == EVENTS)
            await settle(lambda: runner.upstream.sent == EVENTS)
            await outbox_empty(runner)
            assert sorted(received_numbers(sim)) == list(range(EVENTS))
            assert controller_transport.crashes == 1
            assert controller.bus is not None and controller.bus.restart_count == 1
            assert not controller.node.stopped.is_set()
            metrics = controller.node.metrics.render().decode()
            assert 'postee_actor_restarts_total{child="events",supervisor="controller-bus"} 1.0' in metrics


async def test_the_link_and_bus_supervisors_have_one_child_per_service(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, sim.controller(central_config()) as controller, \
            sim.runner("runner-1") as runner:
        assert runner.link is not None and runner.link.children == ["outbox", "handovers", "heartbeats",
                                                                     "config-watch"]
        # each kind twice: every runner's own subjects, and Postee's shared one (for Postee runners); the
        # steps handed over to runners (no Postee subject) and their expiry; then what tells the live feed
        # about runners' states
        assert controller.bus is not None and controller.bus.children == [
            "config", "postee-config", "events", "postee-events", "executions", "postee-executions",
            "heartbeats", "postee-heartbeats", "handovers", "dispatch-expiry", "runner-states"]
