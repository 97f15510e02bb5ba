"""The ledger: which accepted events are unfinished, and what each of them still has to do.

Accepted means durable. An event is recorded in the store (`Store.intake_add`; on a runner together
with its report upstream, in one transaction) before it is answered 200 or acknowledged, and stays
there until it is finished: every route it went to has decided (no match, duplicate, queued for
aggregation, handed to its actions, failed) and every action it was handed to has ended, which
records that action's outcome (sent or failed) per (event, route, action). The finish forgets the
event and its outcomes.

A node that dies (SIGKILL, the OOM killer) leaves its unfinished events in the store; at the next
start `replay` sends them through the pipeline again, oldest first, before new events are
accepted, and the routes ask the ledger what not to redo:

- an action whose outcome was recorded is not handed the event again: it ran exactly once;
- the other actions are: at least once (an action may have run without its outcome being recorded);
- a dedup key recorded by the event itself does not make it a duplicate (the store keeps which
  event recorded each key);
- an action the event was queued for aggregation for is not queued again (the push records that
  outcome in its own transaction).

During normal operation nothing is read back: the ledger counts in memory, per event, the routes
and actions it still waits for. Only the accept is written at once (it must be, before the answer);
outcomes and finishes are written behind, by `serve`, every `flush_interval` (one transaction for
all of them, and the outcomes of an event finished meanwhile are not written at all), so the store
sees about one commit per accepted event instead of one per action. The price: an action that
ended in the last `flush_interval` before a crash is not recorded yet, and runs again after the
restart (at least once, as promised). A graceful stop flushes before the store closes. Every write
goes through the store's group commit. A failed write is logged and never stops the pipeline: at
worst the event is replayed at the next start and an action runs once more.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import attrs
import structlog
import trio

from postee.pipeline.events import Event, InvalidEvent, parse_event
from postee.store import Store
from postee.store.errors import StoreError
from postee.store.records import AcceptedEvent, OutboxMessage, Outcome

log = structlog.get_logger("postee.ledger")

REPLAY_BATCH = 100
"""Unfinished events read from the store at a time during a replay (each can be megabytes)."""

DEFAULT_FLUSH_INTERVAL = 0.05
"""Seconds outcomes and finishes wait to be written together: a few commits per second under load,
and at most this much work redone after a crash."""

FINAL_FLUSH_TIMEOUT = 10.0
"""How long a stopping node waits for the last outcomes to be written."""


class Ledger:
    """The node's record of unfinished events (see the module docstring).

    `durable=False` (or no store) records nothing: intake is volatile, as before this existed; it is
    the benchmark's comparison switch, not a mode to run in.
    """

    def __init__(self, store: Store | None, *, durable: bool = True,
                 flush_interval: float = DEFAULT_FLUSH_INTERVAL) -> None:
        self.store = store
        self.durable = durable and store is not None
        self.flush_interval = flush_interval
        self._pending: dict[str, int] = {}
        """Event id -> routes and actions it still waits for."""
        self._outcomes: dict[str, list[Outcome]] = {}
        """Outcomes not written yet, by event (dropped unwritten when the event finishes first)."""
        self._finished: list[str] = []
        """Finished events not forgotten yet."""
        self._dirty = trio.Event()
        self._flushing = trio.Lock()
        """One flush at a time: a stopping node's last flush waits for one in progress."""
        self._recorded: dict[str, frozenset[tuple[str, str]]] = {}
        """Replayed event id -> the (route, action) pairs whose outcome was recorded before the restart."""
        self.replayed = 0

    # -- intake ----------------------------------------------------------------------------------
    async def accept(self, event: Event, report: OutboxMessage | None = None,
                     processed_key: str | None = None) -> bool:
        """Record an accepted event (with its upstream report); False when it is recorded already.

        Raises `StoreError` when it could not be recorded: the event must then be refused.
        """
        assert self.store is not None
        record = AcceptedEvent(event.id, event.source, event.text, event.received_at, event.route,
                               continuation_of(event))
        return await self.store.intake_add(record, report, processed_key)

    def tracks(self, event_id: str) -> bool:
        """Whether the event is an accepted one in flight (not a `POST /tenant` run)."""
        return event_id in self._pending

    def recorded(self, event_id: str, route: str, action: str) -> bool:
        """Whether `action` of `route` already ran for this (replayed) event: do not run it again."""
        done = self._recorded.get(event_id)
        return done is not None and (route, action) in done

    # -- progress, as the pipeline reports it ----------------------------------------------------
    async def routed(self, event_id: str, routes: int) -> None:
        """The router handed the event to `routes` routes; each will call `route_decided`."""
        if not self.durable:
            return
        if routes == 0:
            self._finish(event_id)
        else:
            self._pending[event_id] = self._pending.get(event_id, 0) + routes

    def handed(self, event_id: str, actions: int) -> None:
        """A route is handing the event to `actions` actions; each will call `action_done`."""
        if event_id in self._pending:
            self._pending[event_id] += actions

    async def route_decided(self, event_id: str) -> None:
        """A route is done with the event (its actions, if any, were counted by `handed` first)."""
        if event_id in self._pending and self._count_down(event_id):
            self._finish(event_id)

    async def action_done(self, event_id: str, route: str, action: str, ok: bool) -> None:
        """An action ended for the event: its outcome is to be recorded, or the event is finished."""
        if event_id not in self._pending:
            return
        if self._count_down(event_id):
            self._finish(event_id)
        else:
            self._outcomes.setdefault(event_id, []).append(Outcome(event_id, route, action, ok))
            self._dirty.set()

    def _count_down(self, event_id: str) -> bool:
        """One less to wait for; True when that was the last."""
        left = self._pending[event_id] - 1
        if left > 0:
            self._pending[event_id] = left
            return False
        del self._pending[event_id]
        return True

    def _finish(self, event_id: str) -> None:
        self._recorded.pop(event_id, None)
        self._outcomes.pop(event_id, None)  # forgotten with the event: no need to write them first
        self._finished.append(event_id)
        self._dirty.set()

    # -- writing behind ------------------------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write outcomes and finishes every `flush_interval` while there are any, until cancelled."""
        task_status.started()
        while True:
            await self._dirty.wait()
            await trio.sleep(self.flush_interval)
            await self.flush()

    async def flush(self) -> None:
        """Write what is waiting now (outcomes first, then finishes, in one transaction)."""
        async with self._flushing:
            if not (self._outcomes or self._finished):
                return
            self._dirty = trio.Event()
            outcomes = [outcome for outcomes in self._outcomes.values() for outcome in outcomes]
            finished, self._outcomes, self._finished = self._finished, {}, []
            assert self.store is not None
            try:
                await self.store.intake_progress(outcomes, finished)
            except StoreError as exc:
                log.error("action outcomes not recorded; a restart may run those actions again",
                          outcomes=len(outcomes), finished=len(finished), error=str(exc))

    async def final_flush(self) -> None:
        """Before the store closes: what ended is recorded, so a restart does not redo it."""
        if not self.durable:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(FINAL_FLUSH_TIMEOUT):
            await self.flush()

    # -- restart ---------------------------------------------------------------------------------
    async def replay(self, send: Callable[[Event], Awaitable[None]]) -> int:
        """Send every unfinished event to `send` again, oldest first; return how many.

        Call once at start, before new events are accepted, with the pipeline running. Aggregation
        batches that were being sent when the node died go back to their queues first.
        """
        if not self.durable:
            return 0
        assert self.store is not None
        released = await self.store.aggregation_release()
        after = count = 0
        while batch := await self.store.intake_unfinished(after, REPLAY_BATCH):
            if count == 0:
                log.info("replaying unfinished events", aggregation_items_released=released)
            for item in batch:
                after = item.seq
                kept = item.event
                try:
                    event = parse_event(kept.text, event_id=kept.id, source=kept.source,
                                        received_at=kept.received_at, route=kept.route)
                    event = continued(event, kept.continuation)
                except (InvalidEvent, ValueError, TypeError, KeyError) as exc:  # only a damaged file gets here
                    log.error("unfinished event unreadable; dropped", event_id=kept.id, error=str(exc))
                    await self.store.intake_progress(finished=[kept.id])
                    continue
                if item.outcomes:
                    self._recorded[event.id] = item.outcomes
                await send(event)
                count += 1
        if count:
            log.info("unfinished events replayed", events=count)
        self.replayed += count
        return count


def continuation_of(event: Event) -> str | None:
    """How the store keeps a continuation's step (`AcceptedEvent.continuation`)."""
    if event.step is None:
        return None
    return json.dumps({"step": event.step, "only": event.only_step, "origin": event.origin_id,
                       "entered": event.entered, "action": event.step_action})


def continued(event: Event, continuation: str | None) -> Event:
    """`event` with the step the store kept for it (a replayed continuation)."""
    if continuation is None:
        return event
    kept = json.loads(continuation)
    return attrs.evolve(event, step=int(kept["step"]), only_step=bool(kept["only"]), origin_id=kept["origin"],
                        entered=kept.get("entered"), step_action=kept.get("action"))
