"""The runner link and the controller's bus side are supervised: a crash restarts that part, loses nothing.

The crash comes from an injected bus part (a transport with one bug, as a real client library can
have), not from patching our own code: the runner's outbox drain and the controller's subscription
meet an exception that is not a `TransportError`, which nothing in them catches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from actors.testing import InMemoryBus
from actors.transport import Message, Subscription, Transport
from postee.bus.protocol import EVENTS_KIND, runner_subject, runner_subjects_pattern
from tests.helpers.http_sink import open_http_sink
from tests.roles.helpers import (
    DelegatingTransport,
    central_config,
    eventually,
    numbered,
    received_numbers,
    running_controller,
    running_runner,
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


async def post_all(client: Any) -> None:
    for n in range(EVENTS):
        assert (await client.post("/", content=numbered(n))).status_code == 200


async def test_a_crash_in_the_runner_link_is_restarted_and_loses_or_doubles_nothing(tmp_path):
    bus = InMemoryBus()
    runner_transport = FlakyTransport(bus.connect("runner-1"), crash_after_request_number=5)
    async with open_http_sink() as sink:
        async with running_controller(tmp_path, central_config(sink.url), bus.connect("controller")) as (
            controller, _
        ), running_runner(tmp_path, "runner-1", runner_transport) as (runner, r_client):
            await post_all(r_client)
            # Positive signals first: every event acknowledged and out of the outbox, the resend of
            # the one whose acknowledgement the crash swallowed recognised as a duplicate.
            await eventually(lambda: runner_transport.requests == EVENTS + 1)
            await eventually(lambda: controller.duplicates == 1)
            assert await runner.node.store.outbox_count() == 0
            await eventually(lambda: len(sink.requests) == EVENTS)
            assert sorted(received_numbers(sink)) == list(range(EVENTS))  # each once
            assert runner_transport.crashes == 1
            assert runner.link is not None and runner.link.restart_count == 1
            assert not runner.node.stopped.is_set()  # the node never noticed
            metrics = runner.node.metrics.render().decode()
            assert 'postee_actor_restarts_total{child="outbox",supervisor="runner-link"} 1.0' in metrics


async def test_a_crash_in_the_controller_bus_side_is_restarted_and_the_runner_resends(tmp_path):
    bus = InMemoryBus()
    controller_transport = FlakyTransport(bus.connect("controller"), crash_on_message_number=3)
    async with open_http_sink() as sink:
        async with running_controller(tmp_path, central_config(sink.url), controller_transport) as (
            controller, _
        ), running_runner(tmp_path, "runner-1", bus.connect("runner-1")) as (runner, r_client):
            await post_all(r_client)
            # The third event was lost with the crashed subscription: the runner's request timed out
            # and it sent that event again to the restarted one.
            await eventually(lambda: len(sink.requests) == EVENTS, timeout=60)
            await eventually(lambda: runner.upstream.sent == EVENTS)
            assert await runner.node.store.outbox_count() == 0
            assert sorted(received_numbers(sink)) == list(range(EVENTS))
            assert controller_transport.crashes == 1
            assert controller.bus is not None and controller.bus.restart_count == 1
            assert not controller.node.stopped.is_set()
            metrics = controller.node.metrics.render().decode()
            assert 'postee_actor_restarts_total{child="events",supervisor="controller-bus"} 1.0' in metrics


async def test_the_link_and_bus_supervisors_have_one_child_per_service(tmp_path):
    bus = InMemoryBus()
    async with running_controller(tmp_path, central_config("http://127.0.0.1:9"), bus.connect("controller")) as (
        controller, _
    ), running_runner(tmp_path, "runner-1", bus.connect("runner-1")) as (runner, _):
        assert runner.link is not None and runner.link.children == ["outbox", "heartbeats", "config-watch"]
        # each kind twice: every runner's own subjects, and Postee's shared one (for Postee runners)
        assert controller.bus is not None and controller.bus.children == [
            "config", "postee-config", "events", "postee-events", "executions", "postee-executions",
            "heartbeats", "postee-heartbeats"]
