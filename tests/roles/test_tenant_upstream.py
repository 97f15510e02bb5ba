"""Every event a runner receives is reported upstream, also those posted to `POST /tenant/{route}`.

The seed promises that the controller sees all events received by runners. A tenant event names one
route, so the controller runs that route only (its own actions of a mixed route), not every route:
an event posted to a runner's runner-only route must not fire a controller-only route that happens
to match it too.

On Trio's virtual clock (`tests/roles/sim_helpers.py`): the tenant run is `Node.run_route`, what the
endpoint calls for a caller without the API key.
"""

import json

from postee.pipeline.events import parse_event
from tests.roles.helpers import acknowledged
from tests.roles.sim_helpers import events_json, open_deployment, run_tenant, settle
from tests.roles.test_memory_bus import seed_config, tracee


async def test_tenant_events_on_a_runner_are_reported_upstream(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, \
            sim.controller(seed_config()) as controller, sim.runner("postee-runner-1") as runner:
        mixed = parse_event(tracee("TRC-2", 1))
        answer = await run_tenant(runner.node, "controller-runner-route", mixed)
        assert set(answer["actions"]) == {"my-exec-from-runner", "my-http-post-from-runner"}
        assert all(a["ok"] for a in answer["actions"].values())
        # matches the controller-only route's rule too (an alpine image): that route must not run
        runner_only = parse_event(json.dumps(json.loads(tracee("TRC-1", 2)) | {"image": "alpine:3.19"}))
        answer = await run_tenant(runner.node, "runner-only-route", runner_only)
        assert set(answer["actions"]) == {"my-exec-from-runner", "my-http-post-from-runner"}
        assert all(a["ok"] for a in answer["actions"].values())

        # the 4 execution reports acknowledged: the outbox keeps order, so each event reported before
        # its route ran has been acknowledged by then too
        await settle(lambda: acknowledged(runner, 0, 4))
        assert runner.upstream.events_reported == 2
        assert controller.registry.runners["postee-runner-1"].events == 2
        # quiet on the controller: each event went through its one route, every action is done
        routes = controller.node.pipeline.routes
        await settle(lambda: routes["controller-runner-route"].lane.handled == 1
                     and routes["runner-only-route"].lane.handled == 1
                     and all(a.sent_ok + a.sent_failed == a.mailbox.stats().sent
                             for a in controller.node.pipeline.actions.values()))
        assert controller.node.pipeline.router.routed == 2
        assert routes["controller-only-route"].lane.handled == 0
        events = events_json(controller.node)
        assert [(e["source"], e["id"], e["event"]["n"]) for e in events] == [
            ("postee-runner-1", mixed.id, 1), ("postee-runner-1", runner_only.id, 2)]
        # the mixed route's controller action ran once, for event 1; nothing else ran on the controller
        assert [(c.action, c.event_id) for c in sim.calls(node="controller")] == [
            ("my-http-post-from-controller", mixed.id)]
        assert sorted((c.route, c.action, c.event_id) for c in sim.calls(node="postee-runner-1")) == sorted([
            ("controller-runner-route", "my-exec-from-runner", mixed.id),
            ("controller-runner-route", "my-http-post-from-runner", mixed.id),
            ("runner-only-route", "my-exec-from-runner", runner_only.id),
            ("runner-only-route", "my-http-post-from-runner", runner_only.id),
        ])
