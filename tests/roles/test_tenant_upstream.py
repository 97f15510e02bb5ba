"""Every event a runner receives is reported upstream, also those posted to `POST /tenant/{route}`.

The seed promises that the controller sees all events received by runners. A tenant event names one
route, so the controller runs that route only (its own actions of a mixed route), not every route:
an event posted to a runner's runner-only route must not fire a controller-only route that happens
to match it too.
"""

import json

from actors.testing import InMemoryBus
from tests.daemon.helpers import admin_get
from tests.helpers.http_sink import open_http_sink
from tests.roles.helpers import acknowledged, eventually, running_controller, running_runner
from tests.roles.test_memory_bus import seed_config, tracee


async def test_tenant_events_on_a_runner_are_reported_upstream(tmp_path):
    bus = InMemoryBus()
    async with open_http_sink() as controller_sink, open_http_sink() as runner_sink:
        cfg = seed_config(controller_sink.url, runner_sink.url)
        async with running_controller(tmp_path, cfg, bus.connect("controller")) as (controller, c_client), \
                running_runner(tmp_path, "postee-runner-1", bus.connect("postee-runner-1")) as (runner, r_client):
            mixed = await r_client.post("/tenant/controller-runner-route", content=tracee("TRC-2", 1))
            assert mixed.status_code == 200
            assert set(mixed.json()["actions"]) == {"my-exec-from-runner", "my-http-post-from-runner"}
            # matches the controller-only route's rule too (an alpine image): that route must not run
            alpine = json.loads(tracee("TRC-1", 2)) | {"image": "alpine:3.19"}
            runner_only = await r_client.post("/tenant/runner-only-route", content=json.dumps(alpine).encode())
            assert runner_only.status_code == 200
            assert all(a["ok"] for a in runner_only.json()["actions"].values())

            # the 4 execution reports acknowledged: the outbox keeps order, so each event reported before
            # its route ran has been acknowledged by then too
            await eventually(lambda: acknowledged(runner, 0, 4))
            assert runner.upstream.events_reported == 2
            assert controller.registry.runners["postee-runner-1"].events == 2
            # quiet on the controller: each event went through its one route, every action is done
            routes = controller.node.pipeline.routes
            await eventually(lambda: routes["controller-runner-route"].lane.handled == 1
                             and routes["runner-only-route"].lane.handled == 1
                             and all(a.sent_ok + a.sent_failed == a.mailbox.stats().sent
                                     for a in controller.node.pipeline.actions.values()))
            assert controller.node.pipeline.router.routed == 2
            assert routes["controller-only-route"].lane.handled == 0
            events = (await admin_get(c_client, controller.node, "/events")).json()
            assert [(e["source"], e["event"]["n"]) for e in events] == [("postee-runner-1", 1), ("postee-runner-1", 2)]
            # the mixed route's controller action ran once, for event 1; nothing else ran on the controller
            (request,) = controller_sink.requests
            assert "Input Image: \n" in request.text or request.text.rstrip().endswith("Input Image:")
            assert len(runner_sink.requests) == 2
