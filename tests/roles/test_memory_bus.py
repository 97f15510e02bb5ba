"""Controller and runners in one process over the in-memory bus, on Trio's virtual clock.

Real nodes (their pipelines, ledgers, outboxes, bootstrap, heartbeats and registry) with the
simulation's deterministic parts (`tests/roles/sim_helpers.py`): actions record what they were asked
to do, so "ran where it belongs, exactly once" is read from the recordings, and the daemon's own
intervals (5 s heartbeats, stale after 3, gone after 12) cost no real time.

`seed_config` and `tracee` are also used by the NATS tests (`tests/bus`), with real HTTP sinks.
"""

import json

import trio

from postee.bus.protocol import EVENTS_KIND, LEGACY_SUBJECTS
from postee.roles.runners import GONE_AFTER_BEATS, STALE_AFTER_BEATS
from postee.roles.upstream import HEARTBEAT_INTERVAL
from postee.sim.recording import Conduct
from tests.daemon.helpers import event_bytes, pipeline_settled
from tests.roles.helpers import acknowledged
from tests.roles.sim_helpers import (
    UNUSED_URL,
    events_json,
    open_deployment,
    runners_by_name,
    settle,
    submit,
)

SCRIPT_SECONDS = 1.0
"""How long the runner's script takes (virtual seconds): long enough to see what waits for it."""


def seed_config(controller_url: str = UNUSED_URL, runner_url: str = UNUSED_URL) -> str:
    """The seed document's example, its webhook.site URLs pointed at `controller_url` and `runner_url`."""
    return f"""
name: Postee Controller Runner Demo
routes:
- name: controller-only-route
  input: contains(input.image, "alpine")
  actions: [my-http-post-from-controller]
  template: raw-json
- name: runner-only-route
  input: contains(input.SigMetadata.ID, "TRC-1")
  serialize-actions: true
  actions: [my-exec-from-runner, my-http-post-from-runner]
  template: raw-json
- name: controller-runner-route
  input: contains(input.SigMetadata.ID, "TRC-2")
  actions: [my-exec-from-runner, my-http-post-from-runner, my-http-post-from-controller]
  template: raw-json
templates:
- name: raw-json
  rego-package: postee.rawmessage.json
actions:
- name: stdout
  type: stdout
  enable: true
- name: my-http-post-from-controller
  type: http
  enable: true
  url: "{controller_url}/controller"
  method: POST
  headers:
    "Foo": [ "bar" ]
  timeout: 10s
  body-content: |
    This is an example of a inline body
    Input Image: event.input.image
- name: my-exec-from-runner
  runs-on: "postee-runner-1"
  type: exec
  enable: true
  env: ["MY_ENV_VAR=foo_bar_baz", "MY_KEY=secret"]
  exec-script: |
    #!/bin/sh
    echo $POSTEE_EVENT
    echo "this is hello from postee"
- name: my-http-post-from-runner
  runs-on: "postee-runner-1"
  type: http
  enable: true
  url: "{runner_url}/runner"
  method: POST
  body-content: |
    This is an another example of a inline body
    Event ID: event.input.SigMetadata.ID
"""


def tracee(sig_id: str, n: int = 0) -> bytes:
    """The tracee fixture event with signature `sig_id`, carrying its number `n`."""
    event = json.loads(event_bytes("tracee-event.json"))
    event["SigMetadata"]["ID"] = sig_id
    event["n"] = n
    return json.dumps(event).encode()


def slow_script(node: str, action: str, event_id: str, attempt: int) -> Conduct:
    """The runner's script takes `SCRIPT_SECONDS`; every other action answers at once."""
    return Conduct(delay=SCRIPT_SECONDS if action == "my-exec-from-runner" else 0.0)


