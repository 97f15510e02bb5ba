"""The simulator's invariant checkers (`postee.sim.invariants`) on hand-built logs: each rule fails when
it must and passes when it must.

A `Deployment` here is only its slots: a controller and one runner, each a `NodeLog` whose records are
appended directly (no Trio run needed), the action attempts a list of `Call`s. Everything goes through
`check_all`, as the simulator calls it, and each test looks at the invariant it is about.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from postee.sim.deployment import Accepted, Deployment, Executed, NodeLog, Outcome, _Slot
from postee.sim.invariants import RouteFacts, Verdict, check_all
from postee.sim.recording import Call, Recordings, Result, always_ok
from postee.sim.scenario import CONTROLLER
from postee.sim.trace import Trace

RUNNER = "runner-1"

UPSTREAM = "exactly_once_upstream"
ACTIONS = "actions_at_most_and_at_least_once"
SERIAL = "serialized_routes_keep_order"
DEDUP = "dedup_drops_exactly_the_duplicates"
AGGREGATE = "aggregated_items_sent_once"


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    trace = Trace()
    built = Deployment(bus=None, pool=None, library=None, recordings=Recordings(), trace=trace,  # type: ignore[arg-type]
                       plan=always_ok, runners=(RUNNER,))
    for name in (CONTROLLER, RUNNER):
        built.slots[name] = _Slot(name, store=None, log=NodeLog(name, trace))  # type: ignore[arg-type]
    yield built
    shutil.rmtree(built.directory, ignore_errors=True)  # Deployment makes a temporary directory


# -- building the logs ---------------------------------------------------------------------------------


def log_of(deployment: Deployment, node: str) -> NodeLog:
    return deployment.slots[node].log


def accept(deployment: Deployment, node: str, event_id: str, at: float, *, source: str = "webhook",
           n: int | None = None) -> None:
    log_of(deployment, node).accepted.append(Accepted(node, event_id, source, n, at, 1))


def arrive(deployment: Deployment, event_id: str, at: float) -> None:
    """An event accepted by the runner and, just after, by the controller (as it should be)."""
    accept(deployment, RUNNER, event_id, at)
    accept(deployment, CONTROLLER, event_id, at + 0.01, source=RUNNER)


def replay(deployment: Deployment, node: str, event_id: str, at: float) -> None:
    log_of(deployment, node).replayed.append(Accepted(node, event_id, RUNNER, None, at, 2))


def outcome(deployment: Deployment, node: str, route: str, event_id: str, at: float, *, matched: bool = True,
            dropped: str | None = None, checked_at: float | None = None, n: int | None = None) -> None:
    log_of(deployment, node).outcomes.append(Outcome(node, route, event_id, n, matched, dropped, checked_at, at, 1))


def executed(deployment: Deployment, node: str, route: str, action: str, event_id: str, at: float, *,
             ok: bool) -> None:
    log_of(deployment, node).executions.append(Executed(node, route, action, event_id, ok, 3, at, 1))


def call(action: str, route: str, event_id: str, started: float, ended: float, *, result: Result = "ok",
         items: tuple[int, ...] = (), node: str = RUNNER, attempt: int = 1) -> Call:
    return Call(node=node, action=action, route=route, event_id=event_id, attempt=attempt, items=items,
                started=started, ended=ended, result=result)


def facts_of(route: str, *actions: str, node: str = RUNNER, serialized: bool = False, aggregates: bool = False,
             dedup_window: float | None = None) -> dict[tuple[str, str], RouteFacts]:
    return {(node, route): RouteFacts(actions=actions, serialized=serialized, aggregates=aggregates,
                                      dedup_window=dedup_window, dedup_props=("sim.key",) if dedup_window else ())}


def check(deployment: Deployment, facts: Mapping[tuple[str, str], RouteFacts] | None = None,
          calls: list[Call] | None = None, keys: Mapping[str, str] | None = None) -> tuple[Verdict, int, int]:
    return check_all(deployment, facts or {}, calls or [], keys or {}, [], [])


def problems(verdict: Verdict, invariant: str) -> list[dict[str, Any]]:
    return [v for v in verdict.violations if v["invariant"] == invariant]


def assert_clean(verdict: Verdict) -> None:
    assert verdict.violations == []
    assert all(verdict.invariants.values()), verdict.invariants


# -- exactly_once_upstream -------------------------------------------------------------------------------


def test_upstream_an_event_the_controller_accepted_once_is_ok(deployment):
    """A runner's event accepted once by the controller (from that runner) is delivered exactly once."""
    accept(deployment, RUNNER, "e1", 1.0, n=1)
    accept(deployment, CONTROLLER, "e1", 1.5, source=RUNNER, n=1)
    verdict, lost, duplicated = check(deployment)
    assert_clean(verdict)
    assert (lost, duplicated) == (0, 0)


