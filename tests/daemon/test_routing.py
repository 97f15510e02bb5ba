"""Events through routes to actions, end to end over real HTTP, with real sinks and processes."""

import base64
import json

import trio

from tests.daemon.helpers import event_bytes, pipeline_settled, running_node, webhook_route
from tests.helpers.http_sink import Reply, open_http_sink


async def wait_until(predicate, timeout=10):
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def test_events_go_to_the_routes_that_match(tmp_path):
    async with open_http_sink() as images, open_http_sink() as findings:
        cfg = f"""
routes:
  - name: images
    input: contains(input.image, "alpine")
    actions: [to-images]
    template: raw
  - name: findings
    input: contains(input.SigMetadata.ID, "TRC-")
    actions: [to-findings]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: to-images
    type: webhook
    enable: true
    url: {images.url}/images
  - name: to-findings
    type: webhook
    enable: true
    url: {findings.url}/findings
"""
        async with running_node(tmp_path, cfg) as (node, client):
            await client.post("/", content=b'{"image": "alpine:3.19"}')
            await client.post("/", content=event_bytes("tracee-event.json"))
            await client.post("/", content=b'{"image": "debian:12"}')  # matches nothing
            (image_request,) = await images.wait_for(1)
            (finding_request,) = await findings.wait_for(1)
            assert image_request.json()["image"] == "alpine:3.19"
            assert finding_request.json()["SigMetadata"]["ID"].startswith("TRC-")
            await wait_until(lambda: pipeline_settled(node, 3))  # both routes done with all three events
            assert len(images.requests) == 1 and len(findings.requests) == 1


async def test_http_action_headers_and_body_substitution(tmp_path):
    async with open_http_sink() as sink:
        cfg = f"""
routes:
  - name: r
    actions: [post]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: post
    type: http
    enable: true
    url: {sink.url}/hook?src=postee
    method: PUT
    headers:
      X-Team: [secops, platform]
    body-content: |
      image=event.input.image registry=event.input.registry
      first-vuln=event.input.vulns.0.id
"""
        async with running_node(tmp_path, cfg) as (node, client):
            event = {"image": "alpine:3", "registry": "docker.io", "vulns": [{"id": "CVE-1"}, {"id": "CVE-2"}]}
            await client.post("/", content=json.dumps(event).encode())
            (request,) = await sink.wait_for(1)
    assert request.method == "PUT" and request.path == "/hook"
    assert request.query_params["src"] == ["postee"]
    assert request.header_values("x-team") == ["secops", "platform"]
    assert request.text.splitlines() == ["image=alpine:3 registry=docker.io", "first-vuln=CVE-1"]
    description = base64.b64decode(request.header("postee-event")).decode()
    assert json.loads(description)["image"] == "alpine:3"


async def test_exec_action_writes_a_file(tmp_path):
    out = tmp_path / "exec-out.txt"
    cfg = f"""
routes:
  - name: r
    input: input.SigMetadata.ID == "TRC-2"
    actions: [script]
    template: tracee
templates:
  - name: tracee
    rego-package: postee.tracee.slack
actions:
  - name: script
    type: exec
    enable: true
    env: ["OUT={out}"]
    exec-script: |
      #!/bin/sh
      echo "event for $MY_NAME" > "$OUT"
      printf '%s' "$POSTEE_EVENT" >> "$OUT"
"""
    async with running_node(tmp_path, cfg.replace("MY_NAME", "OUT")) as (node, client):
        await client.post("/", content=event_bytes("tracee-event.json"))
        await wait_until(lambda: node.pipeline.actions["script"].sent_ok == 1)
    text = out.read_text()
    assert text.startswith(f"event for {out}")
    assert "Anti-Debugging" in text


async def test_serialized_route_runs_actions_in_order_event_after_event(tmp_path):
    # The first action is slow: without serialization the second would overtake it.
    async with open_http_sink(default=Reply(200, delay=0.15)) as slow, open_http_sink() as fast:
        cfg = f"""
routes:
  - name: ordered
    serialize-actions: true
    actions: [first, second]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: first
    type: http
    enable: true
    url: {slow.url}/first
    body-content: "first event.input.n"
  - name: second
    type: http
    enable: true
    url: {fast.url}/second
    body-content: "second event.input.n"
"""
        async with running_node(tmp_path, cfg) as (node, client):
            for n in range(4):
                await client.post("/", content=json.dumps({"n": n}).encode())
            await fast.wait_for(4)
            await slow.wait_for(4)
    timeline = sorted(
        [(r.received_at, r.text.strip()) for r in slow.requests + fast.requests]
    )
    assert [text for _, text in timeline] == [
        "first 0", "second 0", "first 1", "second 1", "first 2", "second 2", "first 3", "second 3"
    ]


async def test_failing_action_is_retried_and_does_not_block_other_actions(tmp_path):
    async with open_http_sink([Reply(500), Reply(503)]) as flaky, open_http_sink() as healthy:
        cfg = f"""
routes:
  - name: r
    actions: [flaky, healthy]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: flaky
    type: webhook
    enable: true
    url: {flaky.url}/
    retries: 3
    retry-backoff: 0.05s
  - name: healthy
    type: webhook
    enable: true
    url: {healthy.url}/
"""
        async with running_node(tmp_path, cfg) as (node, client):
            await client.post("/", content=b'{"n": 1}')
            await healthy.wait_for(1)
            await flaky.wait_for(3)
            await wait_until(lambda: node.pipeline.actions["flaky"].sent_ok == 1)
            metrics = (await client.get("/metrics")).text
    assert 'postee_action_retries_total{action="flaky"} 2.0' in metrics
    assert 'postee_action_sends_total{action="flaky",status="ok",type="webhook"} 1.0' in metrics


async def test_disabled_and_unknown_setting_actions(tmp_path):
    async with open_http_sink() as sink:
        cfg = f"""
routes:
  - name: r
    actions: [enabled-one, disabled-one]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: enabled-one
    type: webhook
    enable: true
    url: {sink.url}/on
  - name: disabled-one
    type: webhook
    enable: false
    url: {sink.url}/off
"""
        async with running_node(tmp_path, cfg) as (node, client):
            await client.post("/", content=b"{}")
            (request,) = await sink.wait_for(1)
            await wait_until(lambda: pipeline_settled(node, 1))
            assert request.path == "/on" and len(sink.requests) == 1
            assert set(node.pipeline.actions) == {"enabled-one"}


async def test_events_of_different_cost_still_arrive_in_order(tmp_path):
    # Big events take longer to render than small ones; the route prepares several at once but
    # must hand them over in arrival order.
    async with open_http_sink() as sink:
        cfg = webhook_route(f"{sink.url}/hook", route="ordered", serialize=True)
        async with running_node(tmp_path, cfg) as (node, client):
            for n in range(12):
                padding = "x" * (200_000 if n % 3 == 0 else 10)
                await client.post("/", content=json.dumps({"n": n, "padding": padding}).encode())
            await sink.wait_for(12, timeout=30)
    assert [r.json()["n"] for r in sink.requests] == list(range(12))
