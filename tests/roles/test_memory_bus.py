"""Controller and two runners in one process over the in-memory bus.

Real nodes (HTTP on port 0, SQLite, Rego in threads) and an in-memory bus in place of NATS. These run
on the real clock with short intervals: with real threads and sockets in play, an autojumping clock
moves virtual time whenever the machine is slow, which made timeouts fire at random. The registry's
timing rules are tested under the autojump clock on their own (test_runners.py).
"""

import json

import trio

from actors.testing import InMemoryBus
from tests.daemon.helpers import admin_get, event_bytes, pipeline_settled
from tests.helpers.http_sink import open_http_sink
from tests.roles.helpers import acknowledged, eventually, running_controller, running_runner


def seed_config(controller_url: str, runner_url: str) -> str:
    """The seed document's example, its webhook.site URLs pointed at local sinks."""
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
    event = json.loads(event_bytes("tracee-event.json"))
    event["SigMetadata"]["ID"] = sig_id
    event["n"] = n
    return json.dumps(event).encode()


async def test_seed_example_runs_each_action_where_it_belongs_exactly_once(tmp_path):
    bus = InMemoryBus()
    async with open_http_sink() as controller_sink, open_http_sink() as runner_sink:
        cfg = seed_config(controller_sink.url, runner_sink.url)
        async with running_controller(tmp_path, cfg, bus.connect("controller")) as (controller, c_client), \
                running_runner(tmp_path, "postee-runner-1", bus.connect("postee-runner-1")) as (runner, r_client):
            # the runner got only its slice
            assert set(runner.node.pipeline.actions) == {"my-exec-from-runner", "my-http-post-from-runner"}
            assert set(runner.node.pipeline.routes) == {"runner-only-route", "controller-runner-route"}
            # `stdout` is enabled but no route lists it: not built (issue #12: unused entries are not loaded)
            assert set(controller.node.pipeline.actions) == {"my-http-post-from-controller"}

            await r_client.post("/", content=tracee("TRC-1"))     # runner-only
            await r_client.post("/", content=tracee("TRC-2"))     # mixed
            await c_client.post("/", content=b'{"image": "alpine:3.19"}')  # controller-only, at the controller
            await r_client.post("/", content=b'{"image": "alpine:3.20"}')  # controller-only, via the runner

            await eventually(lambda: len(runner_sink.requests) == 2 and len(controller_sink.requests) == 3)
            await eventually(lambda: controller.registry.runners["postee-runner-1"].executions == 4)
            # quiet: 3 events and 4 executions acknowledged upstream, both pipelines done with every event
            await eventually(lambda: acknowledged(runner, 3, 4) and pipeline_settled(runner.node, 3)
                             and pipeline_settled(controller.node, 4))
            assert len(runner_sink.requests) == 2 and len(controller_sink.requests) == 3
            runner_bodies = sorted(r.text for r in runner_sink.requests)
            assert "Event ID: TRC-1" in runner_bodies[0] and "Event ID: TRC-2" in runner_bodies[1]
            controller_bodies = sorted(r.text.split("Input Image: ")[1].strip() for r in controller_sink.requests)
            assert controller_bodies == ["", "alpine:3.19", "alpine:3.20"]  # "" = the mixed TRC-2 event

            events = (await admin_get(c_client, controller.node, "/events")).json()
            assert sorted(e["source"] for e in events) == ["postee-runner-1"] * 3 + ["webhook"]
            executions = (await admin_get(c_client, controller.node, "/executions")).json()
            assert sorted((e["route"], e["action"], e["ok"]) for e in executions) == [
                ("controller-runner-route", "my-exec-from-runner", True),
                ("controller-runner-route", "my-http-post-from-runner", True),
                ("runner-only-route", "my-exec-from-runner", True),
                ("runner-only-route", "my-http-post-from-runner", True),
            ]
            exec_output = next(e["output"] for e in executions if e["action"] == "my-exec-from-runner")
            assert "this is hello from postee" in exec_output
            # serialize-actions on the runner-only route: the script finished before the HTTP post began
            serial = {e["action"]: e for e in executions if e["route"] == "runner-only-route"}
            script, post = serial["my-exec-from-runner"], serial["my-http-post-from-runner"]
            assert script["started_at"] + script["duration"] <= post["started_at"] + 0.001
            metrics = (await c_client.get("/metrics")).text
            assert 'postee_runner_events_total{runner="postee-runner-1"} 3.0' in metrics


