"""The in-memory bus with seeded faults: loss, delay, reordering, duplicates, partitions, disconnects.

`SimBus` is `actors.memory_transport.InMemoryBus` with a network between the nodes. Each delivery
(one message to one subscription) draws its fate from the simulation's random generator, so one seed
gives one fault schedule:

- **loss**: the delivery never arrives (a request then times out; the outbox resends);
- **delay**: it arrives later, up to `BusFaults.delay` seconds of virtual time;
- **reordering, where NATS allows it**: NATS keeps the order of one publisher's messages to one
  subscriber, not across publishers. Delays keep the first (a delivery never overtakes an earlier
  one from the same sender to the same subscription) and so reorder only the second;
- **duplicates**: it arrives twice (as a redelivery would);
- **partitions** between named nodes (`partition(a, b)` / `heal(a, b)`): nothing passes either way;
- **disconnect/reconnect** of a node (`disconnect(name)` / `connect(name)`): its calls fail, it
  receives nothing, as the base bus does (a delivery already on its way is traced as `gone`; one
  published while it is cut off finds no subscription and is not traced).

Unlike the base bus, a publish never waits for a slow subscriber: like a NATS server, the bus buffers
(per subscription, in order) and the publisher goes on. Every delivery and every fault is recorded in
the `Trace`.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import random

import attrs
import trio

from actors.memory_transport import InMemoryBus, InMemoryTransport, _Sub
from actors.transport import Message
from postee.sim.trace import Trace

__all__ = ["BusFaults", "SimBus"]


@attrs.frozen
class BusFaults:
    """Probabilities per delivery, and the longest delay (seconds of virtual time)."""

    loss: float = 0.0
    duplicate: float = 0.0
    delayed: float = 0.0
    """The share of deliveries that are delayed."""
    delay: float = 0.0
    """A delayed delivery arrives up to this many seconds late (uniformly drawn)."""


NO_FAULTS = BusFaults()

SLOW_CONSUMER_LIMIT = 65_536
"""Messages the bus holds for one subscription that does not keep up (nats-server's default pending
message limit); beyond, they are dropped and traced, as the server drops a slow consumer's."""


def _kind(subject: str) -> str:
    """A subject as the trace names it: its first tokens, without per-request inbox numbers."""
    return subject if not subject.startswith("_INBOX.") else "_INBOX"


