"""The runner's link to its controller: bootstrap, outbox, heartbeats, config changes.

The slice arrives with the runner's `$VAR` secrets as written; they are resolved here, from the
runner's own environment, and an action whose variable is unset is disabled (and reported) while
the rest of the slice runs. The runner asks for its slice again whenever it may have changed: on the
controller's broadcast, on a notice on its own subject (sent when its heartbeat shows an old version),
and after every reconnect of its link.

Everything a runner tells its controller goes through a durable outbox in the runner's store first
(events and execution reports), and leaves it only when the controller has acknowledged it. So a
controller or bus outage loses nothing: the runner keeps running its own actions, the outbox grows,
and it drains in order once the controller answers again. The controller remembers the event ids it
processed, so a message resent after a lost acknowledgement is processed once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import structlog
import trio
import yaml

from actors import TransportAuthError, TransportError
from actors.transport import Transport
from postee.bus.protocol import (
    ACK,
    CONFIG_CHANGED_SUBJECT,
    CONFIG_KIND,
    EVENTS_KIND,
    EXECUTIONS_KIND,
    HEADER_CONFIG_VERSION,
    HEADER_EVENT_ID,
    HEADER_ROUTE,
    HEADER_RUNNER,
    HEARTBEAT_KIND,
    LEGACY_SUBJECTS,
    OUTPUT_EXCERPT,
    ExecutionReport,
    Heartbeat,
    runner_config_subject,
    runner_subject,
)
from postee.config import Config, ConfigError, Severity, parse_config, yamlio
from postee.config.env import UnsetSecret, disable_unset
from postee.config.runner_slice import config_version
from postee.pipeline.action_actor import Execution
from postee.pipeline.events import Event
from postee.runtime import new_id, offload
from postee.store import OutboxMessage, Store
from postee.store.errors import StoreError

log = structlog.get_logger("postee.runner")

BOOTSTRAP_TIMEOUT = 5.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
REQUEST_TIMEOUT = 5.0
OUTBOX_BATCH = 100
OUTBOX_IDLE_POLL = 5.0
"""Seconds an idle outbox waits before looking again on its own: every report wakes it at once (this is a
safety net), and a thousand idle runners should not each query their store every second."""
HEARTBEAT_INTERVAL = 5.0


class RunnerFatal(Exception):
    """The runner cannot work and retrying will not help (credentials, TLS, an unusable config)."""


LINK_POLL_INTERVAL = 0.1
"""Seconds between looks at the link of a transport that cannot report its changes (in-memory)."""
NOTICE_BACKLOG = 16
"""Config-change notices kept while one is handled (more add nothing: one fetch answers them all)."""


@attrs.frozen
class FetchedConfig:
    text: str
    version: str
    config: Config
    unset: tuple[UnsetSecret, ...] = ()
    """Actions disabled because a variable they use is not set on this runner."""


@attrs.frozen
class Backoff:
    """Waits between attempts to reach the controller: doubling from `initial`, capped at `maximum`."""

    initial: float = BACKOFF_INITIAL
    maximum: float = BACKOFF_MAX

    def next(self, delay: float) -> float:
        return min(delay * 2, self.maximum)


DEFAULT_BACKOFF = Backoff()


async def fetch_config(
    transport: Transport, runner: str, environ: Mapping[str, str], backoff: Backoff = DEFAULT_BACKOFF
) -> FetchedConfig:
    """Ask the controller for this runner's slice (see `request_slice`), and read it."""
    text, version = await request_slice(transport, runner, backoff)
    return await read_slice(text, version, runner, environ)


async def request_slice(transport: Transport, runner: str, backoff: Backoff = DEFAULT_BACKOFF) -> tuple[str, str]:
    """This runner's slice as YAML, and its version, retrying with backoff until the controller answers.

    A refused credential or TLS identity is final (`RunnerFatal`); a controller that is down, not yet
    started or slow is waited for (Postee's runner exits instead).
    """
    delay = backoff.initial
    while True:
        try:
            reply = await transport.request(runner_subject(runner, CONFIG_KIND), runner.encode(),
                                            timeout=BOOTSTRAP_TIMEOUT)
        except TransportAuthError as exc:
            raise RunnerFatal(f"the controller refused this runner: {exc}") from None
        except TransportError as exc:
            log.warning("controller not answering; retrying", error=str(exc) or type(exc).__name__, retry_in=delay)
            await trio.sleep(delay)
            delay = backoff.next(delay)
            continue
        text = reply.data.decode("utf-8", errors="replace")
        return text, reply.headers.get(HEADER_CONFIG_VERSION) or config_version(text)