async def test_seed_example_runs_each_action_where_it_belongs_exactly_once(autojump_clock, tmp_path):
    async with open_deployment(tmp_path, plan=slow_script) as sim, \
            sim.controller(seed_config()) as controller, sim.runner("postee-runner-1") as runner:
        # the runner got only its slice
        assert set(runner.node.pipeline.actions) == {"my-exec-from-runner", "my-http-post-from-runner"}
        assert set(runner.node.pipeline.routes) == {"runner-only-route", "controller-runner-route"}
        # `stdout` is enabled but no route lists it: not built (issue #12: unused entries are not loaded)
        assert set(controller.node.pipeline.actions) == {"my-http-post-from-controller"}

        runner_only = await submit(runner, tracee("TRC-1"))
        mixed = await submit(runner, tracee("TRC-2"))
        at_controller = await submit(controller, b'{"image": "alpine:3.19"}')  # controller-only
        via_runner = await submit(runner, b'{"image": "alpine:3.20"}')  # controller-only, via the runner

        # quiet: 3 events and 4 executions acknowledged upstream, both pipelines done with every event
        await settle(lambda: acknowledged(runner, 3, 4) and pipeline_settled(runner.node, 3)
                     and pipeline_settled(controller.node, 4)
                     and controller.registry.runners["postee-runner-1"].executions == 4)
        ran = sorted((c.node, c.action, c.event_id) for c in sim.recordings.calls)
        assert ran == sorted([
            ("postee-runner-1", "my-exec-from-runner", runner_only.id),
            ("postee-runner-1", "my-http-post-from-runner", runner_only.id),
            ("postee-runner-1", "my-exec-from-runner", mixed.id),
            ("postee-runner-1", "my-http-post-from-runner", mixed.id),
            ("controller", "my-http-post-from-controller", mixed.id),
            ("controller", "my-http-post-from-controller", at_controller.id),
            ("controller", "my-http-post-from-controller", via_runner.id),
        ])
        assert all(c.result == "ok" and c.attempt == 1 for c in sim.recordings.calls)

        assert sorted(e["source"] for e in events_json(controller.node)) == ["postee-runner-1"] * 3 + ["webhook"]
        executions = json.loads(controller.registry.executions_json())
        assert sorted((e["route"], e["action"], e["ok"], e["event_id"]) for e in executions) == sorted([
            ("controller-runner-route", "my-exec-from-runner", True, mixed.id),
            ("controller-runner-route", "my-http-post-from-runner", True, mixed.id),
            ("runner-only-route", "my-exec-from-runner", True, runner_only.id),
            ("runner-only-route", "my-http-post-from-runner", True, runner_only.id),
        ])
        # serialize-actions on the runner-only route: the script finished before the HTTP post began,
        # as the runner saw it and as it reported it; on the mixed route they overlapped
        script, post = (sim.calls(route="runner-only-route", action=a)[0]
                        for a in ("my-exec-from-runner", "my-http-post-from-runner"))
        assert post.started >= script.ended == script.started + SCRIPT_SECONDS
        serial = {e["action"]: e for e in executions if e["route"] == "runner-only-route"}
        reported_script, reported_post = serial["my-exec-from-runner"], serial["my-http-post-from-runner"]
        assert reported_script["started_at"] + reported_script["duration"] <= reported_post["started_at"] + 0.001
        script, post = (sim.calls(route="controller-runner-route", node="postee-runner-1", action=a)[0]
                        for a in ("my-exec-from-runner", "my-http-post-from-runner"))
        assert post.ended < script.ended
        metrics = controller.node.metrics.render().decode()
        assert 'postee_runner_events_total{runner="postee-runner-1"} 3.0' in metrics