class SimBus(InMemoryBus):
    """See the module docstring. Run `serve` in a nursery before nodes use it."""

    def __init__(self, rng: random.Random, trace: Trace, faults: BusFaults = NO_FAULTS) -> None:
        super().__init__()
        self.rng = rng
        self.trace = trace
        self.faults = faults
        self.partitions: collections.Counter[frozenset[str]] = collections.Counter()
        """Partitions in force per pair of nodes (two overlapping ones end when both healed)."""
        self._queue: list[tuple[float, int, _Sub, Message, str]] = []
        self._seq = itertools.count()
        self._last_due: dict[tuple[str, int], float] = {}
        """Per (sender, subscription): the due time of its latest delivery (deliveries keep that order)."""
        self._scheduled: collections.Counter[tuple[str, int]] = collections.Counter()
        """Per (sender, subscription): deliveries in the queue (a later one may not go straight through)."""
        self._backlogs: dict[int, collections.deque[Message]] = {}
        """Per subscription whose buffer was full: what waits, in order, for its pump."""
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.lost = 0
        self.duplicated = 0
        self.delayed = 0
        self.delivered = 0

    # -- faults the simulator injects --------------------------------------------------------------
    def partition(self, a: str, b: str) -> None:
        self.partitions[frozenset((a, b))] += 1
        self.trace.add("partition", a=a, b=b)

    def heal(self, a: str, b: str, *, all_of_them: bool = False) -> None:
        pair = frozenset((a, b))
        self.partitions[pair] = 0 if all_of_them else max(self.partitions[pair] - 1, 0)
        if not self.partitions[pair]:
            del self.partitions[pair]
        self.trace.add("heal", a=a, b=b)

    def disconnect(self, name: str) -> None:
        super().disconnect(name)
        self.trace.add("disconnect", node=name)

    def connect(self, name: str) -> InMemoryTransport:
        self.trace.add("connect", node=name)
        return super().connect(name)

    def in_flight(self) -> int:
        """Deliveries scheduled or waiting in a backlog (0 once the network is quiet)."""
        return len(self._queue) + sum(len(b) for b in self._backlogs.values())

    # -- delivery ----------------------------------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver delayed messages when they are due, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                if not self._queue:
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                due = self._queue[0][0]
                if due > trio.current_time():
                    with trio.move_on_at(due):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                _, _, sub, msg, sender = heapq.heappop(self._queue)
                pair = (sender, id(sub))
                self._scheduled[pair] -= 1
                if not self._scheduled[pair]:  # nothing of this pair waits: no order left to keep
                    del self._scheduled[pair]
                    self._last_due.pop(pair, None)
                self._arrive(sub, msg, sender)

    async def _deliver(self, msg: Message, sender: InMemoryTransport | None = None) -> int:
        name = sender.name if sender is not None else "?"
        targets = self._targets(msg)
        for sub in targets:
            self._route(sub, msg, name)
        self.published += 1
        await trio.lowlevel.checkpoint()
        return len(targets)

    def _route(self, sub: _Sub, msg: Message, sender: str) -> None:
        """Decide one delivery's fate (seeded) and schedule it."""
        receiver = sub.client.name
        faults, rng = self.faults, self.rng
        if self.partitions and frozenset((sender, receiver)) in self.partitions:
            self.lost += 1
            self.trace.add("cut", frm=sender, to=receiver, s=_kind(msg.subject))
            return
        if faults.loss and rng.random() < faults.loss:
            self.lost += 1
            self.trace.add("lose", frm=sender, to=receiver, s=_kind(msg.subject))
            return
        copies = 2 if faults.duplicate and rng.random() < faults.duplicate else 1
        if copies == 2:
            self.duplicated += 1
            self.trace.add("duplicate", frm=sender, to=receiver, s=_kind(msg.subject))
        now = trio.current_time()
        pair = (sender, id(sub))
        for _ in range(copies):
            delay = 0.0
            if faults.delayed and rng.random() < faults.delayed:
                delay = rng.uniform(0, faults.delay)
                self.delayed += 1
            due = max(now + delay, self._last_due.get(pair, now))
            if due <= now and pair not in self._scheduled:
                self._arrive(sub, msg, sender)
            else:
                self._last_due[pair] = due
                self._scheduled[pair] += 1
                heapq.heappush(self._queue, (due, next(self._seq), sub, msg, sender))
                self._wake.set()

    def _arrive(self, sub: _Sub, msg: Message, sender: str) -> None:
        """Hand the message to the subscription; a full buffer keeps it, in order, for a pump."""
        if not sub.client.connected:
            self.lost += 1
            self.trace.add("gone", frm=sender, to=sub.client.name, s=_kind(msg.subject))
            return
        self.delivered += 1
        self.trace.add("deliver", frm=sender, to=sub.client.name, s=_kind(msg.subject), n=len(msg.data))
        backlog = self._backlogs.get(id(sub))
        if backlog is None:
            try:
                sub.send.send_nowait(msg)
                return
            except trio.WouldBlock:
                backlog = self._backlogs[id(sub)] = collections.deque()
                assert self._nursery is not None, "SimBus.serve must run before nodes use the bus"
                self._nursery.start_soon(self._pump, sub, backlog)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.trace.add("unsubscribed", to=sub.client.name, s=_kind(msg.subject))
                return
        if len(backlog) >= SLOW_CONSUMER_LIMIT:  # as a NATS server drops a slow consumer's messages
            self.lost += 1
            self.trace.add("slow-consumer", to=sub.client.name, s=_kind(msg.subject))
            return
        backlog.append(msg)

    async def _pump(self, sub: _Sub, backlog: collections.deque[Message]) -> None:
        """Feed a slow subscription its backlog in order, waiting for room (the publisher never waits)."""
        try:
            while backlog:
                await sub.send.send(backlog[0])
                backlog.popleft()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # unsubscribed meanwhile: what waited is gone with it
        finally:
            self._backlogs.pop(id(sub), None)