async def test_plain_publishes_from_a_postee_runner_are_accepted(tmp_path):
    bus = InMemoryBus()
    async with open_http_sink() as controller_sink:
        cfg = seed_config(controller_sink.url, "http://127.0.0.1:9")
        async with running_controller(tmp_path, cfg, bus.connect("controller")) as (controller, c_client):
            postee_runner = bus.connect("old-postee-runner")
            await postee_runner.publish("postee.events", b'{"image": "alpine:3.18"}')  # no headers, no reply
            (request,) = await controller_sink.wait_for(1)
            assert "Input Image: alpine:3.18" in request.text
            (event,) = (await admin_get(c_client, controller.node, "/events")).json()
            assert event["source"] == "postee-runner"


async def test_runner_started_first_bootstraps_once_the_controller_is_up(tmp_path):
    bus = InMemoryBus()
    cfg = seed_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    async with trio.open_nursery() as nursery:
        started = trio.Event()

        async def runner_side():
            async with running_runner(tmp_path, "postee-runner-1", bus.connect("postee-runner-1"),
                                      task_status_timeout=300) as (runner, _):
                assert set(runner.node.pipeline.routes) == {"runner-only-route", "controller-runner-route"}
                started.set()

        nursery.start_soon(runner_side)
        # the runner asks for its configuration again and again (backoff 0.05, 0.1, 0.2, 0.4 s between);
        # each unanswered request is one delivery attempt on the bus, where nothing else publishes yet
        await eventually(lambda: bus.published >= 5, timeout=60)
        assert not started.is_set()
        async with running_controller(tmp_path, cfg, bus.connect("controller")) as (controller, _):
            with trio.fail_after(60):
                await started.wait()
            assert controller.registry.runners["postee-runner-1"].config_fetches >= 1


async def test_outbox_keeps_events_while_the_controller_is_cut_off(tmp_path):
    bus = InMemoryBus()
    async with open_http_sink() as controller_sink, open_http_sink() as runner_sink:
        cfg = seed_config(controller_sink.url, runner_sink.url)
        async with running_controller(tmp_path, cfg, bus.connect("controller")) as (controller, c_client), \
                running_runner(tmp_path, "postee-runner-1", bus.connect("postee-runner-1")) as (runner, r_client):
            bus.disconnect("controller")
            for n in range(20):
                assert (await r_client.post("/", content=tracee("TRC-2", n))).status_code == 200
            # the runner's own actions keep running during the outage
            await eventually(lambda: len(runner_sink.requests) == 20)
            # every event and execution report is in the outbox, and the runner has since tried twice
            # more to reach the controller (its heartbeats come only every 5 s: at most one of the two)
            upstream = runner.upstream
            await eventually(lambda: upstream.events_reported == 20 and upstream.executions_reported == 40)
            attempts = bus.published
            await eventually(lambda: bus.published >= attempts + 2)
            assert controller_sink.requests == []
            assert await runner.node.store.outbox_count() >= 20
            bus.connect("controller")
            await eventually(lambda: len(controller_sink.requests) == 20, timeout=120)
            await eventually(lambda: controller.registry.runners["postee-runner-1"].executions == 40, timeout=120)
            with trio.fail_after(30):  # the last acknowledgement reaches the runner's store after the registry
                while await runner.node.store.outbox_count():
                    await trio.sleep(0.02)
            numbers = [json.loads(e["event"]["n"]) if isinstance(e["event"]["n"], str) else e["event"]["n"]
                       for e in (await admin_get(c_client, controller.node, "/events")).json()]
            assert numbers == list(range(20))  # in order, once each