def test_upstream_an_event_the_controller_never_accepted_is_lost(deployment):
    """Accepted by a runner, never by the controller (nor replayed there): a violation, counted as lost."""
    accept(deployment, RUNNER, "e1", 1.0, n=1)
    accept(deployment, RUNNER, "e2", 2.0, n=2)
    accept(deployment, CONTROLLER, "e2", 2.5, source=RUNNER, n=2)
    verdict, lost, duplicated = check(deployment)
    assert verdict.invariants[UPSTREAM] is False
    assert (lost, duplicated) == (1, 0)
    [violation] = problems(verdict, UPSTREAM)
    assert violation["runner"] == RUNNER and violation["event_id"] == "e1" and violation["controller_accepted"] == 0


def test_upstream_an_event_the_controller_accepted_twice_is_duplicated(deployment):
    """Accepted twice by the controller (a resend it did not recognise): a violation, counted as duplicated."""
    accept(deployment, RUNNER, "e1", 1.0, n=1)
    accept(deployment, CONTROLLER, "e1", 1.5, source=RUNNER, n=1)
    accept(deployment, CONTROLLER, "e1", 7.0, source=RUNNER, n=1)
    verdict, lost, duplicated = check(deployment)
    assert verdict.invariants[UPSTREAM] is False
    assert (lost, duplicated) == (0, 1)
    assert problems(verdict, UPSTREAM)[0]["controller_accepted"] == 2


def test_upstream_an_event_recorded_before_a_controller_crash_and_replayed_is_ok(deployment):
    """Recorded by the controller, which crashed before saying it accepted it: its replay at the restart
    counts as the one delivery."""
    accept(deployment, RUNNER, "e1", 1.0, n=1)
    replay(deployment, CONTROLLER, "e1", 9.0)
    verdict, lost, duplicated = check(deployment)
    assert_clean(verdict)
    assert (lost, duplicated) == (0, 0)


def test_upstream_the_controllers_own_webhook_events_do_not_count_as_deliveries(deployment):
    """Only what the controller accepted from runners counts: a webhook event of the same id does not."""
    accept(deployment, RUNNER, "e1", 1.0, n=1)
    accept(deployment, CONTROLLER, "e1", 1.5, source="webhook", n=1)
    verdict, lost, _ = check(deployment)
    assert verdict.invariants[UPSTREAM] is False
    assert lost == 1


# -- actions_once ---------------------------------------------------------------------------------------


def test_actions_an_action_ok_twice_for_one_event_without_a_crash_ran_twice(deployment):
    """At most once: two successful runs of one action for one event, its node up all along, is a violation."""
    calls = [call("a", "r", "e1", 1.0, 2.0), call("a", "r", "e1", 3.0, 4.0, attempt=2)]
    verdict, _, _ = check(deployment, facts_of("r", "a"), calls)
    assert verdict.invariants[ACTIONS] is False
    [violation] = problems(verdict, ACTIONS)
    assert violation["problem"] == "ran twice"
    assert (violation["node"], violation["action"], violation["event_id"]) == (RUNNER, "a", "e1")
    assert verdict.redone_after_crash == 0


