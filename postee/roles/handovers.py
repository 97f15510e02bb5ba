"""Handing events over between sides (issue #16): the wire format, a runner's two ends, and the
controller's store of steps waiting for runners.

A handover (`postee.pipeline.plan.Handover`) always travels durably:

- **runner → controller**: into the runner's outbox, on its events subject, with the step in headers
  (`Postee-Step`, `Postee-Step-Only`, `Postee-Origin-Event`, `Postee-Route`; `Postee-Event-Id` is the
  handover's own id, per route and step). The outbox keeps the order and resends until acknowledged;
  the controller records the event with that id as processed, so a resend runs once.
- **controller → runner**: into the controller's store, under a subject per runner
  (`dispatch_store_subject`), then a notice on `postee.dispatch.<runner>`. The runner asks for its
  steps on its own subject (`postee.runner.<name>.handovers`, `{"after": <id>}`), records each as an
  accepted event (processed key per handover id: a resend runs once), then asks again past the last
  one, which tells the controller it may forget them. A runner with its own key may only publish under
  its own subjects, so it pulls; the notice carries nothing to trust. The runner asks at start, after
  a reconnect, on every notice and every `POLL_INTERVAL`.

Steps that wait longer than the configuration's `runner-dispatch-ttl` are recorded expired by the
controller (`/executions`, `postee_dispatch_expired`, the live feed).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs
import structlog
import trio

from actors import TransportError
from actors.transport import Transport
from postee.bus.protocol import (
    EVENTS_KIND,
    HANDOVERS_KIND,
    HEADER_ENTERED,
    HEADER_EVENT_ID,
    HEADER_ONLY_STEP,
    HEADER_ORIGIN,
    HEADER_ROUTE,
    HEADER_RUNNER,
    HEADER_STEP,
    HEADER_STEP_ACTION,
    dispatch_notice_subject,
    dispatch_store_subject,
    runner_subject,
)
from postee.pipeline.events import Event, InvalidEvent, parse_event_off_loop
from postee.pipeline.plan import Handover, continuation_id
from postee.store import Store

log = structlog.get_logger("postee.handovers")

CONTROLLER_SOURCE = "controller"
"""The `source` of an event a controller handed over to a runner."""
FETCH_BATCH = 50
"""Steps a controller hands a runner per request."""
POLL_INTERVAL = 5.0
"""Seconds between a runner's looks for steps when no notice came (a lost notice costs at most this)."""
REQUEST_TIMEOUT = 5.0
DISPATCH_STORE_PREFIX = dispatch_store_subject("")


def handover_headers(handover: Handover, runner: str | None = None) -> dict[str, str]:
    """The headers a handover travels with (and is kept under, on either side)."""
    headers = {
        HEADER_EVENT_ID: handover.id,
        HEADER_ROUTE: handover.route,
        HEADER_STEP: str(handover.step),
        HEADER_ONLY_STEP: "1" if handover.only else "0",
        HEADER_ORIGIN: handover.origin_id,
        HEADER_ENTERED: handover.entered,
        HEADER_STEP_ACTION: handover.action,
    }
    if runner is not None:
        headers[HEADER_RUNNER] = runner
    return headers


def is_handover(headers: Mapping[str, str]) -> bool:
    return HEADER_STEP in headers


async def continuation_event(data: bytes | str, headers: Mapping[str, str], source: str) -> Event:
    """The event a handover carries, as the receiving side runs it; raises `InvalidEvent` for a body that
    is not an event or headers that do not name a step."""
    try:
        step = int(headers[HEADER_STEP])
        route = headers[HEADER_ROUTE]
        event_id = headers[HEADER_EVENT_ID]
        origin = headers.get(HEADER_ORIGIN) or event_id
    except (KeyError, ValueError):
        raise InvalidEvent("a handed-over event must name its route, step and id") from None
    if step < 0 or not route or not event_id:
        raise InvalidEvent("a handed-over event must name its route, step and id")
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    event = await parse_event_off_loop(raw, event_id=event_id, source=source, route=route)
    return attrs.evolve(event, step=step, only_step=headers.get(HEADER_ONLY_STEP) == "1", origin_id=origin,
                        entered=headers.get(HEADER_ENTERED, source),
                        step_action=headers.get(HEADER_STEP_ACTION) or None)


# -- a runner's ends -----------------------------------------------------------------------------------

