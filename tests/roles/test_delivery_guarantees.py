"""What the controller/runner protocol promises, each checked by an assertion at a positive signal.

- The controller processes an event id once: the same `postee.events` message delivered twice runs
  the controller's actions once, and both deliveries are acknowledged (the sender may have lost the
  first acknowledgement), the second counted as a duplicate.
- The runner's outbox keeps an item until the controller acknowledged it: when the first request is
  refused (the bus is down, or the controller answers something other than `ack`), everything still
  arrives, exactly once and in order, and the outbox empties.

The controller's route is serialized, so its actions run in arrival order, event after event: once
the last event reached the HTTP sink, every earlier one has too, and a missing or doubled one shows
in the list the sink received rather than as a wait that never ends.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import TransportUnavailable
from actors.testing import InMemoryBus
from actors.transport import Message, Transport
from postee.bus.protocol import ACK, EVENTS_KIND, HEADER_EVENT_ID, HEADER_RUNNER, NACK_PREFIX, runner_subject
from tests.daemon.helpers import admin_get
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

EVENTS_SUBJECT = runner_subject("runner-1", EVENTS_KIND)

EVENTS = 8


async def test_a_repeated_event_id_is_processed_once_and_acknowledged_twice(tmp_path):
    bus = InMemoryBus()
    async with open_http_sink() as sink:
        cfg = central_config(sink.url, serialize=True)
        async with running_controller(tmp_path, cfg, bus.connect("controller")) as (
            controller, client
        ):
            sender = bus.connect("x")  # a runner as the bus sees it: its name and event ids in the headers

            async def send(n: int, event_id: str) -> Message:
                headers = {HEADER_RUNNER: "runner-1", HEADER_EVENT_ID: event_id}
                return await sender.request(EVENTS_SUBJECT, numbered(n), headers=headers, timeout=10)

            first = await send(1, "event-1")
            again = await send(1, "event-1")  # the same message: its first acknowledgement was lost
            assert (first.data, again.data) == (ACK, ACK)
            assert controller.duplicates == 1
            assert (await send(2, "event-2")).data == ACK  # a new id after it: the positive signal below
            await eventually(lambda: 2 in received_numbers(sink), timeout=20)
            assert received_numbers(sink) == [1, 2]  # event-1's action ran once
            assert controller.duplicates == 1
            metrics = controller.node.metrics.render().decode()
            assert 'postee_runner_events_total{runner="runner-1"} 2.0' in metrics
            events = (await admin_get(client, controller.node, "/events")).json()
            assert sorted(e["id"] for e in events if e["source"] == "runner-1") == ["event-1", "event-2"]


class RefusingTransport(DelegatingTransport):
    """A `Transport` that forwards to `inner`, but refuses the first request on the events subject.

    `how="unavailable"`: it raises `TransportUnavailable` (the bus was down) without sending anything;
    `how="nack"`: it answers `nack:...` in the controller's stead (the controller could not take it).
    """

    def __init__(self, inner: Transport, how: str) -> None:
        super().__init__(inner)
        self.how = how
        self.refused = 0
        self.forwarded = 0

    async def request(self, subject: str, data: bytes, **options: Any) -> Message:
        if subject == EVENTS_SUBJECT and not self.refused:
            self.refused += 1
            if self.how == "unavailable":
                raise TransportUnavailable("injected: the bus is down for this one request")
            return Message(subject="_INBOX.refused", data=NACK_PREFIX + b"injected: not now")
        reply = await self.inner.request(subject, data, **options)
        if subject == EVENTS_SUBJECT:
            self.forwarded += 1
        return reply


async def outbox_count_reaches_zero(runner: Any, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while await runner.node.store.outbox_count() != 0:
            await trio.sleep(0.02)


@pytest.mark.parametrize("how", ["unavailable", "nack"])
async def test_the_outbox_keeps_an_item_the_controller_did_not_acknowledge(tmp_path, how):
    bus = InMemoryBus()
    runner_transport = RefusingTransport(bus.connect("runner-1"), how)
    async with open_http_sink() as sink:
        cfg = central_config(sink.url, serialize=True)
        async with running_controller(tmp_path, cfg, bus.connect("controller")) as (
            controller, _
        ), running_runner(tmp_path, "runner-1", runner_transport) as (runner, r_client):
            for n in range(EVENTS):
                assert (await r_client.post("/", content=numbered(n))).status_code == 200
            await eventually(lambda: runner.upstream.events_reported == EVENTS)  # all in the outbox
            await outbox_count_reaches_zero(runner)
            assert runner_transport.refused == 1
            # The last event reached the sink: with a serialized route every earlier one has run.
            await eventually(lambda: EVENTS - 1 in received_numbers(sink), timeout=20)
            assert received_numbers(sink) == list(range(EVENTS))  # the refused one too, each once, in order
            assert runner_transport.forwarded == EVENTS  # the refused one was sent again, once
            assert runner.upstream.sent == EVENTS
            assert controller.duplicates == 0