async def test_plain_publishes_from_a_postee_runner_are_accepted(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, sim.controller(seed_config()) as controller:
        postee_runner = sim.bus.connect("old-postee-runner")
        # no headers, no reply subject: what Postee's runner sends
        await postee_runner.publish(LEGACY_SUBJECTS[EVENTS_KIND], b'{"image": "alpine:3.18"}')
        await settle(lambda: len(sim.recordings.calls) == 1 and pipeline_settled(controller.node, 1))
        (event,) = events_json(controller.node)
        assert event["source"] == "postee-runner" and event["event"]["image"] == "alpine:3.18"
        (call,) = sim.recordings.calls
        assert (call.node, call.action, call.event_id) == ("controller", "my-http-post-from-controller", event["id"])


async def test_runner_started_first_bootstraps_once_the_controller_is_up(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, trio.open_nursery() as nursery:
        started = trio.Event()

        async def runner_side():
            async with sim.runner("postee-runner-1") as runner:
                assert set(runner.node.pipeline.routes) == {"runner-only-route", "controller-runner-route"}
                started.set()

        nursery.start_soon(runner_side)
        # the runner asks for its configuration again and again (backoff 0.5, 1, 2, 4 s between); each
        # unanswered request is one delivery attempt on the bus, where nothing else publishes yet
        await settle(lambda: sim.bus.published >= 5)
        assert not started.is_set()
        async with sim.controller(seed_config()) as controller:
            with trio.fail_after(60):
                await started.wait()
            assert controller.registry.runners["postee-runner-1"].config_fetches >= 1


async def test_outbox_keeps_events_while_the_controller_is_cut_off(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, \
            sim.controller(seed_config()) as controller, sim.runner("postee-runner-1") as runner:
        sim.bus.disconnect("controller")
        ids = [(await submit(runner, tracee("TRC-2", n))).id for n in range(20)]
        # the runner's own actions keep running during the outage
        await settle(lambda: len(sim.calls(node="postee-runner-1")) == 40)
        # every event and execution report is in the outbox, and the runner has since tried twice
        # more to reach the controller
        upstream = runner.upstream
        await settle(lambda: upstream.events_reported == 20 and upstream.executions_reported == 40)
        attempts = sim.bus.published
        await settle(lambda: sim.bus.published >= attempts + 2)
        assert sim.calls(node="controller") == []
        assert await runner.node.store.outbox_count() >= 20
        sim.bus.connect("controller")
        await settle(lambda: len(sim.calls(node="controller")) == 20
                     and controller.registry.runners["postee-runner-1"].executions == 40)
        await settle(lambda: acknowledged(runner, 20, 40) and pipeline_settled(controller.node, 20))
        assert await runner.node.store.outbox_count() == 0
        assert sorted(c.event_id for c in sim.calls(node="controller")) == sorted(ids)  # once each
        # in order: the outbox sends one message at a time, oldest first
        assert [e["event"]["n"] for e in events_json(controller.node)] == list(range(20))
        assert [e["id"] for e in events_json(controller.node)] == ids


async def test_heartbeats_make_runners_up_then_stale_then_gone(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, sim.controller(seed_config()) as controller:
        registry = controller.registry
        async with sim.runner("postee-runner-1"):
            await settle(lambda: "postee-runner-1" in registry.runners
                         and registry.runners["postee-runner-1"].heartbeats >= 2)
            entry = runners_by_name(controller)["postee-runner-1"]
            assert entry["state"] == "up" and entry["config_version"]
        # the runner is gone: its last heartbeat was the last word; on virtual time the states change
        # exactly STALE_AFTER_BEATS and GONE_AFTER_BEATS intervals after it
        last_seen = registry.runners["postee-runner-1"].last_seen
        for beats, state_before, state_after in ((STALE_AFTER_BEATS, "up", "stale"),
                                                 (GONE_AFTER_BEATS, "stale", "gone")):
            await trio.sleep_until(last_seen + beats * HEARTBEAT_INTERVAL - 0.1)
            assert runners_by_name(controller)["postee-runner-1"]["state"] == state_before
            await trio.sleep_until(last_seen + beats * HEARTBEAT_INTERVAL + 0.1)
            assert runners_by_name(controller)["postee-runner-1"]["state"] == state_after


async def test_controller_reload_makes_runners_fetch_their_new_slice(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, \
            sim.controller(seed_config()) as controller, sim.runner("postee-runner-1") as runner:
        assert "runner-only-route" in runner.node.pipeline.routes
        sim.controller_config.write_text(seed_config().replace("- name: runner-only-route",
                                                               "- name: renamed-runner-route"))
        ok, message = await controller.node.reload()  # GET /reload
        assert ok, message
        await settle(lambda: "renamed-runner-route" in runner.node.pipeline.routes)
        assert "runner-only-route" not in runner.node.pipeline.routes


TWO_RUNNERS_CONFIG = f"""
routes:
  - name: findings
    input: contains(input.SigMetadata.ID, "TRC-")
    actions: [local-a, local-b, central]
    template: raw-json
templates:
  - name: raw-json
    rego-package: postee.rawmessage.json
actions:
  - name: local-a
    type: http
    enable: true
    runs-on: runner-a
    url: {UNUSED_URL}/a
  - name: local-b
    type: http
    enable: true
    runs-on: runner-b
    url: {UNUSED_URL}/b
  - name: central
    type: http
    enable: true
    url: {UNUSED_URL}/central
"""


async def test_two_runners_each_get_their_own_slice_and_report_upstream(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, sim.controller(TWO_RUNNERS_CONFIG) as controller, \
            sim.runner("runner-a") as runner_a, sim.runner("runner-b") as runner_b:
        assert set(runner_a.node.pipeline.actions) == {"local-a"}
        assert set(runner_b.node.pipeline.actions) == {"local-b"}
        assert set(controller.node.pipeline.actions) == {"central"}
        to_a = await submit(runner_a, tracee("TRC-1", 1))
        to_b = await submit(runner_b, tracee("TRC-1", 2))
        await settle(lambda: acknowledged(runner_a, 1, 1) and acknowledged(runner_b, 1, 1)
                     and pipeline_settled(runner_a.node, 1) and pipeline_settled(runner_b.node, 1)
                     and pipeline_settled(controller.node, 2))
        assert sorted((c.node, c.action, c.event_id) for c in sim.recordings.calls) == sorted([
            ("runner-a", "local-a", to_a.id), ("runner-b", "local-b", to_b.id),
            ("controller", "central", to_a.id), ("controller", "central", to_b.id),
        ])
        await settle(lambda: {name: r["state"] for name, r in runners_by_name(controller).items()}
                     == {"runner-a": "up", "runner-b": "up"})
        assert sorted(e["source"] for e in events_json(controller.node)) == ["runner-a", "runner-b"]
