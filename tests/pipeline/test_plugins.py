"""Route plugins: deduplication and aggregation, and the actor tree's resilience."""

import json
from typing import ClassVar

import trio

from postee.actions.base import Action, ActionSpec, SendResult
from postee.actions.registry import register
from postee.actions.retry import RetryPolicy
from postee.pipeline.events import parse_event
from tests.daemon.helpers import event_bytes
from tests.helpers.http_sink import open_http_sink
from tests.pipeline.conftest import FakeWallClock, running_pipeline


def route_cfg(sink_url: str, plugins: str, template: str = "postee.rawmessage.json", routes: int = 1) -> str:
    route_text = "".join(
        f"""
  - name: r{i}
    actions: [hook]
    template: t
    plugins:
{plugins}"""
        for i in range(routes)
    )
    return f"""
routes:{route_text}
templates:
  - name: t
    rego-package: {template}
actions:
  - name: hook
    type: webhook
    enable: true
    url: {sink_url}/hook
"""


async def test_dedup_within_and_after_the_timeout_scoped_per_route(tmp_path):
    clock = FakeWallClock()
    plugins = """      unique-message-props: [digest, image]
      unique-message-timeout: 10s"""
    async with open_http_sink() as sink:
        async with running_pipeline(tmp_path, route_cfg(sink.url, plugins, routes=2), wall_clock=clock) as pipeline:
            event = parse_event(b'{"digest": "sha256:1", "image": "alpine"}')

            async def run(route):
                return await pipeline.run_route(route, parse_event(event.text), timeout=10)

            first = await run("r0")
            assert first.dropped is None and first.reports[0].ok
            assert (await run("r0")).dropped == "duplicate"
            assert (await run("r1")).dropped is None  # another route: not a duplicate there
            clock.now += 9.9
            assert (await run("r0")).dropped == "duplicate"
            clock.now += 0.2
            assert (await run("r0")).dropped is None  # expired
            no_props = await pipeline.run_route("r0", parse_event(b'{"other": 1}'), timeout=10)
            assert no_props.dropped is None  # missing every prop: not deduplicated (Postee drops it)
            assert (await pipeline.run_route("r0", parse_event(b'{"other": 1}'), timeout=10)).dropped is None
    assert len(sink.requests) == 5


async def test_dedup_survives_a_restart(tmp_path):
    clock = FakeWallClock()
    plugins = """      unique-message-props: [image]"""
    async with open_http_sink() as sink:
        cfg = route_cfg(sink.url, plugins)
        async with running_pipeline(tmp_path, cfg, wall_clock=clock) as pipeline:
            assert (await pipeline.run_route("r0", parse_event(b'{"image": "a"}'), timeout=10)).dropped is None
        async with running_pipeline(tmp_path, cfg, wall_clock=clock) as pipeline:
            assert (await pipeline.run_route("r0", parse_event(b'{"image": "a"}'), timeout=10)).dropped == "duplicate"


async def test_aggregation_by_number_uses_the_templates_aggregation_package(tmp_path):
    plugins = """      aggregate-message-number: 3"""
    async with open_http_sink() as sink:
        cfg = route_cfg(sink.url, plugins, template="postee.vuls.html")
        async with running_pipeline(tmp_path, cfg) as pipeline:
            aqua = json.loads(event_bytes("aqua-input.json"))
            outcomes = []
            for i in range(3):
                aqua["image"] = f"image-{i}:1.0"
                event = parse_event(json.dumps(aqua).encode())
                outcomes.append(await pipeline.run_route("r0", event, timeout=20))
            assert [o.dropped for o in outcomes] == ["aggregating", "aggregating", None]
            (request,) = await sink.wait_for(1)
    text = request.text  # the webhook posts the description: here the aggregated HTML
    assert "<h1>" in text or "<p>" in text
    for i in range(3):
        assert f"image-{i}:1.0" in text


async def test_aggregation_queue_survives_a_restart_and_flushes_by_timeout(tmp_path):
    async with open_http_sink() as sink:
        by_number = route_cfg(sink.url, "      aggregate-message-number: 5")
        async with running_pipeline(tmp_path, by_number) as pipeline:
            for i in range(2):
                await pipeline.run_route("r0", parse_event(json.dumps({"n": i}).encode()), timeout=10)
        assert sink.requests == []
        by_timeout = route_cfg(sink.url, "      aggregate-message-timeout: 0.3s")
        async with running_pipeline(tmp_path, by_timeout) as pipeline:
            await pipeline.run_route("r0", parse_event(b'{"n": 2}'), timeout=10)
            (request,) = await sink.wait_for(1, timeout=10)
    text = request.text
    assert all(f'\\"n\\": {i}' in text or f'"n": {i}' in text for i in range(3)), text


@register
class CrashOnceAction(Action):
    """A test-only action type whose first send hits a bug (not an ActionError)."""

    type_name: ClassVar[str] = "test-crash-once"
    default_timeout: ClassVar[float] = 5.0
    sent: ClassVar[list[str]] = []
    crashed: ClassVar[list[str]] = []

    @classmethod
    def from_spec(cls, spec: ActionSpec):
        return cls(spec, retry_policy=RetryPolicy(retries=0, timeout=5))

    async def send(self, delivery):
        if not CrashOnceAction.crashed:
            CrashOnceAction.crashed.append(delivery.event_id)
            raise RuntimeError("a bug in an action")
        CrashOnceAction.sent.append(delivery.event_id)
        return SendResult(output="ok")


async def test_crashing_action_is_restarted_and_others_keep_working(tmp_path):
    cfg = """
routes:
  - name: r
    actions: [crashy]
    template: t
templates:
  - name: t
    rego-package: postee.rawmessage.json
actions:
  - name: crashy
    type: test-crash-once
    enable: true
"""
    async with running_pipeline(tmp_path, cfg) as pipeline:
        first = await pipeline.run_route("r", parse_event(b'{"n": 1}'), timeout=10)
        assert first.reports == ()  # the action crashed on it: reported, not hung
        second = await pipeline.run_route("r", parse_event(b'{"n": 2}'), timeout=10)
        assert second.reports[0].ok
        assert len(CrashOnceAction.crashed) == 1 and len(CrashOnceAction.sent) == 1
        with trio.fail_after(5):
            while not pipeline.submit(parse_event(b'{"n": 3}')):
                await trio.sleep(0.01)
        with trio.fail_after(5):
            while len(CrashOnceAction.sent) < 2:
                await trio.sleep(0.01)