def test_actions_a_second_run_after_a_crash_of_its_node_in_between_is_redone_not_a_violation(deployment):
    """An outcome not recorded yet when the node crashed makes the action run again after the restart:
    allowed when the crash falls between the two runs, and counted as redone."""
    deployment.slots[RUNNER].crashes = [(2.5, 2.8)]
    calls = [call("a", "r", "e1", 1.0, 2.0), call("a", "r", "e1", 3.0, 4.0, attempt=2)]
    verdict, _, _ = check(deployment, facts_of("r", "a"), calls)
    assert_clean(verdict)
    assert verdict.redone_after_crash == 1


@pytest.mark.parametrize("crashes", [[(0.5, 0.8)], [(5.0, 6.0)]], ids=["before", "after"])
def test_actions_a_crash_outside_the_two_runs_does_not_excuse_the_second(deployment, crashes):
    """Only a crash between the first run's end and the second's start explains a second run."""
    deployment.slots[RUNNER].crashes = crashes
    calls = [call("a", "r", "e1", 1.0, 2.0), call("a", "r", "e1", 3.0, 4.0, attempt=2)]
    verdict, _, _ = check(deployment, facts_of("r", "a"), calls)
    assert [v["problem"] for v in problems(verdict, ACTIONS)] == ["ran twice"]
    assert verdict.redone_after_crash == 0


def test_actions_a_crash_of_another_node_does_not_excuse_a_second_run(deployment):
    """The crash must be of the node that ran the action."""
    deployment.slots[CONTROLLER].crashes = [(2.5, 2.8)]
    calls = [call("a", "r", "e1", 1.0, 2.0), call("a", "r", "e1", 3.0, 4.0, attempt=2)]
    verdict, _, _ = check(deployment, facts_of("r", "a"), calls)
    assert [v["problem"] for v in problems(verdict, ACTIONS)] == ["ran twice"]


def test_actions_a_retry_after_a_failed_attempt_is_one_run(deployment):
    """Failed, then retried with success: the action ran once."""
    outcome(deployment, RUNNER, "r", "e1", 0.5)
    calls = [call("a", "r", "e1", 1.0, 2.0, result="failed"), call("a", "r", "e1", 3.0, 4.0, attempt=2)]
    verdict, _, _ = check(deployment, facts_of("r", "a"), calls)
    assert_clean(verdict)


def test_actions_a_handed_event_whose_action_never_succeeded_nor_failed_never_ran(deployment):
    """At least once: a matched, not dropped outcome hands the event to each of the route's actions; one
    with no successful call and no recorded failure never ran (an attempt that failed is not enough)."""
    outcome(deployment, RUNNER, "r", "e1", 0.5, n=1)
    calls = [call("a", "r", "e1", 1.0, 2.0), call("b", "r", "e1", 1.0, 2.0, result="failed")]
    verdict, _, _ = check(deployment, facts_of("r", "a", "b"), calls)
    assert verdict.invariants[ACTIONS] is False
    [violation] = problems(verdict, ACTIONS)
    assert violation["problem"] == "never ran"
    assert (violation["node"], violation["route"], violation["action"], violation["event_id"]) == (
        RUNNER, "r", "b", "e1")


def test_actions_a_recorded_failure_counts_as_the_action_having_run(deployment):
    """An action that gave up (its failure recorded as an execution) did run: no "never ran"."""
    outcome(deployment, RUNNER, "r", "e1", 0.5, n=1)
    calls = [call("a", "r", "e1", 1.0, 2.0), call("b", "r", "e1", 1.0, 2.0, result="failed")]
    executed(deployment, RUNNER, "r", "b", "e1", 2.0, ok=False)
    verdict, _, _ = check(deployment, facts_of("r", "a", "b"), calls)
    assert_clean(verdict)


