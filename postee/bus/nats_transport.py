"""The NATS bridge's Trio side: `NatsTransport`, an `actors.transport.Transport` over nats-py.

Each transport drives one `postee.bus.nats_loop.NatsLoop` (nats-py on a dedicated asyncio thread);
everything that crosses between the two goes through a `postee.bus.handoff.Handoff`, in batches,
and this side never blocks on that thread. `publish` and iterating a subscription are cancellation
points on every call but yield to the scheduler only every `YIELD_EVERY` calls (or when they must
wait): each yield polls the selector, a system call that hands the GIL to the asyncio thread, and a
hand-over per message is what caps the throughput.

Back-pressure, both ways, no silent loss:

* Outgoing: at most `max_outgoing` publishes are queued between Trio and nats-py; `publish`
  waits for room while the link is up. While the link is down nats-py buffers up to
  `pending_size` bytes (2 MiB by default); beyond that the messages stay in our queue ("held")
  and are sent after the reconnect, in order. When the link is down *and* the queue is full,
  `publish` raises `TransportUnavailable` at once (the caller keeps the message: the runner's
  outbox resends it). Messages accepted while the link was down are sent on reconnect; what
  was still buffered when the transport is closed during an outage is lost (the outbox covers
  it: the controller acknowledges every event).
* Incoming: each subscription has a hand-over buffer of at most `capacity` messages, bounded by
  credits (see `postee.bus.handoff`); when they are spent, delivery for *that* subscription
  pauses (other subscriptions go on) and nats-py keeps the messages pending, up to
  `sub_pending_msgs` / `sub_pending_bytes`. Only past that limit does nats-py drop (a "slow
  consumer"): the drops are counted (`Subscription.dropped`, `NatsTransport.stats`) and logged,
  never silent.

Errors at the boundary are the `actors.errors` family only: `TransportAuthError` (bad NKey,
authorization violation, TLS failure: retrying will not help), `TransportUnavailable` (link down,
transport closed, connect timeout), `TransportTimeout`, `NoResponders`, `TransportError`
(payload too large, bad subject/header). No exception group leaves this module: the constructors
raise one exception (`actors.one_error`).

This module is one piece (over 500 lines) because a transport and its subscriptions share their
Trio-side state: whether the transport is closing and why, the credits, the light checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import nats.errors
import outcome
import trio

from actors import one_error
from actors.errors import NoResponders, TransportError, TransportTimeout, TransportUnavailable
from actors.transport import DEFAULT_REQUEST_TIMEOUT, DEFAULT_SUBSCRIPTION_CAPACITY, Message, validate_subject
from postee.bus.handoff import (
    BRIDGE_LOGGER,
    AddCredits,
    Call,
    CallDone,
    CancelCall,
    ClosedForGood,
    ConnectResult,
    Dropped,
    ErrorSeen,
    Flush,
    ForceStop,
    Handoff,
    LinkChanged,
    Lost,
    Notice,
    Publish,
    Request,
    RoomFreed,
    Stalled,
    Stop,
    Subscribe,
    SubscriptionState,
    ThreadExited,
    Unsubscribe,
    WakeSubscriber,
)
from postee.bus.nats_checks import check_headers, check_size, check_subject
from postee.bus.nats_errors import describe, redact
from postee.bus.nats_loop import ClientSettings, NatsLoop

__all__ = [
    "NatsStats",
    "NatsSubscription",
    "NatsTransport",
    "connect_nats_transport",
    "open_nats_transport",
]

log = logging.getLogger(BRIDGE_LOGGER)

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_CLOSE_TIMEOUT = 5.0
DEFAULT_MAX_OUTGOING = 1024
DEFAULT_PENDING_SIZE = 2 * 1024 * 1024
DEFAULT_SUB_PENDING_MSGS = 65536
DEFAULT_SUB_PENDING_BYTES = 64 * 1024 * 1024
DEFAULT_RECONNECT_WAIT = 0.1
DEFAULT_RECONNECT_WAIT_MAX = 2.0
#: The server's max_payload assumed until it tells (nats-server's own default).
DEFAULT_MAX_PAYLOAD = 1024 * 1024
YIELD_EVERY = 64  # see NatsTransport._light_checkpoint
#: After `close_timeout`, how long the asyncio side is given to stop, then to stop when cancelled.
STOP_GRACE = 2.0
#: A request's own timeout is enforced on the asyncio side; Trio gives up this much later.
REQUEST_SAFETY_MARGIN = 1.0


class NatsStats:
    """Counters of one transport (read on the Trio side)."""

    __slots__ = ("published", "received", "dropped", "lost", "disconnects", "reconnects")

    def __init__(self) -> None:
        self.published = 0  # accepted by publish()
        self.received = 0  # handed to Trio subscriptions
        self.dropped = 0  # dropped by nats-py as a slow consumer (subscription pending limit hit)
        self.lost = 0  # accepted publishes nats-py refused (connection closed for good)
        self.disconnects = 0
        self.reconnects = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"NatsStats({self.as_dict()})"


class NatsSubscription:
    """A subscription: iterate it, or `await next(timeout)`.

    Iteration ends when the transport is closed (after the messages already received), `next`
    raises `TransportUnavailable` then; both raise `TransportUnavailable` when the connection
    was lost for good (the NATS client gave up), so a supervisor notices.
    """

    def __init__(self, transport: NatsTransport, state: SubscriptionState, capacity: int) -> None:
        self.subject = state.subject
        self.queue = state.queue
        self.capacity = capacity
        self._transport = transport
        self._state = state
        self._threshold = max(1, capacity // 2)
        self._unacked = 0

    @property
    def dropped(self) -> int:
        """Messages nats-py dropped for this subscription (slow consumer past its pending limits)."""
        return self._state.dropped

    def _take(self) -> Message | None:
        state = self._state
        try:
            msg = state.incoming.popleft()
        except IndexError:
            return None
        self._unacked += 1
        if self._unacked >= self._threshold:
            n, self._unacked = self._unacked, 0
            self._transport._return_credits(state, n)
        self._transport.stats.received += 1
        return msg

    async def _wait(self) -> bool:
        """Wait for a message; False when the subscription has ended because the transport was
        closed; `TransportUnavailable` when the connection was lost for good."""
        state = self._state
        while not state.incoming:
            if state.closed:
                return False
            if state.ended:
                if self._transport._closing:
                    return False
                raise TransportUnavailable(f"subscription {self.subject!r} ended: {self._transport._closed_reason()}")
            state.waiter = trio.Event()
            state.waiting = True
            if state.incoming:  # appended before the asyncio side could see `waiting`
                state.waiting = False
                break
            try:
                await state.waiter.wait()
            finally:
                state.waiting = False
        return True

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        light_checkpoint = self._transport._light_checkpoint
        while True:
            msg = self._take()
            if msg is None:
                if not await self._wait():
                    return
                msg = self._take()
                if msg is None:
                    continue
            else:
                await light_checkpoint()
            yield msg

    async def next(self, timeout: float | None = None) -> Message:
        msg = self._take()
        if msg is not None:
            await self._transport._light_checkpoint()
            return msg
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                if not await self._wait():
                    raise TransportUnavailable(
                        f"subscription {self.subject!r} ended: {self._transport._closed_reason()}"
                    )
                msg = self._take()
                if msg is not None:
                    return msg
        raise TransportTimeout(f"no message on {self.subject!r} within {timeout:g}s")


class NatsTransport:
    """A NATS client (implements `actors.transport.Transport`). Make it with `open_nats_transport`
    or `connect_nats_transport`; attributes are read on the Trio side.

    TLS comes from files (`tls_ca` to verify the server, else the system store; `tls_cert`/`tls_key`
    as client certificate) or from a ready `tls_context`, which wins. `nkey_seed_file` holds a bare
    seed or a decorated block (a `.creds` file): it is read when connecting, never logged; `nkey_seed`
    is a seed held in memory instead (the controller's own key). `inbox_prefix` is where replies to
    this client's requests arrive (a runner's own inbox, which only it may read)."""

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        name: str,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        nkey_seed_file: str | None = None,
        nkey_seed: bytes | None = None,
        inbox_prefix: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        max_outgoing: int = DEFAULT_MAX_OUTGOING,
        pending_size: int = DEFAULT_PENDING_SIZE,
        reconnect_wait: float = DEFAULT_RECONNECT_WAIT,
        reconnect_wait_max: float = DEFAULT_RECONNECT_WAIT_MAX,
        sub_pending_msgs: int = DEFAULT_SUB_PENDING_MSGS,
        sub_pending_bytes: int = DEFAULT_SUB_PENDING_BYTES,
        on_link_change: Callable[[bool], None] | None = None,
    ) -> None:
        if max_outgoing < 1:
            raise ValueError("max_outgoing must be >= 1")
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self._where = ", ".join(redact(url) for url in self.servers)  # for messages: no credentials
        self.name = name
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self.on_link_change = on_link_change

        self.connected = False
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self.stats = NatsStats()
        self.last_error: str | None = None
        self._out_free = max_outgoing
        self._ops = 0
        self._stalled = False  # the asyncio side holds publishes nats-py cannot buffer (link down)
        self._room = trio.lowlevel.ParkingLot()
        self._link_event = trio.Event()
        self._calls: set[Call] = set()
        self._subs: set[SubscriptionState] = set()
        self._started = False
        self._closing = False
        self._dead: str | None = None  # why the transport no longer works
        self._connect_result: outcome.Outcome | None = None
        self._connect_done = trio.Event()
        self._thread_exited = trio.Event()

        self._handoff = Handoff(name, self._on_notice)
        self._nats_loop = NatsLoop(
            ClientSettings(
                servers=tuple(self.servers),
                name=name,
                where=self._where,
                tls_ca=tls_ca,
                tls_cert=tls_cert,
                tls_key=tls_key,
                nkey_seed_file=nkey_seed_file,
                nkey_seed=nkey_seed,
                inbox_prefix=inbox_prefix,
                tls_context=tls_context,
                connect_timeout=connect_timeout,
                close_timeout=close_timeout,
                pending_size=pending_size,
                reconnect_wait=reconnect_wait,
                reconnect_wait_max=reconnect_wait_max,
                sub_pending_msgs=sub_pending_msgs,
                sub_pending_bytes=sub_pending_bytes,
            ),
            self._handoff,
        )

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        if self._started:
            raise RuntimeError("NatsTransport already started")
        self._started = True
        self._nats_loop.start(trio.lowlevel.current_trio_token())
        try:
            with trio.move_on_after(self._connect_timeout) as scope:
                await self._connect_done.wait()
        except BaseException:
            await self._shutdown()
            raise
        if scope.cancelled_caught:
            await self._shutdown()
            detail = self.last_error or "no answer"
            raise TransportUnavailable(
                f"{self.name}: could not connect to {self._where} within "
                f"{self._connect_timeout:g}s (last error: {detail})"
            )
        result = self._connect_result
        if result is None:  # the asyncio thread ended without a verdict
            await self._shutdown()
            raise TransportUnavailable(f"{self.name}: cannot connect: {self.last_error or 'the bridge stopped'}")
        if isinstance(result, outcome.Error):
            await self._shutdown()
            result.unwrap()

    async def aclose(self) -> None:
        """Send what was accepted (bounded by `close_timeout`), close the link, join the thread.
        Shielded from cancellation; idempotent."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        with trio.CancelScope(shield=True):
            if not self._closing:
                self._closing = True
                if self._dead is None:
                    self._dead = "transport closed"
                self._wake_room()
                self._handoff.control(Stop())
            if not self._nats_loop.started:
                return
            with trio.move_on_after(self._close_timeout + STOP_GRACE):
                await self._thread_exited.wait()
            if not self._thread_exited.is_set():
                log.warning("nats bridge %s: asyncio side did not stop in time, cancelling it", self.name)
                self._handoff.control(ForceStop())
                with trio.move_on_after(STOP_GRACE):
                    await self._thread_exited.wait()
            if self._thread_exited.is_set():
                self._nats_loop.join()
            else:  # pragma: no cover - the loop is wedged; the daemon thread is left behind
                log.error("nats bridge %s: asyncio thread did not exit", self.name)
            self._finalize()

    def _finalize(self) -> None:
        self.connected = False
        for call in list(self._calls):
            self._finish_call(call, outcome.Error(TransportUnavailable(f"{self.name}: {self._closed_reason()}")))
        for state in list(self._subs):
            state.ended = True
            state.wake()
        self._subs.clear()
        if self._thread_exited.is_set() or self._handoff.loop_closed:
            self._handoff.commands.clear()  # only once the asyncio side is gone: its pump pops from it
        self._wake_room()
        self._link_event.set()
        self._link_event = trio.Event()

    def _closed_reason(self) -> str:
        return self._dead or "transport closed"

    async def _watch(self) -> None:
        """The nursery-form background task: closes the transport when the nursery is cancelled,
        ends when the transport is closed."""
        try:
            await self._thread_exited.wait()
        finally:
            await self._shutdown()

    # ------------------------------------------------------------------ link state

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once the link is up; `TransportTimeout` after `timeout`, `TransportUnavailable` if closed."""
        await self._wait_link(True, timeout)

    async def wait_disconnected(self, timeout: float | None = None) -> None:
        """Return once the link is down (or the transport closed); `TransportTimeout` after `timeout`."""
        await self._wait_link(False, timeout)

    async def _wait_link(self, up: bool, timeout: float | None) -> None:
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while self.connected != up:
                if up and self._dead is not None:
                    raise TransportUnavailable(f"{self.name}: {self._closed_reason()}")
                if not up and self._dead is not None:
                    return
                await self._link_event.wait()
            await trio.lowlevel.checkpoint()
            return
        state = "up" if up else "down"
        raise TransportTimeout(f"{self.name}: link not {state} within {timeout:g}s")

    # ------------------------------------------------------------------ notices from the asyncio side

    def _on_notice(self, notice: Notice) -> None:
        """What the asyncio side reports, in order (run on the Trio thread by the hand-off)."""
        match notice:
            case RoomFreed(count):
                self._out_free += count
                self._wake_room()
            case WakeSubscriber(state):
                state.wake()
            case CallDone(call, result):
                self._finish_call(call, result)
            case LinkChanged(up, max_payload):
                self._set_link(up, max_payload)
            case Stalled(stalled):
                self._stalled = stalled
                self._wake_room()
            case ErrorSeen(text):
                self.last_error = text
            case Dropped(state):
                state.dropped += 1
                self.stats.dropped += 1
            case Lost(count):
                self.stats.lost += count
            case ConnectResult(result):
                self._connect_result = result
                if isinstance(result, outcome.Value):
                    self._set_link(True, result.value)
                    self.stats.reconnects = 0
                self._connect_done.set()
            case ClosedForGood(reason):
                log.error("nats bridge %s: the NATS client closed the connection for good: %s", self.name, reason)
                if self._dead is None:
                    self._dead = f"the NATS connection was closed: {reason}"
                self._set_link(False, 0)
                self._finalize()
            case ThreadExited():
                if self._dead is None:
                    self._dead = f"the NATS client stopped ({self.last_error or 'closed'})"
                self._connect_done.set()
                self._finalize()
                self._thread_exited.set()

    def _set_link(self, up: bool, max_payload: int) -> None:
        if max_payload:
            self.max_payload = max_payload
        if up == self.connected:
            return
        self.connected = up
        if up:
            self.stats.reconnects += 1
        else:
            self.stats.disconnects += 1
        self._link_event.set()
        self._link_event = trio.Event()
        self._wake_room()
        if self.on_link_change is not None:
            try:
                self.on_link_change(up)
            except Exception:
                log.exception("nats bridge %s: on_link_change failed", self.name)

    def _wake_room(self) -> None:
        if self._room:
            self._room.unpark_all()

    def _finish_call(self, call: Call, result: outcome.Outcome) -> None:
        if call.result is None:
            call.result = result
        self._calls.discard(call)
        call.event.set()

    # ------------------------------------------------------------------ commands to the asyncio side

    def _check_open(self) -> None:
        if self._dead is not None or self._closing:
            raise TransportUnavailable(f"{self.name}: {self._closed_reason()}")
        if not self._started or self._connect_result is None:
            raise TransportUnavailable(f"{self.name}: not connected yet")

    def _return_credits(self, state: SubscriptionState, n: int) -> None:
        if not state.closed:
            self._handoff.control(AddCredits(state, n))

    async def _run(self, command: Request | Subscribe | Flush) -> Any:
        """Have the asyncio side run `command` and wait for its outcome; cancellable from Trio."""
        call = command.call
        self._calls.add(call)
        self._handoff.submit(command)
        try:
            await call.event.wait()
        except BaseException:
            self._calls.discard(call)
            self._handoff.control(CancelCall(call))
            raise
        assert call.result is not None
        return call.result.unwrap()

    # ------------------------------------------------------------------ Transport API

    async def _light_checkpoint(self) -> None:
        """A cancellation point every call, a schedule point every `YIELD_EVERY` calls.

        Yielding to the Trio scheduler on every message makes Trio poll its selector each time;
        that system call releases the GIL to the asyncio thread, which then wakes up for a single
        message: the ping-pong caps throughput at a few thousand messages/s. Yielding every few
        dozen messages lets batches form. (Publishing also parks when the outgoing queue is full.)"""
        self._ops += 1
        if self._ops % YIELD_EVERY:
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            await trio.lowlevel.checkpoint()

    def _checked(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None
    ) -> tuple[bytes, dict[str, str] | None]:
        """What the server would refuse, refused here with a clear error; the payload as `bytes`."""
        check_subject(subject)
        hdrs, header_size = check_headers(headers)
        if type(data) is not bytes:
            data = bytes(data)
        check_size(subject, data, header_size, self.max_payload)
        self._check_open()
        return data, hdrs

    async def publish(self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        """Queue a message for sending. Waits for room while the link is up; raises
        `TransportUnavailable` when the link is down and the buffers are full, or when closed."""
        data, hdrs = self._checked(subject, data, headers)
        if self._out_free > 0:
            await self._light_checkpoint()
        while self._out_free <= 0:
            self._check_open()
            if not self.connected and self._stalled:
                raise TransportUnavailable(
                    f"{self.name}: link to NATS is down and the outgoing buffer is full; message on "
                    f"{subject!r} not accepted"
                )
            await self._room.park()
        self._check_open()
        self._out_free -= 1
        self.stats.published += 1
        self._handoff.submit(Publish(subject, data, hdrs))

    @asynccontextmanager
    async def subscribe(
        self, subject: str, *, queue: str = "", capacity: int = DEFAULT_SUBSCRIPTION_CAPACITY
    ) -> AsyncIterator[NatsSubscription]:
        """Subscribe (the server knows about it when this returns). Exits unsubscribe."""
        validate_subject(subject, wildcards=True)
        if queue and (" " in queue or "\t" in queue):
            raise TransportError(f"invalid queue group {queue!r}")
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._check_open()
        state = SubscriptionState(subject, queue, capacity)
        self._subs.add(state)
        try:
            try:
                await self._run(Subscribe(state))
            except nats.errors.Error as exc:
                raise TransportError(f"{self.name}: cannot subscribe to {subject!r}: {describe(exc)}") from None
            yield NatsSubscription(self, state, capacity)
        finally:
            state.closed = True
            state.incoming.clear()
            self._subs.discard(state)
            if self._dead is None and not self._closing:
                self._handoff.submit(Unsubscribe(state))

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ) -> Message:
        """Send a request and wait for the first reply. `TransportTimeout`, `NoResponders`,
        `TransportUnavailable` (link down: fails at once). Cancellable."""
        data, hdrs = self._checked(subject, data, headers)
        if not self.connected:
            raise TransportUnavailable(f"{self.name}: link to NATS is down; request on {subject!r} not sent")
        with trio.move_on_after(timeout + REQUEST_SAFETY_MARGIN):  # the asyncio side enforces `timeout`
            try:
                return await self._run(Request(subject, data, hdrs, timeout))
            except nats.errors.NoRespondersError:
                raise NoResponders(f"no responders on {subject!r}") from None
            except (TimeoutError, nats.errors.TimeoutError):
                raise TransportTimeout(f"no reply on {subject!r} within {timeout:g}s") from None
            except (
                nats.errors.OutboundBufferLimitError,
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionReconnectingError,
                asyncio.CancelledError,
            ) as exc:
                raise TransportUnavailable(f"{self.name}: request on {subject!r} failed: {describe(exc)}") from None
            except nats.errors.Error as exc:
                raise TransportError(f"{self.name}: request on {subject!r} failed: {describe(exc)}") from None
        raise TransportTimeout(f"no reply on {subject!r} within {timeout:g}s")

    async def respond(self, message: Message, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        if not message.reply:
            raise ValueError(f"message on {message.subject!r} has no reply subject")
        await self.publish(message.reply, data, headers=headers)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything published so far reached the server (a PING/PONG round trip)."""
        self._check_open()
        try:
            await self._run(Flush(timeout))
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransportUnavailable(f"{self.name}: flush failed: {describe(exc)}") from None


