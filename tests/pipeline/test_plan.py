"""A route's steps across sides (issue #16): which run where, what is left after a step, and a step
found again after a reload moved it."""

from __future__ import annotations

from postee.actions.base import ActionSpec
from postee.config.model import Plugins, RouteConfig
from postee.pipeline.plan import (
    CONTROLLER_SIDE,
    Handover,
    Step,
    allowed_sides,
    continuation_id,
    crosses_sides,
    plan_of,
)


def spec(name: str, runs_on: str = "") -> ActionSpec:
    return ActionSpec(name=name, type="stdout", enable=True, runs_on=runs_on)


ACTIONS = {a.name: a for a in (spec("ship-1", "r1"), spec("audit"), spec("confirm-1", "r1"), spec("ship-2", "r2"))}


def route(actions, **options) -> RouteConfig:
    return RouteConfig(name="mixed", actions=tuple(actions), **options)


def test_a_plan_exists_only_for_actions_on_several_sides_and_serializes_only_when_asked():
    assert plan_of(route(["audit"]), ACTIONS) is None
    assert plan_of(route(["ship-1", "confirm-1"]), ACTIONS) is None
    plain = plan_of(route(["ship-1", "audit"]), ACTIONS)
    assert plain is not None and not plain.serial and plain.runner_steps() == (0,)
    serial = plan_of(route(["ship-1", "audit", "confirm-1"], serialize_actions=True), ACTIONS)
    assert serial is not None and serial.serial and serial.sides == {"r1", CONTROLLER_SIDE}
    aggregated = route(["ship-1", "audit"], serialize_actions=True, plugins=Plugins(aggregate_message_number=3))
    assert not crosses_sides(aggregated, [Step("ship-1", "r1"), Step("audit", "")])


def test_a_runners_plan_comes_from_its_slice():
    sliced = route(["ship-1"], serialize_actions=True, plan=(("ship-1", "r1"), ("audit", ""), ("confirm-1", "r1")))
    plan = plan_of(sliced, {"ship-1": ACTIONS["ship-1"]})
    assert plan is not None and [s.action for s in plan.steps] == ["ship-1", "audit", "confirm-1"]


def test_blocks_pass_over_other_runners_steps_unless_the_controller_dispatches():
    plan = plan_of(route(["ship-1", "ship-2", "audit", "confirm-1"], serialize_actions=True), ACTIONS)
    assert plan is not None
    at_r1 = allowed_sides("r1", all_runners=False)
    assert plan.block(0, "r1", at_r1) == ((0,), 2)  # ship-2 is runner r2's: not for an event of r1
    assert plan.block(2, CONTROLLER_SIDE, at_r1) == ((2,), 3)
    assert plan.block(3, "r1", at_r1) == ((3,), None)
    assert plan.previous(2, at_r1) == 0 and plan.previous(0, at_r1) is None
    assert allowed_sides(CONTROLLER_SIDE, all_runners=False) == {CONTROLLER_SIDE}
    everywhere = allowed_sides(CONTROLLER_SIDE, all_runners=True)
    assert everywhere is None and plan.block(0, CONTROLLER_SIDE, everywhere) == ((), 0)
    assert plan.block(0, "r1", everywhere) == ((0,), 1)


def test_a_step_moved_by_a_reload_is_found_by_its_action():
    plan = plan_of(route(["ship-1", "audit", "confirm-1"], serialize_actions=True), ACTIONS)
    assert plan is not None
    assert plan.resolve(1, "audit") == 1
    reloaded = plan_of(route(["ship-1", "ship-2", "audit", "confirm-1"], serialize_actions=True), ACTIONS)
    assert reloaded is not None and reloaded.resolve(1, "audit") == 2
    assert reloaded.resolve(1, "gone") is None and reloaded.resolve(9, None) is None


def test_continuation_ids_are_per_route_and_step_with_the_origin_first():
    first = continuation_id("e1", "route a", 1)
    assert first.startswith("e1~") and first.endswith("~1")
    assert len({first, continuation_id("e1", "route b", 1), continuation_id("e1", "route a", 2)}) == 3
    handover = Handover(origin_id="e1", route="route a", step=1, side="", only=False, text="{}", action="audit")
    assert handover.id == first and handover.outcome_key == "handover:1"