@pytest.mark.parametrize(("matched", "dropped"), [(False, None), (True, "duplicate"), (True, "error: render")])
def test_actions_an_event_not_handed_to_the_actions_need_not_run_them(deployment, matched, dropped):
    """Unmatched or dropped (duplicate, error): the actions were never asked to run."""
    outcome(deployment, RUNNER, "r", "e1", 0.5, matched=matched, dropped=dropped)
    verdict, _, _ = check(deployment, facts_of("r", "a"))
    assert_clean(verdict)


def test_actions_one_action_in_two_routes_runs_once_per_route(deployment):
    """Postee configurations may list one action in several routes; an event matching two of them runs
    it once for each route (the ledger records an outcome per (event, route, action)). Not twice."""
    outcome(deployment, RUNNER, "r1", "e1", 0.5)
    outcome(deployment, RUNNER, "r2", "e1", 0.5)
    calls = [call("a", "r1", "e1", 1.0, 2.0), call("a", "r2", "e1", 1.0, 2.5)]
    verdict, _, _ = check(deployment, {**facts_of("r1", "a"), **facts_of("r2", "a")}, calls)
    assert_clean(verdict)


def test_actions_a_failure_in_one_route_does_not_excuse_the_same_action_never_running_in_another(deployment):
    """Route r1's run of "a" failed (recorded); route r2 also handed e1 to "a", which never ran: a violation."""
    outcome(deployment, RUNNER, "r1", "e1", 0.5)
    outcome(deployment, RUNNER, "r2", "e1", 0.5)
    calls = [call("a", "r1", "e1", 1.0, 2.0, result="failed")]
    executed(deployment, RUNNER, "r1", "a", "e1", 2.0, ok=False)
    verdict, _, _ = check(deployment, {**facts_of("r1", "a"), **facts_of("r2", "a")}, calls)
    assert [(v["problem"], v["route"]) for v in problems(verdict, ACTIONS)] == [("never ran", "r2")]


# -- serialized_order ------------------------------------------------------------------------------------

SERIAL_FACTS = facts_of("ser", "a", "b", serialized=True)


def test_serialized_two_actions_of_one_event_overlapping_is_a_violation(deployment):
    """A serialized route runs an event's actions one after another: b starting before a ended is not."""
    arrive(deployment, "e1", 0.0)
    calls = [call("a", "ser", "e1", 1.0, 3.0), call("b", "ser", "e1", 2.0, 4.0)]
    verdict, _, _ = check(deployment, SERIAL_FACTS, calls)
    assert [v["problem"] for v in problems(verdict, SERIAL)] == ["actions overlapped"]


def test_serialized_actions_in_reverse_list_order_is_a_violation(deployment):
    """A serialized route runs its actions in list order: b then a is not."""
    arrive(deployment, "e1", 0.0)
    calls = [call("b", "ser", "e1", 1.0, 2.0), call("a", "ser", "e1", 2.0, 3.0)]
    verdict, _, _ = check(deployment, SERIAL_FACTS, calls)
    [violation] = problems(verdict, SERIAL)
    assert violation["problem"] == "actions out of list order"
    assert (violation["first"], violation["then"]) == ("b", "a")


def test_serialized_events_run_out_of_their_arrival_order_is_a_violation(deployment):
    """A serialized route runs its events in the order the node accepted them: e2 before e1 is not."""
    arrive(deployment, "e1", 0.0)
    arrive(deployment, "e2", 0.1)
    calls = [call("a", "ser", "e2", 1.0, 2.0), call("b", "ser", "e2", 2.0, 3.0),
             call("a", "ser", "e1", 3.0, 4.0), call("b", "ser", "e1", 4.0, 5.0)]
    verdict, _, _ = check(deployment, SERIAL_FACTS, calls)
    [violation] = problems(verdict, SERIAL)
    assert violation["problem"] == "events out of arrival order or overlapping"
    assert (violation["earlier_event"], violation["later_event"]) == ("e1", "e2")


