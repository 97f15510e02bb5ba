"""What the controller/runner protocol promises, each checked by an assertion at a positive signal.

- The controller processes an event id once: the same `postee.events` message delivered twice runs
  the controller's actions once, and both deliveries are acknowledged (the sender may have lost the
  first acknowledgement), the second counted as a duplicate.
- The runner's outbox keeps an item until the controller acknowledged it: when the first request is
  refused (the bus is down, or the controller answers something other than `ack`), everything still
  arrives, exactly once and in order, and the outbox empties.

The controller's route is serialized, so its action runs in arrival order, event after event: once
the last event reached it, every earlier one has too, and a missing or doubled one shows in the list
the action recorded rather than as a wait that never ends. Nodes, bus and actions run on Trio's
virtual clock (`tests/roles/sim_helpers.py`).
"""

from __future__ import annotations

from typing import Any

import pytest

from actors import TransportUnavailable
from actors.transport import Message, Transport
from postee.bus.protocol import ACK, EVENTS_KIND, HEADER_EVENT_ID, HEADER_RUNNER, NACK_PREFIX, runner_subject
from tests.roles.helpers import DelegatingTransport
from tests.roles.sim_helpers import (
    central_config,
    events_json,
    open_deployment,
    outbox_empty,
    received_numbers,
    settle,
    sim_event,
    submit,
)

EVENTS_SUBJECT = runner_subject("runner-1", EVENTS_KIND)

EVENTS = 8


async def test_a_repeated_event_id_is_processed_once_and_acknowledged_twice(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, sim.controller(central_config(serialize=True)) as controller:
        sender = sim.bus.connect("x")  # a runner as the bus sees it: its name and event ids in the headers

        async def send(n: int, event_id: str) -> Message:
            headers = {HEADER_RUNNER: "runner-1", HEADER_EVENT_ID: event_id}
            return await sender.request(EVENTS_SUBJECT, sim_event(n), headers=headers, timeout=10)

        first = await send(1, "event-1")
        again = await send(1, "event-1")  # the same message: its first acknowledgement was lost
        assert (first.data, again.data) == (ACK, ACK)
        assert controller.duplicates == 1
        assert (await send(2, "event-2")).data == ACK  # a new id after it: the positive signal below
        await settle(lambda: 2 in received_numbers(sim))
        assert received_numbers(sim) == [1, 2]  # event-1's action ran once
        assert [c.event_id for c in sim.recordings.calls] == ["event-1", "event-2"]
        assert controller.duplicates == 1
        metrics = controller.node.metrics.render().decode()
        assert 'postee_runner_events_total{runner="runner-1"} 2.0' in metrics
        events = events_json(controller.node)
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


@pytest.mark.parametrize("how", ["unavailable", "nack"])
async def test_the_outbox_keeps_an_item_the_controller_did_not_acknowledge(autojump_clock, tmp_path, how):
    async with open_deployment(tmp_path) as sim:
        runner_transport = RefusingTransport(sim.bus.connect("runner-1"), how)
        async with sim.controller(central_config(serialize=True)) as controller, \
                sim.runner("runner-1", runner_transport) as runner:
            for n in range(EVENTS):
                await submit(runner, sim_event(n))
            await settle(lambda: runner.upstream.events_reported == EVENTS)  # all in the outbox
            await outbox_empty(runner)
            assert runner_transport.refused == 1
            # The last event reached the controller's action: with a serialized route every earlier one has run.
            await settle(lambda: EVENTS - 1 in received_numbers(sim))
            assert received_numbers(sim) == list(range(EVENTS))  # the refused one too, each once, in order
            assert runner_transport.forwarded == EVENTS  # the refused one was sent again, once
            assert runner.upstream.sent == EVENTS
            assert controller.duplicates == 0