async def connect_nats_transport(
    nursery: trio.Nursery, servers: str | Sequence[str], *, name: str, **options: Any
) -> NatsTransport:
    """Connect and return a transport whose lifetime is tied to `nursery`: it is closed when the
    nursery is cancelled, and `await transport.aclose()` closes it earlier (the nursery's
    background task then ends). `options` are `NatsTransport`'s (tls_ca, tls_cert, tls_key,
    nkey_seed_file, connect_timeout, ...). A failed connect raises one exception, never a group."""
    transport = NatsTransport(servers, name=name, **options)
    with one_error():
        await transport._start()
    nursery.start_soon(transport._watch)
    return transport


@asynccontextmanager
async def open_nats_transport(
    servers: str | Sequence[str], *, name: str, **options: Any
) -> AsyncIterator[NatsTransport]:
    """`async with open_nats_transport("nats://127.0.0.1:4222", name="runner-1") as transport:`

    Connects (bounded by `connect_timeout`: `TransportUnavailable` when nothing answers,
    `TransportAuthError` at once when the server refuses our NKey or TLS identity), yields the
    transport, and on exit sends what was accepted, closes the link and joins the thread. `options`
    are `NatsTransport`'s (tls_ca, tls_cert, tls_key, nkey_seed_file, connect_timeout, ...). A
    failed connect raises one exception, never a group."""
    transport = NatsTransport(servers, name=name, **options)
    with one_error():
        await transport._start()
    try:
        yield transport
    finally:
        await transport.aclose()