def test_serialized_the_next_event_starting_before_the_previous_one_finished_is_a_violation(deployment):
    """One event at a time: e2's first action may not start while e1's last one still runs."""
    arrive(deployment, "e1", 0.0)
    arrive(deployment, "e2", 0.1)
    calls = [call("a", "ser", "e1", 1.0, 2.0), call("b", "ser", "e1", 2.0, 4.0),
             call("a", "ser", "e2", 3.0, 5.0), call("b", "ser", "e2", 5.0, 6.0)]
    verdict, _, _ = check(deployment, SERIAL_FACTS, calls)
    assert [v["problem"] for v in problems(verdict, SERIAL)] == ["events out of arrival order or overlapping"]


def test_serialized_sequential_runs_in_order_with_a_retry_are_ok(deployment):
    """Events in arrival order, each one's actions in list order one after another (a retried attempt
    of a included, a touching the next one's start): no violation."""
    arrive(deployment, "e1", 0.0)
    arrive(deployment, "e2", 0.1)
    calls = [call("a", "ser", "e1", 1.0, 1.5, result="failed"), call("a", "ser", "e1", 1.5, 2.0, attempt=2),
             call("b", "ser", "e1", 2.0, 3.0), call("a", "ser", "e2", 3.0, 4.0), call("b", "ser", "e2", 4.0, 5.0)]
    verdict, _, _ = check(deployment, SERIAL_FACTS, calls)
    assert_clean(verdict)


def test_serialized_rules_do_not_apply_to_a_route_that_does_not_serialize(deployment):
    """The same overlapping, reversed, out-of-order runs on a route without serialize-actions are fine."""
    arrive(deployment, "e1", 0.0)
    arrive(deployment, "e2", 0.1)
    calls = [call("b", "loose", "e2", 1.0, 3.0), call("a", "loose", "e2", 2.0, 4.0),
             call("b", "loose", "e1", 1.5, 2.5), call("a", "loose", "e1", 2.0, 3.0)]
    verdict, _, _ = check(deployment, facts_of("loose", "a", "b"), calls)
    assert_clean(verdict)


# -- dedup_window ------------------------------------------------------------------------------------------

WINDOW = 10.0
DEDUP_FACTS = facts_of("dd", "a", dedup_window=WINDOW)
SAME_KEY = {"e1": "k", "e2": "k", "e3": "k"}


def dedup_check(deployment: Deployment, facts: Mapping[tuple[str, str], RouteFacts] = DEDUP_FACTS,
                keys: Mapping[str, str] = SAME_KEY) -> list[dict[str, Any]]:
    verdict, _, _ = check(deployment, facts, keys=keys)
    found = problems(verdict, DEDUP)
    assert verdict.invariants[DEDUP] is (not found)
    return found


def test_dedup_a_duplicate_inside_the_window_dropped_is_ok(deployment):
    """e1 records the key at 0; e2, same key at 5 (window 10), is dropped: right."""
    outcome(deployment, RUNNER, "dd", "e1", 0.0, checked_at=0.0)
    outcome(deployment, RUNNER, "dd", "e2", 5.0, dropped="duplicate", checked_at=5.0)
    assert dedup_check(deployment) == []


def test_dedup_a_duplicate_inside_the_window_passed_is_a_violation(deployment):
    """e2, same key 5 s after e1 (window 10), passing is a violation."""
    outcome(deployment, RUNNER, "dd", "e1", 0.0, checked_at=0.0)
    outcome(deployment, RUNNER, "dd", "e2", 5.0, checked_at=5.0)
    [violation] = dedup_check(deployment)
    assert violation["problem"] == "passed, a duplicate inside the window"
    assert violation["event_id"] == "e2" and violation["window_owner"] == (WINDOW, "e1")


@pytest.mark.parametrize("at", [WINDOW, 15.0], ids=["at-expiry", "after"])
def test_dedup_an_event_dropped_after_the_window_expired_is_a_violation(deployment, at):
    """The key is live while now < checked_at + window: at or after the expiry, a drop is wrong."""
    outcome(deployment, RUNNER, "dd", "e1", 0.0, checked_at=0.0)
    outcome(deployment, RUNNER, "dd", "e2", at, dropped="duplicate", checked_at=at)
    [violation] = dedup_check(deployment)
    assert violation["problem"] == "dropped, not a duplicate inside the window"