async def read_slice(text: str, version: str, runner: str, environ: Mapping[str, str]) -> FetchedConfig:
    """Check a slice with the runner's environment; raises `ConfigError` or `RunnerFatal` (not YAML)."""
    # Checking the actions may read files and build TLS contexts: off the event loop.
    config, unset = await offload(parse_runner_config, text, runner, environ)
    log.info("configuration received from the controller", version=version, routes=len(config.routes),
             actions=len(config.actions))
    return FetchedConfig(text, version, config, tuple(unset))


def parse_runner_config(text: str, runner: str, environ: Mapping[str, str]) -> tuple[Config, list[UnsetSecret]]:
    """The slice as a `Config`, with the actions whose `$VAR` is unset here disabled (and listed)."""
    try:
        data = yamlio.safe_load(text)
    except yaml.YAMLError as exc:
        raise RunnerFatal(f"the controller sent a configuration that is not YAML: {exc}") from None
    data, unset = disable_unset(data, environ)
    config, problems = parse_config(data, source=f"controller slice for {runner}", environ=environ)
    for problem in problems:
        if problem.severity is Severity.WARNING:
            log.warning("config", problem=str(problem))
    errors = [p for p in problems if p.severity is Severity.ERROR]
    if errors:
        raise ConfigError(f"controller slice for {runner}", problems)
    return config, unset


