"""The NATS bridge: nats-py on a dedicated asyncio thread, a Trio-side `Transport` in front of it.

nats-py only runs on asyncio, so each `NatsTransport` owns one thread running its own
`asyncio.SelectorEventLoop` (created directly: `asyncio.new_event_loop()` misbehaves inside Trio
when trio-asyncio was ever imported). The Trio side never blocks on that thread:

* **Trio -> asyncio** (publish, request, subscribe, unsubscribe): commands are appended to a
  deque and the asyncio side is woken with *one* `loop.call_soon_threadsafe` per batch (no new
  wake-up is sent while one is pending). A pump task drains the deque in order, so a publish
  followed by a request on the same transport reach the server in that order.
* **asyncio -> Trio** (messages, replies, link changes, freed room): appended to another deque,
  handed over with *one* `TrioToken.run_sync_soon` per batch; a subscriber that is already busy
  is not woken at all (it finds the messages when it looks).
* On the Trio side, `publish` and iterating a subscription are cancellation points on every call
  but yield to the scheduler only every `YIELD_EVERY` calls (or when they must wait): each yield
  polls the selector, a system call that hands the GIL to the asyncio thread, and a hand-over
  per message is what caps the throughput.

Crossing per message caps at 2-5k msg/s; crossing per batch reaches tens of thousands.

Back-pressure, both ways, no silent loss:

* Outgoing: at most `max_outgoing` publishes are queued between Trio and nats-py; `publish`
  waits for room while the link is up. While the link is down nats-py buffers up to
  `pending_size` bytes (2 MiB by default); beyond that the messages stay in our queue ("held")
  and are sent after the reconnect, in order. When the link is down *and* the queue is full,
  `publish` raises `TransportUnavailable` at once (the caller keeps the message: the runner's
  outbox resends it). Messages accepted while the link was down are sent on reconnect; what
  was still buffered when the transport is closed during an outage is lost (the outbox covers
  it: the controller acknowledges every event).
* Incoming: each subscription has a hand-over buffer of at most `capacity` messages (a deque:
  cheaper per message than a memory channel, and bounded the same way) and a credit counter on
  the asyncio side. The asyncio side never sends more than the credits, so the buffer never
  overflows; when the credits are spent, delivery for *that* subscription
  pauses (other subscriptions go on) and nats-py keeps the messages in the subscription's
  pending queue, up to `sub_pending_msgs` / `sub_pending_bytes`. Only past that limit does
  nats-py drop (a "slow consumer"): the drops are counted (`Subscription.dropped`,
  `NatsTransport.stats`) and logged, never silent. Credits are returned in batches of half the
  capacity as the consumer reads.

Errors at the boundary are the `actors.errors` family only: `TransportAuthError` (bad NKey,
authorization violation, TLS failure: retrying will not help), `TransportUnavailable` (link down,
transport closed, connect timeout), `TransportTimeout`, `NoResponders`, `TransportError`
(payload too large, bad subject/header). No exception group leaves this module.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import math
import re
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import nats
import nats.errors
import outcome
import trio
from nats.aio.client import Client as NatsClient

from actors.errors import (
    NoResponders,
    TransportAuthError,
    TransportError,
    TransportTimeout,
    TransportUnavailable,
)
from actors.transport import (
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SUBSCRIPTION_CAPACITY,
    Message,
    validate_subject,
)

__all__ = [
    "NatsStats",
    "NatsSubscription",
    "NatsTransport",
    "connect_nats_transport",
    "open_nats_transport",
]

log = logging.getLogger("postee.bus.bridge")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_CLOSE_TIMEOUT = 5.0
DEFAULT_MAX_OUTGOING = 1024
DEFAULT_PENDING_SIZE = 2 * 1024 * 1024
DEFAULT_SUB_PENDING_MSGS = 65536
DEFAULT_SUB_PENDING_BYTES = 64 * 1024 * 1024
YIELD_EVERY = 64  # see NatsTransport._light_checkpoint
PUMP_BATCH = 512  # commands handled before the pump yields to nats-py's own tasks

_HEADER_KEY_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HDR_OVERHEAD = len(b"NATS/1.0\r\n") + 2
_FATAL_TLS_HINTS = (
    "certificate",
    "unknown ca",
    "bad certificate",
    "handshake failure",
    "wrong version number",
    "unsupported protocol",
    "no shared cipher",
)

_PUB, _CALL, _UNSUB = 0, 1, 2


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


class _Call:
    """An operation run as an asyncio task, awaited from Trio."""

    __slots__ = ("factory", "event", "result", "task", "cancelled")

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.event = trio.Event()
        self.result: outcome.Outcome | None = None
        self.task: asyncio.Task[Any] | None = None  # asyncio side only
        self.cancelled = False  # asyncio side only


class _SubState:
    """Shared state of one subscription.

    `incoming` is the hand-over buffer: the asyncio side appends, the Trio side pops (deque
    operations are atomic). It is bounded by `credits`: the asyncio side never has more than
    `capacity` messages outstanding (in `incoming` or read but not yet credited back).
    `credits`, `event`, `nsub` belong to the asyncio side; `waiter` to the Trio side; `waiting`
    and `scheduled` are the hand-shake flags (see `NatsTransport._a_on_message`)."""

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


class NatsSubscription:
    """A subscription: iterate it, or `await next(timeout)`.

    Iteration ends when the transport is closed (after the messages already received), `next`
    raises `TransportUnavailable` then; both raise `TransportUnavailable` when the connection
    was lost for good (the NATS client gave up), so a supervisor notices.
    """

    def __init__(self, transport: NatsTransport, state: _SubState, capacity: int) -> None:
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


_VALID_KEYS: set[str] = set()
_VALID_SUBJECTS: dict[str, None] = {}


def _check_subject(subject: str) -> None:
    """`validate_subject` for publishes, with a small cache: subjects repeat."""
    if subject in _VALID_SUBJECTS:
        return
    validate_subject(subject, wildcards=False)
    if len(_VALID_SUBJECTS) >= 4096:
        _VALID_SUBJECTS.clear()
    _VALID_SUBJECTS[subject] = None


def _check_headers(headers: Mapping[str, str] | None) -> tuple[dict[str, str] | None, int]:
    """Validated headers (None when empty) and their encoded size, as nats-py will write them."""
    if not headers:
        return None, 0
    out: dict[str, str] = {}
    size = _HDR_OVERHEAD
    for key, value in headers.items():
        if key not in _VALID_KEYS:
            if not isinstance(key, str) or not _HEADER_KEY_RE.fullmatch(key):
                raise TransportError(f"invalid header name {key!r}")
            if len(_VALID_KEYS) < 1024:
                _VALID_KEYS.add(key)
        if not isinstance(value, str):
            raise TransportError(f"header {key!r}: values must be str")
        if "\r" in value or "\n" in value:
            raise TransportError(f"header {key!r}: value must not contain CR or LF")
        out[key] = value
        size += len(key) + 4 + (len(value) if value.isascii() else len(value.encode()))
    return out, size


def _is_fatal(exc: BaseException) -> str | None:
    """A connect error retrying will not fix: a description, else None."""
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization violation (the server refused our credentials)"
    text = str(exc)
    low = text.lower()
    if isinstance(exc, nats.errors.Error) and (
        "authorization violation" in low or ("authentication" in low and "timeout" not in low)
    ):  # not 'Authentication Timeout': that one is a slow handshake, worth retrying
        return f"authorization violation (the server refused our credentials): {text.strip()}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted: {exc.verify_message or text}"
    if isinstance(exc, ssl.SSLError) and any(h in low for h in _FATAL_TLS_HINTS):
        reason = getattr(exc, "reason", None) or text
        hint = ""
        if "certificate_required" in low or "certificate required" in low:
            hint = " (the server requires a client certificate: give a TLS cert and key)"
        elif "bad certificate" in low or "bad_certificate" in low or "unknown ca" in low or "unknown_ca" in low:
            hint = " (the server does not accept our client certificate)"
        return f"TLS handshake failed: {reason}{hint}"
    if isinstance(exc, (nats.errors.SecureConnRequiredError, nats.errors.SecureConnWantedError)):
        return f"TLS mismatch between client and server: {type(exc).__name__}"
    return None


def _redact(url: str) -> str:
    """`nats://user:secret@host:4222` -> `nats://***@host:4222`."""
    scheme, sep, rest = url.rpartition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no error reported"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _build_ssl_context(tls_ca: str | None, tls_cert: str | None, tls_key: str | None) -> ssl.SSLContext | None:
    if not (tls_ca or tls_cert or tls_key):
        return None
    if bool(tls_cert) != bool(tls_key):
        raise TransportAuthError("TLS: a client certificate needs both a cert file and a key file")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls_ca)
        if tls_cert and tls_key:
            ctx.load_cert_chain(tls_cert, tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise TransportAuthError(
            f"TLS: cannot load the CA {tls_ca!r} / cert {tls_cert!r} / key {tls_key!r}: {type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or exc}"
        ) from None
    return ctx


class NatsTransport:
    """A NATS client (implements `actors.transport.Transport`). Make it with `open_nats_transport`
    or `connect_nats_transport`; attributes are read on the Trio side."""

    _ids = itertools.count(1)

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        name: str,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        nkey_seed_file: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        max_outgoing: int = DEFAULT_MAX_OUTGOING,
        pending_size: int = DEFAULT_PENDING_SIZE,
        reconnect_wait: float = 0.1,
        reconnect_wait_max: float = 2.0,
        sub_pending_msgs: int = DEFAULT_SUB_PENDING_MSGS,
        sub_pending_bytes: int = DEFAULT_SUB_PENDING_BYTES,
        on_link_change: Callable[[bool], None] | None = None,
    ) -> None:
        if max_outgoing < 1:
            raise ValueError("max_outgoing must be >= 1")
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self._where = ", ".join(_redact(url) for url in self.servers)  # for messages: no credentials
        self.name = name
        self._tls = (tls_ca, tls_cert, tls_key)
        self._nkey_seed_file = nkey_seed_file
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._pending_size = pending_size
        self._reconnect_wait = reconnect_wait
        self._reconnect_wait_max = reconnect_wait_max
        self._sub_pending = (sub_pending_msgs, sub_pending_bytes)
        self.on_link_change = on_link_change

        # Trio side.
        self.connected = False
        self.max_payload = 1024 * 1024
        self.stats = NatsStats()
        self.last_error: str | None = None
        self._out_free = max_outgoing
        self._ops = 0
        self._stalled = False  # the asyncio side holds publishes nats-py cannot buffer (link down)
        self._room = trio.lowlevel.ParkingLot()
        self._link_event = trio.Event()
        self._calls: set[_Call] = set()
        self._subs: set[_SubState] = set()
        self._started = False
        self._closing = False
        self._dead: str | None = None  # why the transport no longer works
        self._connect_result: outcome.Outcome | None = None
        self._connect_done = trio.Event()
        self._thread_exited = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread: threading.Thread | None = None

        # Cross-thread queues (deque append/popleft are atomic under the GIL).
        self._out: collections.deque[tuple[Any, ...]] = collections.deque()
        self._wake_pending = False
        self._in: collections.deque[tuple[Callable[[Any], None], Any]] = collections.deque()
        self._in_pending = False

        # asyncio side.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_closed = False
        self._nc: NatsClient | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._held: collections.deque[tuple[Any, ...]] = collections.deque()
        self._a_stalled = False
        self._a_connecting = True
        self._a_fatal: str | None = None
        self._a_last_error: BaseException | None = None
        self._connect_task: asyncio.Task[Any] | None = None
        self._main_task: asyncio.Task[Any] | None = None
        self._attempts = 0
        self._sid_states: dict[int, _SubState] = {}

    # ------------------------------------------------------------------ lifecycle (Trio side)

    async def _start(self) -> None:
        if self._started:
            raise RuntimeError("NatsTransport already started")
        self._started = True
        self._token = trio.lowlevel.current_trio_token()
        self._loop = asyncio.SelectorEventLoop()
        self._thread = threading.Thread(
            target=self._thread_main, name=f"nats-bridge-{next(self._ids)}[{self.name}]", daemon=True
        )
        self._thread.start()
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
                self._call_soon(self._a_request_stop)
            if self._thread is None:
                return
            with trio.move_on_after(self._close_timeout + 2.0):
                await self._thread_exited.wait()
            if not self._thread_exited.is_set():
                log.warning("nats bridge %s: asyncio side did not stop in time, cancelling it", self.name)
                self._call_soon(self._a_force_stop)
                with trio.move_on_after(2.0):
                    await self._thread_exited.wait()
            if self._thread_exited.is_set():
                self._thread.join()
            else:  # pragma: no cover - the loop is wedged; the daemon thread is left behind
                log.error("nats bridge %s: asyncio thread did not exit", self.name)
            self._finalize()

    def _finalize(self) -> None:
        self.connected = False
        for call in list(self._calls):
            self._finish_call((call, outcome.Error(TransportUnavailable(f"{self.name}: {self._closed_reason()}"))))
        for state in list(self._subs):
            state.ended = True
            self._wake_sub(state)
        self._subs.clear()
        if self._thread_exited.is_set() or self._loop_closed:
            self._out.clear()  # only once the asyncio side is gone: its pump pops from this deque
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

    # ------------------------------------------------------------------ link state (Trio side)

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

    def _set_link(self, arg: tuple[bool, int]) -> None:
        up, max_payload = arg
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

    def _set_error(self, text: str) -> None:
        self.last_error = text

    def _count_drop(self, state: _SubState) -> None:
        state.dropped += 1
        self.stats.dropped += 1

    def _count_lost(self, n: int) -> None:
        self.stats.lost += n

    def _on_connect_result(self, result: outcome.Outcome) -> None:
        self._connect_result = result
        if isinstance(result, outcome.Value):
            self._set_link((True, result.value))
            self.stats.reconnects = 0
        self._connect_done.set()

    def _on_thread_exit(self, _: Any) -> None:
        if self._dead is None:
            self._dead = f"the NATS client stopped ({self.last_error or 'closed'})"
        self._connect_done.set()
        self._finalize()
        self._thread_exited.set()

    def _on_closed_by_library(self, reason: str) -> None:
        log.error("nats bridge %s: the NATS client closed the connection for good: %s", self.name, reason)
        if self._dead is None:
            self._dead = f"the NATS connection was closed: {reason}"
        self._set_link((False, 0))
        self._finalize()

    # ------------------------------------------------------------------ crossings

    def _check_open(self) -> None:
        if self._dead is not None or self._closing:
            raise TransportUnavailable(f"{self.name}: {self._closed_reason()}")
        if not self._started or self._connect_result is None:
            raise TransportUnavailable(f"{self.name}: not connected yet")

    def _submit(self, cmd: tuple[Any, ...]) -> None:
        """Trio -> asyncio: queue a command; at most one wake-up in flight."""
        self._out.append(cmd)
        if not self._wake_pending:
            self._wake_pending = True
            assert self._wake is not None
            self._call_soon(self._wake.set)

    def _call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None or self._loop_closed:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _to_trio(self, fn: Callable[[Any], None], arg: Any) -> None:
        """asyncio -> Trio: queue a callback; at most one `run_sync_soon` in flight."""
        self._in.append((fn, arg))
        if not self._in_pending:
            self._in_pending = True
            assert self._token is not None
            try:
                self._token.run_sync_soon(self._drain_in)
            except trio.RunFinishedError:
                pass

    def _drain_in(self) -> None:
        self._in_pending = False
        queue = self._in
        while queue:
            fn, arg = queue.popleft()
            try:
                fn(arg)
            except Exception:  # never let a bug crash the Trio run
                log.exception("nats bridge %s: callback %r failed", self.name, fn)

    def _wake_room(self) -> None:
        if self._room:
            self._room.unpark_all()

    def _set_stalled(self, stalled: bool) -> None:
        self._stalled = stalled
        self._wake_room()

    def _release_room(self, n: int) -> None:
        self._out_free += n
        self._wake_room()

    def _return_credits(self, state: _SubState, n: int) -> None:
        if not state.closed:
            self._call_soon(self._a_add_credits, state, n)

    def _wake_sub(self, state: _SubState) -> None:
        state.scheduled = False
        state.waiting = False
        if state.waiter is not None:
            state.waiter.set()

    def _finish_call(self, arg: tuple[_Call, outcome.Outcome]) -> None:
        call, result = arg
        if call.result is None:
            call.result = result
        self._calls.discard(call)
        call.event.set()

    async def _run(self, factory: Callable[[], Any]) -> Any:
        """Run `factory()` (a coroutine) on the asyncio loop; cancellable from Trio."""
        call = _Call(factory)
        self._calls.add(call)
        self._submit((_CALL, call))
        try:
            await call.event.wait()
        except BaseException:
            self._calls.discard(call)
            self._call_soon(self._a_cancel_call, call)
            raise
        assert call.result is not None
        return call.result.unwrap()

    # ------------------------------------------------------------------ Transport API (Trio side)

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

    def _check_size(self, subject: str, data: bytes, header_size: int) -> None:
        size = len(data) + header_size
        if size > self.max_payload:
            raise TransportError(
                f"message on {subject!r} is {size} bytes (payload {len(data)} + headers), over the server's "
                f"max_payload of {self.max_payload} bytes"
            )

    async def publish(self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        """Queue a message for sending. Waits for room while the link is up; raises
        `TransportUnavailable` when the link is down and the buffers are full, or when closed."""
        _check_subject(subject)
        hdrs, header_size = _check_headers(headers)
        if type(data) is not bytes:
            data = bytes(data)
        self._check_size(subject, data, header_size)
        self._check_open()
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
        self._submit((_PUB, subject, data, hdrs))

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
        state = _SubState(subject, queue, capacity)
        self._subs.add(state)
        try:
            try:
                await self._run(lambda: self._a_subscribe(state))
            except nats.errors.Error as exc:
                raise TransportError(f"{self.name}: cannot subscribe to {subject!r}: {_describe(exc)}") from None
            yield NatsSubscription(self, state, capacity)
        finally:
            state.closed = True
            state.incoming.clear()
            self._subs.discard(state)
            if self._dead is None and not self._closing:
                self._submit((_UNSUB, state))

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
        _check_subject(subject)
        hdrs, header_size = _check_headers(headers)
        if type(data) is not bytes:
            data = bytes(data)
        self._check_size(subject, data, header_size)
        self._check_open()
        if not self.connected:
            raise TransportUnavailable(f"{self.name}: link to NATS is down; request on {subject!r} not sent")
        with trio.move_on_after(timeout + 1.0):  # the asyncio side enforces `timeout`; this is a safety net
            try:
                return await self._run(lambda: self._a_request(subject, data, hdrs, timeout))
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
                raise TransportUnavailable(f"{self.name}: request on {subject!r} failed: {_describe(exc)}") from None
            except nats.errors.Error as exc:
                raise TransportError(f"{self.name}: request on {subject!r} failed: {_describe(exc)}") from None
        raise TransportTimeout(f"no reply on {subject!r} within {timeout:g}s")

    async def respond(self, message: Message, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        if not message.reply:
            raise ValueError(f"message on {message.subject!r} has no reply subject")
        await self.publish(message.reply, data, headers=headers)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything published so far reached the server (a PING/PONG round trip)."""
        self._check_open()
        try:
            await self._run(lambda: self._a_flush(timeout))
        except (TimeoutError, nats.errors.Error) as exc:
            raise TransportUnavailable(f"{self.name}: flush failed: {_describe(exc)}") from None

    # ------------------------------------------------------------------ asyncio side

    def _thread_main(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            self._main_task = loop.create_task(self._a_main())
            loop.run_until_complete(self._main_task)
        except BaseException as exc:  # noqa: BLE001 - report, never raise out of the thread
            self._a_last_error = exc
            self._to_trio(self._set_error, _describe(exc))
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            except BaseException:  # noqa: BLE001
                log.exception("nats bridge %s: error while stopping the asyncio loop", self.name)
            finally:
                self._loop_closed = True
                loop.close()
                asyncio.set_event_loop(None)
                self._to_trio(self._on_thread_exit, None)

    async def _a_main(self) -> None:
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        nc = NatsClient()
        self._nc = nc
        try:
            tls = _build_ssl_context(*self._tls)
            self._connect_task = asyncio.get_running_loop().create_task(self._a_connect(nc, tls))
            await self._connect_task
        except asyncio.CancelledError:
            await self._a_close_quietly(nc)
            if self._a_fatal is not None:
                self._to_trio(
                    self._on_connect_result,
                    outcome.Error(TransportAuthError(f"{self.name}: cannot connect to {self._where}: {self._a_fatal}")),
                )
            return
        except TransportError as exc:
            await self._a_close_quietly(nc)
            self._to_trio(self._on_connect_result, outcome.Error(exc))
            return
        except Exception as exc:  # noqa: BLE001
            await self._a_close_quietly(nc)
            fatal = _is_fatal(exc)
            if fatal is None and self._nkey_seed_file and not isinstance(exc, (OSError, nats.errors.Error)):
                fatal = f"invalid NKey seed file {self._nkey_seed_file!r} ({type(exc).__name__})"
            elif isinstance(exc, OSError) and self._nkey_seed_file and exc.filename == self._nkey_seed_file:
                fatal = f"cannot read NKey seed file {self._nkey_seed_file!r} ({exc.strerror})"
            err: TransportError = (
                TransportAuthError(f"{self.name}: cannot connect to {self._where}: {fatal}")
                if fatal
                else TransportUnavailable(f"{self.name}: cannot connect: {_describe(exc)}")
            )
            self._to_trio(self._on_connect_result, outcome.Error(err))
            return
        self._a_connecting = False
        self._to_trio(self._on_connect_result, outcome.Value(nc.max_payload))
        pump = asyncio.get_running_loop().create_task(self._a_pump())
        pump.add_done_callback(self._a_pump_done)
        try:
            await self._stop.wait()
        finally:
            await self._a_graceful_close(nc, pump)

    async def _a_connect(self, nc: NatsClient, tls: ssl.SSLContext | None) -> None:
        options: dict[str, Any] = {}
        if tls is not None:
            options["tls"] = tls
        if self._nkey_seed_file:
            options["nkeys_seed"] = self._nkey_seed_file
        await nc.connect(
            self.servers,
            name=self.name,
            error_cb=self._a_on_error,
            disconnected_cb=self._a_on_disconnected,
            reconnected_cb=self._a_on_reconnected,
            closed_cb=self._a_on_closed,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self._reconnect_wait,  # type: ignore[arg-type]
            connect_timeout=max(1.0, min(self._connect_timeout, 5.0)),  # type: ignore[arg-type]
            pending_size=self._pending_size,
            reconnect_to_server_handler=self._a_backoff,
            **options,
        )

    def _a_backoff(self, servers: list[Any], info: dict[str, Any]) -> tuple[Any, float]:
        """Reconnect policy: exponential backoff from `reconnect_wait` to `reconnect_wait_max`, forever."""
        self._attempts += 1
        delay = (
            0.0
            if self._attempts == 1
            else min(self._reconnect_wait_max, self._reconnect_wait * 2 ** (self._attempts - 2))
        )
        return None, delay

    async def _a_close_quietly(self, nc: NatsClient) -> None:
        try:
            await asyncio.wait_for(nc.close(), 2.0)
        except BaseException:  # noqa: BLE001
            pass

    async def _a_graceful_close(self, nc: NatsClient, pump: asyncio.Task[Any]) -> None:
        deadline = asyncio.get_running_loop().time() + self._close_timeout

        def left() -> float:
            return max(0.05, deadline - asyncio.get_running_loop().time())

        try:
            # Send what Trio already accepted, then make sure the server has it.
            assert self._wake is not None
            self._wake.set()
            while (self._out or self._held) and nc.is_connected and not pump.done():
                await asyncio.sleep(0.001)
                if asyncio.get_running_loop().time() > deadline:
                    break
            pump.cancel()
            if nc.is_connected:
                await asyncio.wait_for(nc.flush(), left())
        except BaseException as exc:  # noqa: BLE001
            if not isinstance(exc, asyncio.CancelledError):
                log.info("nats bridge %s: flush on close failed: %s", self.name, _describe(exc))
        finally:
            pump.cancel()
            lost = sum(1 for cmd in itertools.chain(self._out, self._held) if cmd[0] == _PUB)
            if lost:
                self._to_trio(self._count_lost, lost)
            try:
                await asyncio.wait_for(nc.close(), left())
            except BaseException:  # noqa: BLE001
                pass

    def _a_request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        elif self._connect_task is None and self._main_task is not None:
            self._main_task.cancel()

    def _a_force_stop(self) -> None:
        if self._main_task is not None:
            self._main_task.cancel()

    def _a_add_credits(self, state: _SubState, n: int) -> None:
        state.credits += n
        if state.event is not None:
            state.event.set()

    def _a_cancel_call(self, call: _Call) -> None:
        call.cancelled = True
        if call.task is not None and not call.task.done():
            call.task.cancel()

    async def _a_on_error(self, exc: Exception) -> None:
        self._a_last_error = exc
        if isinstance(exc, nats.errors.SlowConsumerError):
            state = self._sid_states.get(exc.sid)
            if state is not None:
                self._to_trio(self._count_drop, state)
            log.warning("nats bridge %s: slow consumer on %r, message dropped", self.name, exc.subject)
            return
        self._to_trio(self._set_error, _describe(exc))
        if self._a_connecting:
            fatal = _is_fatal(exc)
            if fatal is not None and self._connect_task is not None and not self._connect_task.done():
                self._a_fatal = fatal
                self._connect_task.cancel()

    async def _a_on_disconnected(self) -> None:
        if not self._a_connecting:
            self._to_trio(self._set_link, (False, 0))

    async def _a_on_reconnected(self) -> None:
        self._attempts = 0
        nc = self._nc
        self._to_trio(self._set_link, (True, nc.max_payload if nc else 0))
        if self._wake is not None:
            self._wake.set()

    async def _a_on_closed(self) -> None:
        if self._a_connecting or (self._stop is not None and self._stop.is_set()):
            return
        self._to_trio(self._on_closed_by_library, _describe(self._a_last_error))

    def _a_pump_done(self, pump: asyncio.Task[Any]) -> None:
        if pump.cancelled() or pump.exception() is None:
            return
        exc = pump.exception()
        log.error("nats bridge %s: command pump crashed", self.name, exc_info=exc)
        self._to_trio(self._on_closed_by_library, f"internal error in the bridge: {_describe(exc)}")

    async def _a_pump(self) -> None:
        nc = self._nc
        assert nc is not None and self._wake is not None
        wake = self._wake
        queue = self._out
        held = self._held
        loop = asyncio.get_running_loop()
        while True:
            await wake.wait()
            wake.clear()
            self._wake_pending = False
            released = 0
            lost = 0
            # Messages held during an outage go first, in order.
            while held and nc.is_connected:
                cmd = held[0]
                try:
                    await nc.publish(cmd[1], cmd[2], headers=cmd[3])
                except nats.errors.OutboundBufferLimitError:
                    break
                except Exception as exc:  # noqa: BLE001
                    lost += 1
                    self._to_trio(self._set_error, _describe(exc))
                held.popleft()
                released += 1
            handled = 0
            while queue:
                cmd = queue.popleft()
                kind = cmd[0]
                if kind == _PUB:
                    if held:
                        held.append(cmd)
                    else:
                        try:
                            await nc.publish(cmd[1], cmd[2], headers=cmd[3])
                            released += 1
                        except nats.errors.OutboundBufferLimitError:
                            held.append(cmd)
                        except Exception as exc:  # noqa: BLE001
                            released += 1
                            lost += 1
                            self._to_trio(self._set_error, _describe(exc))
                elif kind == _CALL:
                    call: _Call = cmd[1]
                    if not call.cancelled:
                        task = loop.create_task(call.factory())
                        call.task = task
                        task.add_done_callback(lambda t, c=call: self._a_call_done(c, t))
                elif kind == _UNSUB:
                    await self._a_unsubscribe(cmd[1])
                handled += 1
                if handled % PUMP_BATCH == 0:
                    if released:
                        self._to_trio(self._release_room, released)
                        released = 0
                    await asyncio.sleep(0)
            if released:
                self._to_trio(self._release_room, released)
            if lost:
                self._to_trio(self._count_lost, lost)
            if bool(held) != self._a_stalled:
                self._a_stalled = bool(held)
                self._to_trio(self._set_stalled, self._a_stalled)

    def _a_call_done(self, call: _Call, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            result: outcome.Outcome = outcome.Error(asyncio.CancelledError())
        elif task.exception() is not None:
            result = outcome.Error(task.exception())  # type: ignore[arg-type]
        else:
            result = outcome.Value(task.result())
        self._to_trio(self._finish_call, (call, result))

    async def _a_subscribe(self, state: _SubState) -> None:
        nc = self._nc
        assert nc is not None
        state.event = asyncio.Event()
        incoming = state.incoming
        to_trio = self._to_trio
        wake = self._wake_sub
        call_soon = asyncio.get_running_loop().call_soon

        async def on_message(msg: Any) -> None:
            if state.closed:
                return
            # Credits: never more than `capacity` messages outstanding on the Trio side; when they
            # are spent this subscription's delivery pauses and nats-py keeps the rest pending.
            if state.credits <= 0:
                event = state.event
                assert event is not None
                while state.credits <= 0:
                    event.clear()
                    await event.wait()
            state.credits -= 1
            incoming.append(Message(msg.subject, msg.data, msg.headers or {}, msg.reply or ""))
            # Hand-shake with `NatsSubscription._wait`: the Trio side sets `waiting` and then looks
            # at `incoming` again, we append and then look at `waiting`: one of us sees the other.
            # The wake-up is sent at the end of this loop iteration, so that every message parsed
            # from the same socket read crosses with it.
            if state.waiting and not state.scheduled:
                state.scheduled = True
                call_soon(to_trio, wake, state)

        sub = await nc.subscribe(
            state.subject,
            queue=state.queue,
            cb=on_message,
            pending_msgs_limit=self._sub_pending[0],
            pending_bytes_limit=self._sub_pending[1],
        )
        state.nsub = sub
        self._sid_states[sub._id] = state
        if nc.is_connected:
            # nats-py's flush() writes its PING straight to the socket while SUB may still sit in the
            # pending buffer for the flusher task: the PONG can come back before the server saw the
            # SUB (then a message published right away elsewhere is lost, or a request gets "no
            # responders"). By the time the first PONG is back the flusher has written SUB; the
            # second round trip proves the server processed it.
            await nc.flush(timeout=5)
            await nc.flush(timeout=5)

    async def _a_unsubscribe(self, state: _SubState) -> None:
        sub = state.nsub
        if sub is None:
            return
        state.nsub = None
        self._sid_states.pop(sub._id, None)
        try:
            await sub.unsubscribe()
        except Exception:  # noqa: BLE001 - closed/reconnecting: the server forgets it anyway
            pass

    async def _a_request(self, subject: str, data: bytes, headers: dict[str, str] | None, timeout: float) -> Message:
        nc = self._nc
        assert nc is not None
        msg = await nc.request(subject, data, timeout=timeout, headers=headers)
        return Message(msg.subject, msg.data, msg.headers or {}, msg.reply or "")

    async def _a_flush(self, timeout: float) -> None:
        nc = self._nc
        assert nc is not None
        deadline = asyncio.get_running_loop().time() + timeout
        while self._out or self._held:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError()
            await asyncio.sleep(0.001)
        for _ in range(2):  # twice: see _a_subscribe (the PING can overtake the pending buffer)
            await nc.flush(timeout=max(0.01, deadline - asyncio.get_running_loop().time()))  # type: ignore[arg-type]


async def connect_nats_transport(
    nursery: trio.Nursery, servers: str | Sequence[str], *, name: str, **options: Any
) -> NatsTransport:
    """Connect and return a transport whose lifetime is tied to `nursery`: it is closed when the
    nursery is cancelled, and `await transport.aclose()` closes it earlier (the nursery's
    background task then ends). `options` are `NatsTransport`'s (tls_ca, tls_cert, tls_key,
    nkey_seed_file, connect_timeout, ...)."""
    transport = NatsTransport(servers, name=name, **options)
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
    are `NatsTransport`'s (tls_ca, tls_cert, tls_key, nkey_seed_file, connect_timeout, ...)."""
    transport = NatsTransport(servers, name=name, **options)
    await transport._start()
    try:
        yield transport
    finally:
        await transport.aclose()
