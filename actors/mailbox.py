"""Mailboxes and addresses: a bounded memory channel with statistics and a graceful close.

An actor owns the receive end of its mailbox. Everybody else holds an `Address`, a clone of the
send end: `send` waits while the mailbox is full (back-pressure), `try_send` returns False
instead. Closing a mailbox stops it accepting new messages while the owner drains what was
already accepted, including messages from senders that were blocked on a full mailbox.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import attrs
import trio

from actors.errors import MailboxClosed

T = TypeVar("T")

DEFAULT_CAPACITY = 100
"""Default mailbox size: large enough to absorb bursts, small enough to push back early."""

QUEUED_IN_A_ROW = 16
"""Messages a receiver takes from a non-empty mailbox without yielding to the scheduler, before it
yields once (see `Mailbox.receive`)."""


class _Wake:
    """Sentinel put into a mailbox to wake a receiver blocked on an empty one at close."""


_WAKE = _Wake()


@attrs.frozen
class MailboxStats:
    """A snapshot of a mailbox for metrics and health checks."""

    name: str
    capacity: float
    depth: int
    high_water: int
    senders: int
    sent: int
    received: int
    closed: bool


class Mailbox(Generic[T]):
    """A bounded, observable, closable message queue with one receiver.

    Depth is counted here (messages accepted minus messages taken) rather than read from the
    channel's statistics, which would allocate on every send: the count is what a metrics
    scrape needs and costs two integer updates per message.
    """

    def __init__(self, capacity: float = DEFAULT_CAPACITY, *, name: str = "mailbox") -> None:
        if capacity != math.inf and (capacity < 0 or int(capacity) != capacity):
            raise ValueError(f"mailbox capacity must be a non-negative integer or math.inf, not {capacity!r}")
        self.name = name
        self.capacity = capacity
        self._send, self._receive = trio.open_memory_channel[object](capacity)
        self._closed = False
        self._in_a_row = 0
        self.sent = 0
        self.received = 0
        self.high_water = 0

    # -- sender side -------------------------------------------------------------------------
    def address(self) -> Address[T]:
        """A new address for this mailbox (a clone of the send end)."""
        if self._closed:
            raise MailboxClosed(f"mailbox {self.name!r} is closed")
        return Address(self, self._send.clone())

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop accepting messages; the owner drains what is queued, then its iteration ends.

        Idempotent and synchronous, so it can be called from a signal handler or a stop hook.
        """
        if self._closed:
            return
        self._closed = True
        try:
            # Wakes a receiver that waits on an empty mailbox; if the mailbox is not empty the
            # receiver is not blocked and will see the flag after its next message.
            self._send.send_nowait(_WAKE)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def stats(self) -> MailboxStats:
        return MailboxStats(
            name=self.name,
            capacity=self.capacity,
            depth=self.sent - self.received,
            high_water=self.high_water,
            senders=self._send.statistics().open_send_channels - 1,  # minus our own end
            sent=self.sent,
            received=self.received,
            closed=self._closed,
        )

    # -- receiver side -----------------------------------------------------------------------
    async def receive(self) -> T:
        """The next message; raises `MailboxClosed` once closed and drained.

        A message already queued is taken without a trip through the scheduler (Trio's `receive` yields
        even then, ~10 µs on a small VM, several times per event across a pipeline), but at most
        `QUEUED_IN_A_ROW` in a row, so a busy actor whose handler never waits still lets others run. It
        is still a cancel point: a cancelled receiver raises `Cancelled` and leaves the message queued
        (for the actor's restart, which keeps the mailbox).
        """
        while True:
            if self._closed:
                try:
                    msg = self._receive.receive_nowait()
                except trio.WouldBlock:
                    self._receive.close()  # senders still blocked or late get MailboxClosed
                    raise MailboxClosed(f"mailbox {self.name!r} is closed and drained") from None
                except (trio.ClosedResourceError, trio.EndOfChannel):
                    raise MailboxClosed(f"mailbox {self.name!r} is closed and drained") from None
            elif self._in_a_row < QUEUED_IN_A_ROW:
                await trio.lowlevel.checkpoint_if_cancelled()  # a cancelled receiver leaves the message queued
                try:
                    msg = self._receive.receive_nowait()
                    self._in_a_row += 1
                except trio.WouldBlock:
                    self._in_a_row = 0
                    msg = await self._receive.receive()
            else:
                self._in_a_row = 0
                msg = await self._receive.receive()
            if msg is _WAKE:
                continue
            self.received += 1
            return msg  # type: ignore[return-value]

    def receive_nowait(self) -> T:
        """The next message if one is queued; raises `trio.WouldBlock` otherwise."""
        while True:
            msg = self._receive.receive_nowait()
            if msg is not _WAKE:
                self.received += 1
                return msg  # type: ignore[return-value]

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                msg = await self.receive()
            except MailboxClosed:
                return
            yield msg


class Address(Generic[T]):
    """Where to send messages for one actor. Cheap to copy with `clone()`; close when done."""

    __slots__ = ("_mailbox", "_send")

    def __init__(self, mailbox: Mailbox[T], send: trio.MemorySendChannel[object]) -> None:
        self._mailbox = mailbox
        self._send = send

    @property
    def name(self) -> str:
        return self._mailbox.name

    async def send(self, message: T) -> None:
        """Deliver `message`, waiting while the mailbox is full. Raises `MailboxClosed`."""
        mailbox = self._mailbox
        if mailbox._closed:
            raise MailboxClosed(f"mailbox {mailbox.name!r} is closed")
        await trio.lowlevel.checkpoint_if_cancelled()  # a cancel point, as Trio's `send` (no yield)
        try:
            try:
                self._send.send_nowait(message)  # room: no trip through the scheduler (see `Mailbox.receive`)
                mailbox.sent += 1
            except trio.WouldBlock:
                # Counted while it waits: a receiver that takes queued messages without yielding may take
                # this one before this task resumes (the depth would read negative meanwhile).
                mailbox.sent += 1
                try:
                    await self._send.send(message)  # behind the senders already waiting: FIFO
                except BaseException:
                    mailbox.sent -= 1
                    raise
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise MailboxClosed(f"mailbox {mailbox.name!r} is closed") from None
        depth = mailbox.sent - mailbox.received
        if depth > mailbox.high_water:
            mailbox.high_water = depth

    def try_send(self, message: T) -> bool:
        """Deliver `message` if there is room now; False when the mailbox is full.

        Raises `MailboxClosed` when the mailbox no longer accepts messages: a full mailbox is
        a transient condition the caller may answer with 503, a closed one is not.
        """
        mailbox = self._mailbox
        if mailbox._closed:
            raise MailboxClosed(f"mailbox {mailbox.name!r} is closed")
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise MailboxClosed(f"mailbox {mailbox.name!r} is closed") from None
        mailbox.sent += 1
        depth = mailbox.sent - mailbox.received
        if depth > mailbox.high_water:
            mailbox.high_water = depth
        return True

    def clone(self) -> Address[T]:
        return Address(self._mailbox, self._send.clone())

    def close(self) -> None:
        """Release this address (the mailbox stays open for the other holders)."""
        self._send.close()

    def __enter__(self) -> Address[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Address of {self._mailbox.name!r}>"