async def test_heartbeats_make_runners_up_then_stale_then_gone(tmp_path):
    bus = InMemoryBus()
    cfg = seed_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    async with running_controller(tmp_path, cfg, bus.connect("controller"), heartbeat_interval=0.2) as (
        controller, c_client
    ):
        async with running_runner(tmp_path, "postee-runner-1", bus.connect("postee-runner-1"),
                                  heartbeat_interval=0.2):
            await eventually(lambda: "postee-runner-1" in controller.registry.runners
                             and controller.registry.runners["postee-runner-1"].heartbeats >= 2)
            (entry,) = (await admin_get(c_client, controller.node, "/runners")).json()
            assert entry["name"] == "postee-runner-1" and entry["state"] == "up" and entry["config_version"]
        await eventually(lambda: json_state(controller) == "stale")
        await eventually(lambda: json_state(controller) == "gone")


def json_state(controller) -> str:
    return json.loads(controller.registry.runners_json())[0]["state"]


async def test_controller_reload_makes_runners_fetch_their_new_slice(tmp_path):
    bus = InMemoryBus()
    cfg = seed_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    async with running_controller(tmp_path, cfg, bus.connect("controller"),
                                  ) as (controller, c_client), \
            running_runner(tmp_path, "postee-runner-1", bus.connect("postee-runner-1")) as (runner, _):
        assert "runner-only-route" in runner.node.pipeline.routes
        new_cfg = cfg.replace("- name: runner-only-route", "- name: renamed-runner-route")
        (tmp_path / "controller.yaml").write_text(new_cfg)
        key = controller.node.api_key()
        assert (await c_client.get("/reload", params={"key": key})).status_code == 200
        await eventually(lambda: "renamed-runner-route" in runner.node.pipeline.routes, timeout=60)
        assert "runner-only-route" not in runner.node.pipeline.routes


async def test_two_runners_each_get_their_own_slice_and_report_upstream(tmp_path):
    bus = InMemoryBus()
    async with open_http_sink() as sink:
        cfg = f"""
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
    url: {sink.url}/a
    body-content: "a event.input.n"
  - name: local-b
    type: http
    enable: true
    runs-on: runner-b
    url: {sink.url}/b
    body-content: "b event.input.n"
  - name: central
    type: http
    enable: true
    url: {sink.url}/central
    body-content: "central event.input.n"
"""
        async with running_controller(tmp_path, cfg, bus.connect("controller"), heartbeat_interval=0.2) as (
            controller, c_client
        ), running_runner(tmp_path, "runner-a", bus.connect("runner-a"), heartbeat_interval=0.2) as (
            runner_a, a_client
        ), running_runner(tmp_path, "runner-b", bus.connect("runner-b"), heartbeat_interval=0.2) as (
            runner_b, b_client
        ):
            assert set(runner_a.node.pipeline.actions) == {"local-a"}
            assert set(runner_b.node.pipeline.actions) == {"local-b"}
            assert set(controller.node.pipeline.actions) == {"central"}
            await a_client.post("/", content=tracee("TRC-1", 1))
            await b_client.post("/", content=tracee("TRC-1", 2))
            await eventually(lambda: len(sink.requests) == 4)
            await eventually(lambda: acknowledged(runner_a, 1, 1) and acknowledged(runner_b, 1, 1)
                             and pipeline_settled(runner_a.node, 1) and pipeline_settled(runner_b.node, 1)
                             and pipeline_settled(controller.node, 2))
            assert sorted(r.text.strip() for r in sink.requests) == ["a 1", "b 2", "central 1", "central 2"]
            await eventually(lambda: {r["name"]: r["state"] for r in json.loads(controller.registry.runners_json())}
                             == {"runner-a": "up", "runner-b": "up"})
            sources = sorted(e["source"] for e in (await admin_get(c_client, controller.node, "/events")).json())
            assert sources == ["runner-a", "runner-b"]