class Upstream:
    """The runner side of the bus (see the module docstring).

    Its services (`drain_outbox`, `send_heartbeats`, `watch_config`) run as children of the runner's
    link supervisor: each keeps its state in the store or can rebuild it, so a restart loses nothing.
    """

    def __init__(
        self,
        transport: Transport,
        runner: str,
        store: Callable[[], Store],
        *,
        clock: Callable[[], float],
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self.backoff = backoff
        self.transport = transport
        self.runner = runner
        self._store = store
        self.clock = clock
        self.config_version = ""
        self.actions: int | None = None
        """Actions the runner runs now (heartbeats carry it to `/runners`)."""
        self.problems: tuple[str, ...] = ()
        """What keeps the runner from running its slice as written (heartbeats carry it too)."""
        self._wake = trio.Event()
        self.events_reported = 0
        self.executions_reported = 0
        self.sent = 0

    @property
    def store(self) -> Store:
        """The node's store (opened by the node, so looked up when needed)."""
        return self._store()

    # -- hooks for the node ----------------------------------------------------------------------
    def event_message(self, event: Event) -> OutboxMessage | None:
        """The outbox message reporting `event` (the node records it with the event, in one transaction);
        a tenant event names its route, so the controller runs only that one. None for an event the
        controller handed over (it has it)."""
        if event.continues:
            return None
        headers = {HEADER_RUNNER: self.runner, HEADER_EVENT_ID: event.id}
        if event.route is not None:
            headers[HEADER_ROUTE] = event.route
        return OutboxMessage(runner_subject(self.runner, EVENTS_KIND), event.text.encode(), headers)

    def wake(self) -> None:
        """Something was added to the outbox: send it now."""
        self._wake.set()

    async def event_reported(self, event: Event) -> None:
        """The event's report is in the outbox: count it and wake the drain."""
        if event.continues:
            return  # a step the controller handed over: not an event this runner reports
        self.events_reported += 1
        self._wake.set()

    async def report_execution(self, execution: Execution) -> None:
        report = ExecutionReport(
            runner=self.runner,
            route=execution.route,
            action=execution.action,
            action_type=execution.action_type,
            event_id=execution.event_id,
            ok=execution.ok,
            attempts=execution.attempts,
            started_at=execution.started_at,
            duration=execution.duration,
            error=execution.error,
            output=execution.output[:OUTPUT_EXCERPT],
        )
        # A fresh id per report (kept in the outbox, so a resend carries the same one): event ids
        # repeat for aggregated sends, and one event may run the same action again after a reload.
        headers = {HEADER_RUNNER: self.runner, HEADER_EVENT_ID: f"exec:{new_id()}"}
        await self.store.outbox_add(runner_subject(self.runner, EXECUTIONS_KIND), report.to_json(), headers)
        self.executions_reported += 1
        self._wake.set()

    # -- services --------------------------------------------------------------------------------
    async def drain_outbox(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send outbox messages oldest first, one at a time (order is kept), until acknowledged.

        Everything it works on is in the store, so a crash loses nothing: the supervisor restarts it
        and it resumes with the oldest message not yet acknowledged.
        """
        delay = self.backoff.initial
        task_status.started()
        while True:
            self._wake = trio.Event()  # before reading: an item added meanwhile still wakes us
            try:
                items = await self.store.outbox_pending(OUTBOX_BATCH)
            except StoreError as exc:  # the messages stay where they are; try again later
                log.error("outbox unreadable; retrying", error=str(exc), retry_in=delay)
                await trio.sleep(delay)
                delay = self.backoff.next(delay)
                continue
            if not items:
                with trio.move_on_after(OUTBOX_IDLE_POLL):
                    await self._wake.wait()
                continue
            for item in items:
                try:
                    reply = await self.transport.request(self._subject_of(item.subject), item.payload,
                                                         headers=item.headers, timeout=REQUEST_TIMEOUT)
                except TransportError as exc:
                    log.info("controller unreachable; outbox kept", pending=len(items), retry_in=delay,
                             error=str(exc) or type(exc).__name__)
                    await trio.sleep(delay)
                    delay = self.backoff.next(delay)
                    break
                if reply.data != ACK:
                    log.warning("controller refused a message; will retry", subject=item.subject,
                                answer=reply.data[:200].decode(errors="replace"), retry_in=delay)
                    await trio.sleep(delay)
                    delay = self.backoff.next(delay)
                    break
                try:
                    await self.store.outbox_ack([item.id])
                except StoreError as exc:  # resent later; the controller drops the duplicate by its id
                    log.error("outbox acknowledgement not recorded", error=str(exc))
                    break
                self.sent += 1
                delay = self.backoff.initial

    def _subject_of(self, stored: str) -> str:
        """Where an outbox message goes: one stored by an older version under Postee's shared subject
        goes on this runner's own (the only one its key may use)."""
        for kind, legacy in LEGACY_SUBJECTS.items():
            if stored == legacy:
                return runner_subject(self.runner, kind)
        return stored

    async def _outbox_count(self) -> int:
        try:
            return await self.store.outbox_count()
        except StoreError:
            return -1

    async def send_heartbeats(self, interval: float = HEARTBEAT_INTERVAL, *,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tell the controller every `interval` seconds that this runner is alive, and how it is doing."""
        task_status.started()
        while True:
            beat = Heartbeat(
                runner=self.runner,
                sent_at=self.clock(),
                config_version=self.config_version,
                events=self.events_reported,
                executions=self.executions_reported,
                outbox=await self._outbox_count(),
                actions=self.actions,
                problems=self.problems,
            )
            try:
                await self.transport.publish(runner_subject(self.runner, HEARTBEAT_KIND), beat.to_json())
            except TransportError as exc:
                log.debug("heartbeat not sent", error=str(exc) or type(exc).__name__)
            await trio.sleep(interval)

    async def watch_config(self, on_notice: Callable[[str | None], Awaitable[Any]], *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Call `on_notice` whenever this runner's slice may have changed, one call at a time.

        `on_notice(version)`: the controller said this runner's current slice is `version` (its own
        subject); `on_notice(None)`: fetch and compare (the broadcast, whose version is the whole
        configuration's, or a reconnect, after which a broadcast may have been missed). Notices that
        arrive while one is handled are handled together, once.
        """
        send, receive = trio.open_memory_channel[str | None](NOTICE_BACKLOG)
        async with self.transport.subscribe(CONFIG_CHANGED_SUBJECT) as broadcast, \
                self.transport.subscribe(runner_config_subject(self.runner)) as mine, \
                trio.open_nursery() as nursery:
            nursery.start_soon(self._forward, broadcast, send, False)
            nursery.start_soon(self._forward, mine, send, True)
            nursery.start_soon(self._watch_reconnects, send)
            task_status.started()
            async for notice in receive:
                batch = [notice]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await on_notice(None if None in batch else batch[-1])

    @staticmethod
    async def _forward(subscription: Any, send: trio.MemorySendChannel[str | None], versioned: bool) -> None:
        async for message in subscription:
            version = message.data.decode(errors="replace").strip()
            log.info("controller configuration changed", version=version, told_directly=versioned)
            _notify(send, version if versioned and version else None)

    async def _watch_reconnects(self, send: trio.MemorySendChannel[str | None]) -> None:
        while True:
            await wait_link(self.transport, up=False)
            await wait_link(self.transport, up=True)
            log.info("link to the controller back: checking the configuration")
            _notify(send, None)


def _notify(send: trio.MemorySendChannel[str | None], notice: str | None) -> None:
    try:
        send.send_nowait(notice)
    except trio.WouldBlock:
        pass  # notices are waiting already: the fetch they cause answers this one too


async def wait_link(transport: Transport, *, up: bool) -> None:
    """Return once `transport`'s link is up (or down); never, for a closed transport or one without a link.

    The NATS transport reports link changes (`wait_connected` / `wait_disconnected`); for one that only
    has a `connected` flag (the in-memory bus) the flag is looked at every `LINK_POLL_INTERVAL`.
    """
    waiter = getattr(transport, "wait_connected" if up else "wait_disconnected", None)
    if waiter is not None:
        try:
            await waiter()
        except TransportError:  # closed for good: the node is stopping, this link will not change
            await trio.sleep_forever()
        return
    if not hasattr(transport, "connected"):
        await trio.sleep_forever()
    while bool(transport.connected) != up:  # type: ignore[attr-defined]
        await trio.sleep(LINK_POLL_INTERVAL)