def test_dedup_an_event_passing_after_the_window_expired_is_ok(deployment):
    """At the expiry the key is gone: e2 passes and records it again (e3 inside e2's window is dropped)."""
    outcome(deployment, RUNNER, "dd", "e1", 0.0, checked_at=0.0)
    outcome(deployment, RUNNER, "dd", "e2", WINDOW, checked_at=WINDOW)
    outcome(deployment, RUNNER, "dd", "e3", 15.0, dropped="duplicate", checked_at=15.0)
    assert dedup_check(deployment) == []


def test_dedup_a_replay_of_the_same_event_passing_again_is_ok(deployment):
    """The event that recorded the key is not its own duplicate (its replay after a crash), before or
    after its window ended; and its replay does not extend the window."""
    outcome(deployment, RUNNER, "dd", "e1", 0.0, checked_at=0.0)
    outcome(deployment, RUNNER, "dd", "e1", 3.0, checked_at=3.0)
    outcome(deployment, RUNNER, "dd", "e1", 12.0, checked_at=12.0)
    outcome(deployment, RUNNER, "dd", "e2", 12.5, checked_at=12.5)
    assert dedup_check(deployment) == []


def test_dedup_a_replay_dropped_as_its_own_duplicate_is_a_violation(deployment):
    """A key recorded by e1 does not make e1 a duplicate: its replay dropped is wrong."""
    outcome(deployment, RUNNER, "dd", "e1", 0.0, checked_at=0.0)
    outcome(deployment, RUNNER, "dd", "e1", 3.0, dropped="duplicate", checked_at=3.0)
    [violation] = dedup_check(deployment)
    assert violation["problem"] == "dropped, not a duplicate inside the window"


def test_dedup_a_dropped_duplicate_does_not_extend_the_window(deployment):
    """The window counts from the recording event's check: e2 dropped at 5 does not keep the key live
    until 15, so e3 at 12 must pass (and dropping it is a violation)."""
    outcome(deployment, RUNNER, "dd", "e1", 0.0, checked_at=0.0)
    outcome(deployment, RUNNER, "dd", "e2", 5.0, dropped="duplicate", checked_at=5.0)
    outcome(deployment, RUNNER, "dd", "e3", 12.0, checked_at=12.0)
    assert dedup_check(deployment) == []
    log_of(deployment, RUNNER).outcomes[-1] = Outcome(RUNNER, "dd", "e3", None, True, "duplicate", 12.0, 12.0, 1)
    assert [v["event_id"] for v in dedup_check(deployment)] == ["e3"]


def test_dedup_different_keys_and_routes_do_not_interact(deployment):
    """Keys are per route: another key, or the same key on another dedup route, is not a duplicate."""
    facts = {**DEDUP_FACTS, **facts_of("dd2", "a", dedup_window=WINDOW)}
    outcome(deployment, RUNNER, "dd", "e1", 0.0, checked_at=0.0)
    outcome(deployment, RUNNER, "dd", "e2", 1.0, checked_at=1.0)
    outcome(deployment, RUNNER, "dd2", "e1", 2.0, checked_at=2.0)
    assert dedup_check(deployment, facts, {"e1": "k", "e2": "j"}) == []


def test_dedup_a_zero_window_never_expires(deployment):
    """unique-message-timeout 0 (or none) keeps a key forever: a drop much later is right, a pass wrong."""
    facts = facts_of("dd", "a", dedup_window=0.0)
    outcome(deployment, RUNNER, "dd", "e1", 0.0, checked_at=0.0)
    outcome(deployment, RUNNER, "dd", "e2", 1000.0, dropped="duplicate", checked_at=1000.0)
    assert dedup_check(deployment, facts) == []
    outcome(deployment, RUNNER, "dd", "e3", 2000.0, checked_at=2000.0)
    assert [v["event_id"] for v in dedup_check(deployment, facts)] == ["e3"]


