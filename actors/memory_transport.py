"""An in-memory bus with the `Transport` interface, for running several nodes in one process.

`InMemoryBus` plays the NATS server; `bus.connect(name)` gives each node its own client. It is
deterministic under Trio's mock clock and lossless: a publish waits while a subscriber's buffer
is full (NATS would drop the slow consumer's messages; in tests we want every message accounted
for). Delivery is in publish order per subscriber. Queue groups deliver each message to one
member, round-robin. A client can be cut off (`bus.disconnect(name)`) and reconnected to test
outages: while cut off its operations raise `TransportUnavailable` and it receives nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import trio

from actors.errors import NoResponders, TransportTimeout, TransportUnavailable
from actors.transport import (
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SUBSCRIPTION_CAPACITY,
    Message,
    subject_matches,
    validate_subject,
)


@attrs.define(eq=False)
class _Sub:
    client: InMemoryTransport
    subject: str
    queue: str
    send: trio.MemorySendChannel[Message]
    seq: int = 0
    """Order of subscription: deliveries and queue groups follow it."""


class MemorySubscription:
    """A subscription on the in-memory bus: iterate it, or `await next(timeout)`."""

    def __init__(self, subject: str, receive: trio.MemoryReceiveChannel[Message]) -> None:
        self.subject = subject
        self._receive = receive

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        async for msg in self._receive:
            yield msg

    async def next(self, timeout: float | None = None) -> Message:
        with trio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            return await self._receive.receive()
        assert scope.cancelled_caught
        raise TransportTimeout(f"no message on {self.subject!r} within {timeout:g}s")


class InMemoryBus:
    """The shared 'server' of in-memory transports."""

    def __init__(self) -> None:
        self._exact: dict[str, list[_Sub]] = {}
        """Subscriptions without wildcards, by subject (a thousand runners' inboxes: no scan of them all)."""
        self._wild: list[_Sub] = []
        self._sub_seq = itertools.count()
        self._round_robin: dict[tuple[str, str], itertools.count[int]] = {}
        self._inbox_ids = itertools.count(1)
        self._clients: dict[str, InMemoryTransport] = {}
        self.published = 0

    def connect(self, name: str) -> InMemoryTransport:
        """A client for node `name` (reconnects the existing client of that name)."""
        client = self._clients.get(name)
        if client is None:
            client = InMemoryTransport(self, name)
            self._clients[name] = client
        client.connected = True
        return client

    def clients(self) -> dict[str, InMemoryTransport]:
        """The clients by node name (connected or not)."""
        return dict(self._clients)

    def disconnect(self, name: str) -> None:
        """Cut node `name` off the bus until `connect(name)` is called again."""
        client = self._clients.get(name)
        if client is not None:
            client.connected = False

    def _add(self, sub: _Sub) -> None:
        sub.seq = next(self._sub_seq)
        if "*" in sub.subject.split(".") or sub.subject.endswith(">"):
            self._wild.append(sub)
        else:
            self._exact.setdefault(sub.subject, []).append(sub)

    def _remove(self, sub: _Sub) -> None:
        if sub in self._wild:
            self._wild.remove(sub)
            return
        subs = self._exact.get(sub.subject, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self._exact.pop(sub.subject, None)

    def _new_inbox(self) -> str:
        return f"_INBOX.{next(self._inbox_ids)}"

    def _targets(self, msg: Message) -> list[_Sub]:
        """The subscriptions `msg` goes to: every matching one of a connected client, one per queue group."""
        plain: list[_Sub] = []
        groups: dict[tuple[str, str], list[_Sub]] = {}
        matching = self._exact.get(msg.subject, [])
        wild = [sub for sub in self._wild if subject_matches(sub.subject, msg.subject)]
        if wild:
            matching = sorted([*matching, *wild], key=lambda sub: sub.seq)
        for sub in matching:
            if not sub.client.connected:
                continue
            if sub.queue:
                groups.setdefault((sub.subject, sub.queue), []).append(sub)
            else:
                plain.append(sub)
        targets = list(plain)
        for key, members in groups.items():
            counter = self._round_robin.setdefault(key, itertools.count())
            targets.append(members[next(counter) % len(members)])
        return targets

    async def _deliver(self, msg: Message, sender: InMemoryTransport | None = None) -> int:
        """Deliver to every matching subscription (one per queue group); return how many got it.

        `sender` is the publishing client (a bus with faults between nodes needs to know it)."""
        delivered = 0
        for sub in self._targets(msg):
            try:
                await sub.send.send(msg)
                delivered += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the subscriber went away meanwhile
        self.published += 1
        return delivered


class InMemoryTransport:
    """One node's connection to an `InMemoryBus` (implements `actors.transport.Transport`)."""

    def __init__(self, bus: InMemoryBus, name: str) -> None:
        self.bus = bus
        self.name = name
        self._connected = True
        self._link_changed = trio.Event()

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        if value != self._connected:
            self._connected = value
            self._link_changed.set()
            self._link_changed = trio.Event()

    async def wait_connected(self) -> None:
        """Return once connected (at once when it is): the link watch of `postee.roles.upstream`."""
        while not self._connected:
            await self._link_changed.wait()

    async def wait_disconnected(self) -> None:
        """Return once cut off (`bus.disconnect`)."""
        while self._connected:
            await self._link_changed.wait()

    def _check(self) -> None:
        if not self.connected:
            raise TransportUnavailable(f"{self.name}: not connected to the bus")

    async def publish(self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        validate_subject(subject, wildcards=False)
        self._check()
        await self.bus._deliver(Message(subject=subject, data=bytes(data), headers=dict(headers or {})), self)

    @asynccontextmanager
    async def subscribe(
        self, subject: str, *, queue: str = "", capacity: int = DEFAULT_SUBSCRIPTION_CAPACITY
    ) -> AsyncIterator[MemorySubscription]:
        validate_subject(subject, wildcards=True)
        self._check()
        send, receive = trio.open_memory_channel[Message](capacity)
        sub = _Sub(client=self, subject=subject, queue=queue, send=send)
        self.bus._add(sub)
        try:
            async with receive:
                yield MemorySubscription(subject, receive)
        finally:
            self.bus._remove(sub)
            send.close()

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> Message:
        validate_subject(subject, wildcards=False)
        self._check()
        inbox = self.bus._new_inbox()
        async with self.subscribe(inbox, capacity=1) as replies:
            msg = Message(subject=subject, data=bytes(data), headers=dict(headers or {}), reply=inbox)
            if await self.bus._deliver(msg, self) == 0:
                raise NoResponders(f"no responders on {subject!r}")
            try:
                return await replies.next(timeout)
            except TransportTimeout:
                raise TransportTimeout(f"no reply on {subject!r} within {timeout:g}s") from None

    async def respond(self, message: Message, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        if not message.reply:
            raise ValueError(f"message on {message.subject!r} has no reply subject")
        await self.publish(message.reply, data, headers=headers)
