"""The hand-off between a transport's Trio side and its asyncio thread: typed messages, in batches.

nats-py only runs on asyncio, so each `NatsTransport` (Trio) drives a `NatsLoop` (nats-py on a
thread of its own). Everything that crosses between the two goes through one `Handoff`, and the
Trio side never blocks on the other thread:

* **Trio -> asyncio** (publish, request, subscribe, unsubscribe, flush): `Command`s are appended
  to a deque and the asyncio side is woken with *one* `loop.call_soon_threadsafe` per batch (no
  new wake-up is sent while one is pending). The loop's pump drains the deque in order, so a
  publish followed by a request on the same transport reach the server in that order.
  `Control` messages (credits, cancelling a call, stopping) must not wait behind queued
  publishes: each goes to the loop at once with its own `call_soon_threadsafe` (they are rare).
* **asyncio -> Trio** (messages, replies, link changes, freed room): `Notice`s are appended to
  another deque, handed over with *one* `TrioToken.run_sync_soon` per batch; a subscriber that is
  already busy is not woken at all (it finds the messages when it looks).

Crossing per message caps at 2-5k msg/s; crossing per batch reaches tens of thousands.

Credits (incoming back-pressure): each subscription has a hand-over buffer of at most `capacity`
messages (`SubscriptionState.incoming`, a deque: cheaper per message than a memory channel, and
bounded the same way) and a credit counter on the asyncio side. The asyncio side never hands over
more than the credits, so the buffer never overflows; when the credits are spent, delivery for
*that* subscription pauses (other subscriptions go on) and nats-py keeps the messages in the
subscription's pending queue. The Trio side returns credits (`AddCredits`) in batches of half the
capacity as the consumer reads.

Deque `append`/`popleft` are atomic under the GIL, which is what lets the two threads share these
queues without a lock. Each side dispatches on the type of what it receives.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any, TypeAlias

import attrs
import outcome
import trio

from actors.transport import Message

__all__ = [
    "BRIDGE_LOGGER",
    "AddCredits",
    "Call",
    "CallDone",
    "CancelCall",
    "ClosedForGood",
    "Command",
    "ConnectResult",
    "Control",
    "Dropped",
    "ErrorSeen",
    "Flush",
    "ForceStop",
    "Handoff",
    "LinkChanged",
    "Lost",
    "Notice",
    "Publish",
    "Request",
    "RoomFreed",
    "Stalled",
    "Stop",
    "Subscribe",
    "SubscriptionState",
    "ThreadExited",
    "Unsubscribe",
    "WakeSubscriber",
]

#: One logger for the whole bridge (transport, loop, hand-off), as operators configure it.
BRIDGE_LOGGER = "postee.bus.bridge"

log = logging.getLogger(BRIDGE_LOGGER)


# -- shared state ---------------------------------------------------------------------------------
class Call:
    """The Trio side's wait for a command that answers (`Request`, `Subscribe`, `Flush`).

    The asyncio side runs the command as a task and hands its outcome back (`CallDone`); a Trio
    caller that is cancelled while waiting sends `CancelCall`, which cancels the task."""

    __slots__ = ("event", "result", "task", "cancelled")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: outcome.Outcome | None = None
        self.task: asyncio.Task[Any] | None = None  # asyncio side only
        self.cancelled = False  # asyncio side only


class SubscriptionState:
    """Shared state of one subscription.

    `incoming` is the hand-over buffer: the asyncio side appends, the Trio side pops (deque
    operations are atomic). It is bounded by `credits`: the asyncio side never has more than
    `capacity` messages outstanding (in `incoming` or read but not yet credited back).
    `credits`, `event`, `nsub` belong to the asyncio side; `waiter` to the Trio side; `waiting`
    and `scheduled` are the hand-shake flags (see `NatsLoop._subscribe`'s `on_message`)."""

    __slots__ = (
        "subject",
        "queue",
        "incoming",
        "credits",
        "event",
        "nsub",
        "dropped",
        "closed",
        "ended",
        "waiter",
        "waiting",
        "scheduled",
    )

    def __init__(self, subject: str, queue: str, capacity: int) -> None:
        self.subject = subject
        self.queue = queue
        self.incoming: collections.deque[Message] = collections.deque()
        self.credits = capacity
        self.event: asyncio.Event | None = None
        self.nsub: Any = None
        self.dropped = 0
        self.closed = False  # the Trio side left the subscription
        self.ended = False  # no more messages will come (transport closed)
        self.waiter: trio.Event | None = None
        self.waiting = False
        self.scheduled = False

    async def wait_for_credit(self) -> None:
        """asyncio side: wait until the Trio side has returned credits. Meanwhile this subscription's
        delivery pauses and nats-py keeps its messages pending."""
        event = self.event
        assert event is not None
        while self.credits <= 0:
            event.clear()
            await event.wait()

    def add_credits(self, n: int) -> None:
        """asyncio side: the Trio side read `n` messages."""
        self.credits += n
        if self.event is not None:
            self.event.set()

    def wake(self) -> None:
        """Trio side: wake the consumer waiting for messages (or for the end)."""
        self.scheduled = False
        self.waiting = False
        if self.waiter is not None:
            self.waiter.set()


# -- Trio -> asyncio: commands, in order through the pump ----------------------------------------
@attrs.define
class Publish:
    """Send one message. One is made per message: a plain (not frozen) attrs class is the cheaper
    to build, and nobody changes it after."""

    subject: str
    data: bytes
    headers: dict[str, str] | None


@attrs.frozen(eq=False)
class Request:
    """Send a request and answer `call` with the first reply (a `Message`)."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    timeout: float
    call: Call = attrs.field(factory=Call)


@attrs.frozen(eq=False)
class Subscribe:
    """Subscribe for `state`; `call` is answered once the server has the subscription."""

    state: SubscriptionState
    call: Call = attrs.field(factory=Call)


@attrs.frozen(eq=False)
class Unsubscribe:
    """Forget the subscription of `state` (the Trio side has left it)."""

    state: SubscriptionState


@attrs.frozen(eq=False)
class Flush:
    """Answer `call` once everything queued before it reached the server."""

    timeout: float
    call: Call = attrs.field(factory=Call)


Command: TypeAlias = Publish | Request | Subscribe | Unsubscribe | Flush


# -- Trio -> asyncio: control, at once --------------------------------------------------------------
@attrs.frozen(eq=False)
class AddCredits:
    """The Trio side read `n` messages of `state`: the asyncio side may hand over `n` more."""

    state: SubscriptionState
    n: int


@attrs.frozen(eq=False)
class CancelCall:
    """The Trio caller of `call` was cancelled: cancel its task (or never start it)."""

    call: Call


@attrs.frozen
class Stop:
    """Close gracefully: send what was accepted, flush, close the client, end the thread."""


@attrs.frozen
class ForceStop:
    """The graceful close overran its deadline: cancel the loop's main task."""


Control: TypeAlias = AddCredits | CancelCall | Stop | ForceStop


# -- asyncio -> Trio: notices ---------------------------------------------------------------------
@attrs.frozen(eq=False)
class ConnectResult:
    """The first connect's verdict: the server's max_payload, or the error to raise."""

    result: outcome.Outcome


@attrs.frozen
class LinkChanged:
    """The link went up or down; `max_payload` is the server's (0: unknown, keep the last one)."""

    up: bool
    max_payload: int


@attrs.frozen
class ErrorSeen:
    """The NATS client reported an error (`NatsTransport.last_error`)."""

    text: str


@attrs.frozen(eq=False)
class Dropped:
    """nats-py dropped a message of `state` (slow consumer past its pending limits)."""

    state: SubscriptionState


@attrs.frozen
class Lost:
    """`count` accepted publishes could not be sent (refused by nats-py, or left at close)."""

    count: int


@attrs.frozen
class RoomFreed:
    """`count` publishes left the queue: room for as many more."""

    count: int


@attrs.frozen
class Stalled:
    """Whether the asyncio side holds publishes nats-py cannot buffer (the link is down)."""

    stalled: bool


@attrs.frozen(eq=False)
class CallDone:
    """The outcome of `call`'s command."""

    call: Call
    result: outcome.Outcome


@attrs.frozen(eq=False)
class WakeSubscriber:
    """Messages arrived for `state` while its consumer was waiting."""

    state: SubscriptionState


@attrs.frozen
class ClosedForGood:
    """The NATS client gave up on the connection (or the pump crashed): the transport is dead."""

    reason: str


@attrs.frozen
class ThreadExited:
    """The asyncio thread has ended; nothing more will come."""


Notice: TypeAlias = (
    ConnectResult
    | LinkChanged
    | ErrorSeen
    | Dropped
    | Lost
    | RoomFreed
    | Stalled
    | CallDone
    | WakeSubscriber
    | ClosedForGood
    | ThreadExited
)


# -- the hand-off ---------------------------------------------------------------------------------
class Handoff:
    """The queues between one transport's two sides, and their batched wake-ups.

    `deliver` runs on the Trio thread for each `Notice`, in order. `attach` is called once, from
    the Trio side, before the asyncio thread starts.
    """

    def __init__(self, name: str, deliver: Callable[[Notice], None]) -> None:
        self.name = name
        self._deliver = deliver
        # Trio -> asyncio.
        self.commands: collections.deque[Command] = collections.deque()
        self._wake_pending = False
        # An asyncio.Event binds to a loop only when first awaited, so it can be made here.
        self._wake = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_closed = False  # set by the asyncio thread as its loop closes
        self._control: Callable[[Control], None] | None = None
        # asyncio -> Trio.
        self._notices: collections.deque[Notice] = collections.deque()
        self._notices_pending = False
        self._token: trio.lowlevel.TrioToken | None = None

    def attach(
        self, token: trio.lowlevel.TrioToken, loop: asyncio.AbstractEventLoop, control: Callable[[Control], None]
    ) -> None:
        """Connect the two sides: notices go to `token`'s run, commands and control to `loop`."""
        self._token = token
        self.loop = loop
        self._control = control

    # -- Trio side ---------------------------------------------------------------------------------
    def submit(self, command: Command) -> None:
        """Queue a command for the pump; at most one wake-up in flight."""
        self.commands.append(command)
        if not self._wake_pending:
            self._wake_pending = True
            self._call_soon(self._wake.set)

    def control(self, message: Control) -> None:
        """Send a control message now, ahead of the queued commands (dropped once the loop is gone)."""
        if self._control is not None:
            self._call_soon(self._control, message)

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self.loop
        if loop is None or self.loop_closed:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed meanwhile
            pass

    # -- asyncio side ------------------------------------------------------------------------------
    async def wait_commands(self) -> None:
        """Wait for the next wake-up; commands queued from now on send a new one."""
        await self._wake.wait()
        self._wake.clear()
        self._wake_pending = False

    def wake_pump(self) -> None:
        """Have the pump look at its queues again (after a reconnect, before closing)."""
        self._wake.set()

    def to_trio(self, notice: Notice) -> None:
        """Queue a notice for the Trio side; at most one `run_sync_soon` in flight."""
        self._notices.append(notice)
        if not self._notices_pending:
            self._notices_pending = True
            assert self._token is not None
            try:
                self._token.run_sync_soon(self._drain)
            except trio.RunFinishedError:
                pass

    def _drain(self) -> None:
        """On the Trio thread: deliver every queued notice, in order."""
        self._notices_pending = False
        queue = self._notices
        deliver = self._deliver
        while queue:
            notice = queue.popleft()
            try:
                deliver(notice)
            except Exception:  # never let a bug crash the Trio run
                # The type only: a notice may carry a message's payload (a runner's config slice).
                log.exception("nats bridge %s: handling %s failed", self.name, type(notice).__name__)