# -- aggregated_once ------------------------------------------------------------------------------------------

AGG_FACTS = facts_of("agg", "mail", aggregates=True)


def queue(deployment: Deployment, *numbers: int, sent_with: int | None = None) -> None:
    """Events e<n> queued for the aggregate; `sent_with` the one whose arrival sent the batch."""
    for n in numbers:
        dropped = None if n == sent_with else "aggregating"
        outcome(deployment, RUNNER, "agg", f"e{n}", float(n), dropped=dropped, n=n)


def test_aggregated_each_queued_item_in_exactly_one_successful_aggregate_is_ok(deployment):
    """Each queued event is in one ok aggregate (a failed attempt of a batch does not count)."""
    queue(deployment, 1, 2, 3, 4, sent_with=4)
    calls = [call("mail", "agg", "e2", 2.0, 2.5, items=(1, 2)),
             call("mail", "agg", "e4", 4.0, 4.5, items=(3, 4), result="failed"),
             call("mail", "agg", "e4", 5.0, 5.5, items=(3, 4), attempt=2)]
    verdict, _, _ = check(deployment, AGG_FACTS, calls)
    assert_clean(verdict)


def test_aggregated_an_item_in_two_aggregates_without_a_crash_is_a_violation(deployment):
    """Item 2 sent in two ok aggregates, the node up all along: sent twice."""
    queue(deployment, 1, 2, 3)
    calls = [call("mail", "agg", "e2", 2.0, 2.5, items=(1, 2)), call("mail", "agg", "e3", 3.0, 3.5, items=(2, 3))]
    verdict, _, _ = check(deployment, AGG_FACTS, calls)
    [violation] = problems(verdict, AGGREGATE)
    assert violation["problem"] == "sent in two aggregates" and violation["n"] == 2
    assert verdict.redone_after_crash == 0


def test_aggregated_an_item_sent_again_after_a_crash_between_is_redone(deployment):
    """The items of an aggregate whose end was not recorded go back to the queue at the restart: sent
    again after a crash between the two sends is allowed, and counted as redone."""
    queue(deployment, 1, 2, 3)
    deployment.slots[RUNNER].crashes = [(2.7, 2.9)]
    calls = [call("mail", "agg", "e2", 2.0, 2.5, items=(1, 2)), call("mail", "agg", "e3", 3.0, 3.5, items=(1, 2, 3))]
    verdict, _, _ = check(deployment, AGG_FACTS, calls)
    assert_clean(verdict)
    assert verdict.redone_after_crash == 2


def test_aggregated_an_item_queued_and_never_sent_is_a_violation(deployment):
    """Item 3 was queued; no ok aggregate carries it (only a failed one): never sent."""
    queue(deployment, 1, 2, 3)
    calls = [call("mail", "agg", "e2", 2.0, 2.5, items=(1, 2)),
             call("mail", "agg", "e3", 3.0, 3.5, items=(3,), result="failed")]
    verdict, _, _ = check(deployment, AGG_FACTS, calls)
    [violation] = problems(verdict, AGGREGATE)
    assert violation["problem"] == "queued, never sent"
    assert (violation["n"], violation["event_id"], violation["action"]) == (3, "e3", "mail")


def test_aggregated_events_not_queued_need_not_be_sent(deployment):
    """Unmatched, or dropped before the queue (a duplicate): nothing to send."""
    queue(deployment, 1, sent_with=1)
    outcome(deployment, RUNNER, "agg", "e2", 2.0, matched=False, n=2)
    outcome(deployment, RUNNER, "agg", "e3", 3.0, dropped="duplicate", n=3)
    calls = [call("mail", "agg", "e1", 1.0, 1.5, items=(1,))]
    verdict, _, _ = check(deployment, AGG_FACTS, calls)
    assert_clean(verdict)
