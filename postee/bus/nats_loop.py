"""The asyncio side of a `NatsTransport`: nats-py on a thread of its own.

nats-py only runs on asyncio, so each transport owns one `NatsLoop`: a thread running its own
`asyncio.SelectorEventLoop` (created directly: `asyncio.new_event_loop()` misbehaves inside Trio
when trio-asyncio was ever imported). The loop connects, then its *pump* drains the commands the
Trio side queued (`postee.bus.handoff`) in order, until the transport is closed:

* Publishes go to nats-py. While the link is down nats-py buffers up to `pending_size` bytes;
  beyond that the messages stay in `_held` ("held") and are sent after the reconnect, first and
  in order. Whether anything is held is reported (`Stalled`): the Trio side then stops accepting
  publishes once its own queue is full.
* Requests, subscriptions and flushes run as tasks; each outcome goes back as `CallDone`.
* A subscription hands messages over within its credits; when they are spent nats-py keeps the
  messages in the subscription's pending queue, up to `sub_pending_msgs` / `sub_pending_bytes`.
  Only past that limit does nats-py drop (a "slow consumer"): the drops are reported (`Dropped`)
  and logged, never silent.
* Reconnects back off exponentially from `reconnect_wait` to `reconnect_wait_max`, forever.
* Closing sends what Trio already accepted and flushes, within `close_timeout`; publishes still
  queued after that are reported as lost.

Nothing is raised out of the thread: failures go back as notices (`ConnectResult`, `ErrorSeen`,
`ClosedForGood`) and the thread's end as `ThreadExited`.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import logging
import ssl
import threading
from collections.abc import Coroutine
from typing import Any

import attrs
import nats
import nats.errors
import outcome
import trio
from nats.aio.client import Client as NatsClient

from actors.errors import TransportAuthError, TransportError, TransportUnavailable
from actors.transport import Message
from postee.bus.handoff import (
    BRIDGE_LOGGER,
    AddCredits,
    Call,
    CallDone,
    CancelCall,
    ClosedForGood,
    ConnectResult,
    Control,
    Dropped,
    ErrorSeen,
    Flush,
    ForceStop,
    Handoff,
    LinkChanged,
    Lost,
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
from postee.bus.nats_errors import build_ssl_context, describe, is_fatal
from postee.bus.nkeys_util import NKeyError, read_seed

__all__ = ["ClientSettings", "NatsLoop"]

log = logging.getLogger(BRIDGE_LOGGER)

#: Commands handled before the pump yields to nats-py's own tasks.
PUMP_BATCH = 512
#: One connect attempt is bounded by the transport's connect timeout, kept within these limits.
CONNECT_ATTEMPT_MIN = 1.0
CONNECT_ATTEMPT_MAX = 5.0
#: Closing a client whose connect failed: do not hang on it.
QUIET_CLOSE_TIMEOUT = 2.0
#: Each of the two PING/PONG round trips that prove the server has a new subscription.
SUBSCRIBE_FLUSH_TIMEOUT = 5
#: How often a flush or the close looks whether the queued publishes are out.
DRAIN_POLL_INTERVAL = 0.001
#: The least time a flush's round trip, or a step of the close, is given.
MIN_FLUSH_TIMEOUT = 0.01
MIN_CLOSE_STEP = 0.05


@attrs.frozen
class ClientSettings:
    """How the asyncio side connects and buffers (see `NatsTransport`'s arguments)."""

    servers: tuple[str, ...]
    name: str
    #: The servers without credentials, for messages.
    where: str
    tls_ca: str | None
    tls_cert: str | None
    tls_key: str | None
    nkey_seed_file: str | None
    #: A seed held in memory (the controller's own key for its embedded server), used instead of a file.
    nkey_seed: bytes | None = attrs.field(repr=False)
    #: Where replies to this client's requests arrive (`_INBOX` when None): a runner's own inbox.
    inbox_prefix: str | None
    #: A ready TLS context, used instead of building one from the files (the controller's pinned one).
    tls_context: ssl.SSLContext | None
    connect_timeout: float
    close_timeout: float
    pending_size: int
    reconnect_wait: float
    reconnect_wait_max: float
    sub_pending_msgs: int
    sub_pending_bytes: int


class NatsLoop:
    """The asyncio side of one transport (see the module docstring).

    `start`, `started` and `join` are for the Trio side; everything else runs on the loop's thread
    (`control` too: the hand-off schedules it there)."""

    _ids = itertools.count(1)

    def __init__(self, settings: ClientSettings, handoff: Handoff) -> None:
        self.settings = settings
        self._handoff = handoff
        self._to_trio = handoff.to_trio
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: NatsClient | None = None
        self._stop: asyncio.Event | None = None
        self._held: collections.deque[Publish] = collections.deque()
        self._stalled = False
        self._connecting = True
        self._fatal: str | None = None
        self._last_error: BaseException | None = None
        self._connect_task: asyncio.Task[Any] | None = None
        self._main_task: asyncio.Task[Any] | None = None
        self._attempts = 0
        self._sid_states: dict[int, SubscriptionState] = {}

    # -- Trio side ---------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self, token: trio.lowlevel.TrioToken) -> None:
        """Start the thread; it connects, and reports the verdict as `ConnectResult`."""
        loop = asyncio.SelectorEventLoop()
        self._loop = loop
        self._handoff.attach(token, loop, self.control)
        self._thread = threading.Thread(
            target=self._thread_main, name=f"nats-bridge-{next(self._ids)}[{self.settings.name}]", daemon=True
        )
        self._thread.start()

    def join(self) -> None:
        """Join the thread (once it reported `ThreadExited`: this does not block for long)."""
        assert self._thread is not None
        self._thread.join()

    # -- the thread --------------------------------------------------------------------------------
    def _thread_main(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._main_task = loop.create_task(self._main())
            loop.run_until_complete(self._main_task)
        except BaseException as exc:  # reported, never raised out of the thread
            self._last_error = exc
            self._to_trio(ErrorSeen(describe(exc)))
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except BaseException:  # logged: the loop is closed below all the same
                log.exception("nats bridge %s: error while stopping the asyncio loop", self.settings.name)
            finally:
                self._handoff.loop_closed = True
                loop.close()
                asyncio.set_event_loop(None)
                self._to_trio(ThreadExited())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        nc = NatsClient()
        self._nc = nc
        settings = self.settings
        try:
            tls = settings.tls_context or build_ssl_context(settings.tls_ca, settings.tls_cert, settings.tls_key)
            seed = self._read_seed()
            self._connect_task = asyncio.get_running_loop().create_task(self._connect(nc, tls, seed))
            await self._connect_task
        except asyncio.CancelledError:
            await self._close_quietly(nc)
            if self._fatal is not None:
                error = TransportAuthError(f"{settings.name}: cannot connect to {settings.where}: {self._fatal}")
                self._to_trio(ConnectResult(outcome.Error(error)))
            return
        except TransportError as exc:
            await self._close_quietly(nc)
            self._to_trio(ConnectResult(outcome.Error(exc)))
            return
        except Exception as exc:
            await self._close_quietly(nc)
            self._to_trio(ConnectResult(outcome.Error(self._connect_error(exc))))
            return
        self._connecting = False
        self._to_trio(ConnectResult(outcome.Value(nc.max_payload)))
        pump = asyncio.get_running_loop().create_task(self._pump())
        pump.add_done_callback(self._pump_done)
        try:
            await self._stop.wait()
        finally:
            await self._graceful_close(nc, pump)

    def _read_seed(self) -> str | None:
        """The NKeys seed of `nkey_seed_file` (bare or decorated, as `nsc` writes it), for nats-py.

        nats-py's own `nkeys_seed=<path>` only takes a bare seed, so we read the file (on this
        thread, off Trio's) and hand nats-py the seed itself; it signs each server nonce with it,
        on every reconnect. Errors name the file, never its content."""
        if self.settings.nkey_seed is not None:
            return self.settings.nkey_seed.decode("ascii")
        path = self.settings.nkey_seed_file
        if not path:
            return None
        try:
            return read_seed(path).decode("ascii")
        except NKeyError as exc:
            raise TransportAuthError(f"{self.settings.name}: cannot connect to {self.settings.where}: {exc}") from None

    def _connect_error(self, exc: Exception) -> TransportError:
        """What a failed first connect is reported as: `TransportAuthError` when retrying will not help."""
        settings = self.settings
        seed_file = settings.nkey_seed_file
        fatal = is_fatal(exc)
        if fatal is None and seed_file and not isinstance(exc, (OSError, nats.errors.Error)):
            fatal = f"invalid NKey seed file {seed_file!r} ({type(exc).__name__})"
        elif isinstance(exc, OSError) and seed_file and exc.filename == seed_file:
            fatal = f"cannot read NKey seed file {seed_file!r} ({exc.strerror})"
        if fatal:
            return TransportAuthError(f"{settings.name}: cannot connect to {settings.where}: {fatal}")
        return TransportUnavailable(f"{settings.name}: cannot connect: {describe(exc)}")

    async def _connect(self, nc: NatsClient, tls: ssl.SSLContext | None, seed: str | None) -> None:
        settings = self.settings
        options: dict[str, Any] = {}
        if tls is not None:
            options["tls"] = tls
        if seed is not None:
            options["nkeys_seed_str"] = seed
        if settings.inbox_prefix:
            options["inbox_prefix"] = settings.inbox_prefix
        attempt_timeout = max(CONNECT_ATTEMPT_MIN, min(settings.connect_timeout, CONNECT_ATTEMPT_MAX))
        await nc.connect(
            list(settings.servers),
            name=settings.name,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=settings.reconnect_wait,  # type: ignore[arg-type]
            connect_timeout=attempt_timeout,  # type: ignore[arg-type]
            pending_size=settings.pending_size,
            reconnect_to_server_handler=self._backoff,
            **options,
        )

    def _backoff(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        """Reconnect policy: exponential backoff from `reconnect_wait` to `reconnect_wait_max`, forever."""
        self._attempts += 1
        settings = self.settings
        delay = (
            0.0
            if self._attempts == 1
            else min(settings.reconnect_wait_max, settings.reconnect_wait * 2 ** (self._attempts - 2))
        )
        return None, delay

    async def _close_quietly(self, nc: NatsClient) -> None:
        try:
            await asyncio.wait_for(nc.close(), QUIET_CLOSE_TIMEOUT)
        except BaseException:  # the connect already failed: that error is the one reported
            pass

    @property
    def _queued(self) -> bool:
        """Whether commands accepted from Trio are not yet handed to nats-py."""
        return bool(self._handoff.commands or self._held)

    async def _graceful_close(self, nc: NatsClient, pump: asyncio.Task[Any]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.close_timeout

        def left() -> float:
            return max(MIN_CLOSE_STEP, deadline - loop.time())

        try:
            # Send what Trio already accepted, then make sure the server has it.
            self._handoff.wake_pump()
            while self._queued and nc.is_connected and not pump.done():
                await asyncio.sleep(DRAIN_POLL_INTERVAL)
                if loop.time() > deadline:
                    break
            pump.cancel()
            if nc.is_connected:
                await asyncio.wait_for(nc.flush(), left())
        except BaseException as exc:  # logged: the close goes on
            if not isinstance(exc, asyncio.CancelledError):
                log.info("nats bridge %s: flush on close failed: %s", self.settings.name, describe(exc))
        finally:
            pump.cancel()
            lost = sum(1 for cmd in itertools.chain(self._handoff.commands, self._held) if isinstance(cmd, Publish))
            if lost:
                self._to_trio(Lost(lost))
            try:
                await asyncio.wait_for(nc.close(), left())
            except BaseException:  # closing for good: nothing left to tell anyone
                pass

    # -- control (from the Trio side, at once) -------------------------------------------------
    def control(self, message: Control) -> None:
        match message:
            case AddCredits(state, n):
                state.add_credits(n)
            case CancelCall(call):
                call.cancelled = True
                if call.task is not None and not call.task.done():
                    call.task.cancel()
            case Stop():
                if self._stop is not None:
                    self._stop.set()
                if self._connect_task is not None and not self._connect_task.done():
                    self._connect_task.cancel()
                elif self._connect_task is None and self._main_task is not None:
                    self._main_task.cancel()
            case ForceStop():
                if self._main_task is not None:
                    self._main_task.cancel()

    # -- nats-py callbacks ---------------------------------------------------------------------
    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        if isinstance(exc, nats.errors.SlowConsumerError):
            state = self._sid_states.get(exc.sid)
            if state is not None:
                self._to_trio(Dropped(state))
            log.warning("nats bridge %s: slow consumer on %r, message dropped", self.settings.name, exc.subject)
            return
        self._to_trio(ErrorSeen(describe(exc)))
        if self._connecting:
            fatal = is_fatal(exc)
            if fatal is not None and self._connect_task is not None and not self._connect_task.done():
                self._fatal = fatal
                self._connect_task.cancel()

    async def _on_disconnected(self) -> None:
        if not self._connecting:
            self._to_trio(LinkChanged(False, 0))

    async def _on_reconnected(self) -> None:
        self._attempts = 0
        nc = self._nc
        self._to_trio(LinkChanged(True, nc.max_payload if nc else 0))
        self._handoff.wake_pump()

    async def _on_closed(self) -> None:
        if self._connecting or (self._stop is not None and self._stop.is_set()):
            return
        self._to_trio(ClosedForGood(describe(self._last_error)))

    # -- the pump ------------------------------------------------------------------------------
    def _pump_done(self, pump: asyncio.Task[Any]) -> None:
        if pump.cancelled() or pump.exception() is None:
            return
        exc = pump.exception()
        log.error("nats bridge %s: command pump crashed", self.settings.name, exc_info=exc)
        self._to_trio(ClosedForGood(f"internal error in the bridge: {describe(exc)}"))

    async def _pump(self) -> None:
        nc = self._nc
        assert nc is not None
        handoff = self._handoff
        to_trio = self._to_trio
        queue = handoff.commands
        held = self._held
        while True:
            await handoff.wait_commands()
            released = 0
            lost = 0
            # Messages held during an outage go first, in order.
            while held and nc.is_connected:
                cmd = held[0]
                try:
                    await nc.publish(cmd.subject, cmd.data, headers=cmd.headers)
                except nats.errors.OutboundBufferLimitError:
                    break
                except Exception as exc:  # refused for good: counted as lost
                    lost += 1
                    to_trio(ErrorSeen(describe(exc)))
                held.popleft()
                released += 1
            handled = 0
            while queue:
                command = queue.popleft()
                match command:
                    case Publish():
                        if held:
                            held.append(command)
                        else:
                            try:
                                await nc.publish(command.subject, command.data, headers=command.headers)
                                released += 1
                            except nats.errors.OutboundBufferLimitError:
                                held.append(command)
                            except Exception as exc:  # refused for good: counted as lost
                                released += 1
                                lost += 1
                                to_trio(ErrorSeen(describe(exc)))
                    case Request() | Subscribe() | Flush():
                        self._start_call(command)
                    case Unsubscribe(state):
                        await self._unsubscribe(state)
                handled += 1
                if handled % PUMP_BATCH == 0:
                    if released:
                        to_trio(RoomFreed(released))
                        released = 0
                    await asyncio.sleep(0)
            if released:
                to_trio(RoomFreed(released))
            if lost:
                to_trio(Lost(lost))
            if bool(held) != self._stalled:
                self._stalled = bool(held)
                to_trio(Stalled(self._stalled))

    # -- commands that answer ------------------------------------------------------------------
    def _start_call(self, command: Request | Subscribe | Flush) -> None:
        call = command.call
        if call.cancelled:
            return
        task = asyncio.get_running_loop().create_task(self._answer(command))
        call.task = task
        task.add_done_callback(functools.partial(self._call_done, call))

    def _answer(self, command: Request | Subscribe | Flush) -> Coroutine[Any, Any, Any]:
        match command:
            case Request():
                return self._request(command)
            case Subscribe(state):
                return self._subscribe(state)
            case Flush(timeout):
                return self._flush(timeout)

    def _call_done(self, call: Call, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            result: outcome.Outcome = outcome.Error(asyncio.CancelledError())
        elif task.exception() is not None:
            result = outcome.Error(task.exception())  # type: ignore[arg-type]
        else:
            result = outcome.Value(task.result())
        self._to_trio(CallDone(call, result))

    async def _subscribe(self, state: SubscriptionState) -> None:
        nc = self._nc
        assert nc is not None
        state.event = asyncio.Event()
        incoming = state.incoming
        to_trio = self._to_trio
        call_soon = asyncio.get_running_loop().call_soon

        async def on_message(msg: Any) -> None:
            if state.closed:
                return
            # Credits: never more than `capacity` messages outstanding on the Trio side; when they
            # are spent this subscription's delivery pauses and nats-py keeps the rest pending.
            if state.credits <= 0:
                await state.wait_for_credit()
            state.credits -= 1
            incoming.append(Message(msg.subject, msg.data, msg.headers or {}, msg.reply or ""))
            # Hand-shake with `NatsSubscription._wait`: the Trio side sets `waiting` and then looks
            # at `incoming` again, we append and then look at `waiting`: one of us sees the other.
            # The wake-up is sent at the end of this loop iteration, so that every message parsed
            # from the same socket read crosses with it.
            if state.waiting and not state.scheduled:
                state.scheduled = True
                call_soon(to_trio, WakeSubscriber(state))

        sub = await nc.subscribe(
            state.subject,
            queue=state.queue,
            cb=on_message,
            pending_msgs_limit=self.settings.sub_pending_msgs,
            pending_bytes_limit=self.settings.sub_pending_bytes,
        )
        state.nsub = sub
        self._sid_states[sub._id] = state
        if nc.is_connected:
            # nats-py's flush() writes its PING straight to the socket while SUB may still sit in the
            # pending buffer for the flusher task: the PONG can come back before the server saw the
            # SUB (then a message published right away elsewhere is lost, or a request gets "no
            # responders"). By the time the first PONG is back the flusher has written SUB; the
            # second round trip proves the server processed it.
            await nc.flush(timeout=SUBSCRIBE_FLUSH_TIMEOUT)
            await nc.flush(timeout=SUBSCRIBE_FLUSH_TIMEOUT)

    async def _unsubscribe(self, state: SubscriptionState) -> None:
        sub = state.nsub
        if sub is None:
            return
        state.nsub = None
        self._sid_states.pop(sub._id, None)
        try:
            await sub.unsubscribe()
        except Exception:  # closed/reconnecting: the server forgets it anyway
            pass

    async def _request(self, command: Request) -> Message:
        nc = self._nc
        assert nc is not None
        msg = await nc.request(command.subject, command.data, timeout=command.timeout, headers=command.headers)
        return Message(msg.subject, msg.data, msg.headers or {}, msg.reply or "")

    async def _flush(self, timeout: float) -> None:
        nc = self._nc
        assert nc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queued:
            if loop.time() > deadline:
                raise TimeoutError()
            await asyncio.sleep(DRAIN_POLL_INTERVAL)
        for _ in range(2):  # twice: see _subscribe (the PING can overtake the pending buffer)
            await nc.flush(timeout=max(MIN_FLUSH_TIMEOUT, deadline - loop.time()))  # type: ignore[arg-type]