class RunnerHandovers:
    """A runner's side of handovers: what it hands to its controller, and the steps it fetches from it."""

    def __init__(self, transport: Transport, runner: str, store: Callable[[], Store],
                 wake_outbox: Callable[[], None],
                 unusable: Callable[[Mapping[str, str], str], Awaitable[None]] | None = None) -> None:
        """`unusable(headers, reason)`: tells the controller of a step this runner cannot run (it is dropped:
        asking again would bring the same)."""
        self.transport = transport
        self.runner = runner
        self._store = store
        self._wake_outbox = wake_outbox
        self._unusable = unusable
        self.fetched = 0
        """Handed-over steps taken from the controller (counting resends it had to make, and those this
        runner could not run)."""

    async def hand_over(self, handover: Handover) -> None:
        """Into the outbox, after the runner's reports so far (the controller sees them in this order)."""
        await self._store().outbox_add(runner_subject(self.runner, EVENTS_KIND), handover.text.encode(),
                                       handover_headers(handover, self.runner))
        self._wake_outbox()

    async def fetch(self, submit: Callable[[Event, str], Awaitable[bool]], *,
                    poll_interval: float = POLL_INTERVAL,
                    check: Callable[[Event], str | None] = lambda event: None,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take the steps the controller keeps for this runner, in order, for as long as the runner runs.

        `submit(event, processed_key)` records an event as accepted (False: it was already): only then
        is the next request sent, which acknowledges it. `check(event)` says why this runner cannot run a
        step (its configuration has no such route or step), or None.
        """
        wake = trio.Event()
        async with self.transport.subscribe(dispatch_notice_subject(self.runner)) as notices, \
                trio.open_nursery() as nursery:

            async def on_notice() -> None:
                nonlocal wake
                async for _ in notices:
                    wake.set()

            nursery.start_soon(on_notice)
            task_status.started()
            after = 0
            while True:
                wake = trio.Event()
                try:
                    items = await self._request(after)
                except (TransportError, ValueError) as exc:
                    log.info("handed-over steps not fetched; trying again", error=str(exc) or type(exc).__name__)
                    items = []
                for item in items:
                    await self._take(item, submit, check)
                    after = max(after, int(item["id"]))
                if items:
                    continue  # ask again at once: it acknowledges these, and more may wait
                with trio.move_on_after(poll_interval):
                    await wake.wait()

    async def _request(self, after: int) -> list[dict[str, Any]]:
        reply = await self.transport.request(runner_subject(self.runner, HANDOVERS_KIND),
                                             json.dumps({"after": after}).encode(), timeout=REQUEST_TIMEOUT)
        answer = json.loads(reply.data)
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise ValueError("the controller's answer has no list of items")
        return [item for item in items if isinstance(item, dict) and isinstance(item.get("id"), int)]

    async def _take(self, item: Mapping[str, Any], submit: Callable[[Event, str], Awaitable[bool]],
                    check: Callable[[Event], str | None]) -> None:
        headers = item.get("headers") if isinstance(item.get("headers"), dict) else {}
        try:
            event = await continuation_event(str(item.get("text", "")), headers, CONTROLLER_SOURCE)
            reason = check(event)
        except InvalidEvent as exc:
            reason = str(exc)
        if reason is not None:
            log.error("handed-over step cannot run here; dropped", item=item.get("id"),
                      event_id=headers.get(HEADER_EVENT_ID), reason=reason)
            if self._unusable is not None:
                await self._unusable(headers, reason)
            self.fetched += 1
            return
        while True:
            try:
                await submit(event, f"handover:{event.id}")
                self.fetched += 1
                return
            except Exception as exc:  # the store could not record it: not acknowledged, ask again later
                log.error("handed-over step not recorded; retrying", event_id=event.id,
                          error=f"{type(exc).__name__}: {exc}")
                await trio.sleep(POLL_INTERVAL)


# -- a controller's end --------------------------------------------------------------------------------

ANSWER_BYTES = 256 * 1024
"""Bytes of events one answer to a runner carries at most (at least one event), and never more than a third
of the bus's max_payload (escaped in JSON, an event grows): a backlog of large events drains instead of
failing every answer."""
DEFAULT_MAX_PAYLOAD = 1024 * 1024


def expected_back(runner: str, origin: str, route: str, step: int) -> str:
    """The processed key that lets `runner` hand `origin` back at `step` of `route` as an event that entered
    at the controller (recorded when the controller handed it the steps before)."""
    return f"expect:{runner}:{continuation_id(origin, route, step)}"


def expired_message(runner: str, ttl: float) -> str:
    return f"expired: runner {runner!r} did not take this step within runner-dispatch-ttl ({ttl:g}s)"


class ControllerHandovers:
    """The steps a controller keeps for its runners until they take them (see the module docstring)."""

    def __init__(self, transport: Transport, store: Callable[[], Store]) -> None:
        self.transport = transport
        self._store = store
        self._answered: dict[str, int] = {}
        """Per runner, the last step id answered to it since this start: what it may acknowledge."""
        self.last_asked: dict[str, float] = {}
        """Per runner, when it last asked (trio clock): its steps are not expired while it takes them."""

    async def hand_over(self, handover: Handover) -> None:
        """Keep the step for its runner, then tell the runner (a lost notice costs it one poll). For an event
        that entered here, first note where the runner may hand it back (`expected_back`)."""
        store = self._store()
        if handover.entered == "" and handover.returns_at is not None:
            await store.mark_processed(expected_back(handover.side, handover.origin_id, handover.route,
                                                     handover.returns_at))
        await store.outbox_add(dispatch_store_subject(handover.side), handover.text.encode(),
                               handover_headers(handover))
        try:
            await self.transport.publish(dispatch_notice_subject(handover.side), b"")
        except TransportError as exc:
            log.debug("runner not told of a step; it will find it", runner=handover.side, error=str(exc))

    async def answer(self, runner: str, request: bytes) -> bytes:
        """The reply to `runner`'s request for its steps: those past its cursor, after forgetting the ones
        up to it (it has them). Raises `ValueError` for a request that is not `{"after": <id>}`."""
        asked = json.loads(request or b"{}")
        after = asked.get("after", 0) if isinstance(asked, dict) else None
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise ValueError("a request for steps is {\"after\": <id>}")
        store, subject = self._store(), dispatch_store_subject(runner)
        self.last_asked[runner] = trio.current_time()
        # acknowledged: only what was answered to it (a cursor from elsewhere, a forged one, forgets nothing)
        acknowledged = min(after, self._answered.get(runner, 0))
        if acknowledged:
            await store.outbox_ack_upto(subject, acknowledged)
        max_payload = getattr(self.transport, "max_payload", None) or DEFAULT_MAX_PAYLOAD
        budget = min(ANSWER_BYTES, max_payload // 3)
        items, size = [], 0
        for item in await store.outbox_for(subject, after, FETCH_BATCH):
            if items and size + len(item.payload) > budget:
                break
            items.append(item)
            size += len(item.payload)
        if items:
            self._answered[runner] = max(self._answered.get(runner, 0), items[-1].id)
        return json.dumps({"items": [{"id": item.id, "headers": item.headers,
                                      "text": item.payload.decode("utf-8", "surrogatepass")}
                                     for item in items]}).encode()

    async def too_large(self, runner: str, answer: bytes, error: Exception) -> Handover | None:
        """After an answer could not be sent: when it held one step alone (too large for the bus even so),
        forget that step and return it (the caller records it failed); None otherwise (try again later)."""
        items = json.loads(answer)["items"]
        if len(items) != 1 or "payload" not in str(error).lower():
            return None
        item = items[0]
        await self._store().outbox_ack_upto(dispatch_store_subject(runner), int(item["id"]))
        return _handover_of(runner, item["headers"])

    async def expire(self, older_than: float, *, busy: Iterable[str] = ()) -> list[tuple[str, Handover]]:
        """Forget the dispatched steps (`Postee-Step-Only: 1`) kept since before `older_than`, but those of
        `busy` runners (taking their steps right now); (runner, step) for each. The steps of a serialized
        route wait for their runner as long as it takes: nothing of a started chain is dropped."""
        expired = []
        for runner in await self.pending():
            if runner in busy:
                continue
            for item in await self._store().outbox_expire(dispatch_store_subject(runner), older_than,
                                                          header=(HEADER_ONLY_STEP, "1")):
                handover = _handover_of(runner, item.headers)
                if handover is not None:
                    expired.append((runner, handover))
        return expired

    async def pending(self) -> dict[str, int]:
        """Steps waiting, per runner."""
        counts = await self._store().outbox_counts(DISPATCH_STORE_PREFIX)
        return {subject[len(DISPATCH_STORE_PREFIX):]: n for subject, n in counts.items()}


def _handover_of(runner: str, headers: Mapping[str, str]) -> Handover | None:
    """The step a kept item stands for, from its headers (None: not one of ours)."""
    try:
        return Handover(origin_id=headers.get(HEADER_ORIGIN, ""), route=headers[HEADER_ROUTE],
                        step=int(headers[HEADER_STEP]), side=runner, only=headers.get(HEADER_ONLY_STEP) == "1",
                        text="", entered=headers.get(HEADER_ENTERED, ""), action=headers.get(HEADER_STEP_ACTION, ""))
    except (KeyError, ValueError):
        return None
