"""Config slices and runner convergence: secrets stay where they are used, a rejected reload changes
nothing, no runner stays on an old slice, a runner without actions says so.

Controller and runners in one process over the in-memory bus (see test_memory_bus.py for why the real
clock). Faults come from injected bus parts (a client cut off the bus, a subscription that hears
nothing), never from patching our own code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
import yaml

from actors.testing import InMemoryBus
from actors.transport import Message, Subscription, Transport
from postee.bus.protocol import CONFIG_CHANGED_SUBJECT, CONFIG_SUBJECT, runner_config_subject
from postee.config.runner_slice import config_version
from tests.daemon.helpers import admin_get
from tests.helpers.http_sink import open_http_sink
from tests.roles.helpers import DelegatingTransport, eventually, running_controller, running_runner, secrets_config

BEAT = 0.2
"""Heartbeat interval in these tests (seconds): short, so convergence by heartbeat is quick."""


def finding(n: int) -> bytes:
    return json.dumps({"SigMetadata": {"ID": "TRC-1"}, "n": n}).encode()


def runners_by_name(text: str) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in json.loads(text)}


async def fetch_slice(transport: Transport, runner: str) -> Message:
    return await transport.request(CONFIG_SUBJECT, runner.encode(), timeout=10)


# -- 2. secrets stay where they are used --------------------------------------------------------------
async def test_runner_secrets_are_resolved_on_the_runner_only(tmp_path):
    bus = InMemoryBus()
    async with open_http_sink() as sink:
        runner_env = {"RUNNER_HOOK_URL": f"{sink.url}/secret", "RUNNER_TOKEN": "Bearer s3cret"}
        # the controller's environment has neither variable: it needs none of them
        async with running_controller(tmp_path, secrets_config(sink.url), bus.connect("controller")) as (
            controller, _
        ), running_runner(tmp_path, "runner-1", bus.connect("runner-1"), environ=runner_env) as (runner, r_client):
            sliced = yaml.safe_load((await fetch_slice(bus.connect("probe"), "runner-1")).data)
            secret_action = next(a for a in sliced["actions"] if a["name"] == "with-secret")
            assert secret_action["url"] == "$RUNNER_HOOK_URL"  # travels as written
            assert secret_action["headers"] == {"Authorization": ["$RUNNER_TOKEN"]}
            assert set(runner.node.pipeline.actions) == {"with-secret", "plain-runner-hook"}
            assert (await r_client.post("/", content=finding(1))).status_code == 200
            requests = await sink.wait_for(3)
            by_path = {r.path: r for r in requests}
            assert set(by_path) == {"/secret", "/plain", "/central"}
            assert by_path["/secret"].header("authorization") == "Bearer s3cret"
            assert "s3cret" not in repr(controller.node.config.action("with-secret").settings)


async def test_a_runner_missing_a_secret_disables_that_action_says_so_and_runs_the_rest(tmp_path):
    bus = InMemoryBus()
    async with open_http_sink() as sink:
        runner_env = {"RUNNER_HOOK_URL": f"{sink.url}/secret"}  # RUNNER_TOKEN is not set on the runner
        with structlog.testing.capture_logs() as logs:
            async with running_controller(tmp_path, secrets_config(sink.url), bus.connect("controller"),
                                          heartbeat_interval=BEAT) as (controller, c_client), \
                    running_runner(tmp_path, "runner-1", bus.connect("runner-1"), environ=runner_env,
                                   heartbeat_interval=BEAT) as (runner, r_client):
                assert set(runner.node.pipeline.actions) == {"plain-runner-hook"}
                assert (await r_client.post("/", content=finding(1))).status_code == 200
                requests = await sink.wait_for(2)
                assert sorted(r.path for r in requests) == ["/central", "/plain"]
                await eventually(lambda: runners_by_name(controller.registry.runners_json())
                                 .get("runner-1", {}).get("problems"))
                entry = runners_by_name((await admin_get(c_client, controller.node, "/runners")).text)["runner-1"]
                assert entry["actions"] == 1
                (problem,) = entry["problems"]
                assert "with-secret" in problem and "RUNNER_TOKEN" in problem
        lines = [e for e in logs if "RUNNER_TOKEN" in e["event"]]
        assert len(lines) == 1 and "with-secret" in lines[0]["event"], lines


# -- 3. a rejected reload changes nothing ---------------------------------------------------------------
async def test_a_rejected_reload_leaves_the_slices_as_they_were(tmp_path):
    bus = InMemoryBus()
    async with open_http_sink() as sink:
        cfg = secrets_config(sink.url)
        runner_env = {"RUNNER_HOOK_URL": f"{sink.url}/secret", "RUNNER_TOKEN": "t"}
        async with running_controller(tmp_path, cfg, bus.connect("controller"), heartbeat_interval=BEAT) as (
            controller, c_client
        ), running_runner(tmp_path, "runner-1", bus.connect("runner-1"), environ=runner_env,
                          heartbeat_interval=BEAT) as (runner, _):
            probe = bus.connect("probe")
            before = await fetch_slice(probe, "runner-1")
            # valid YAML and a valid config shape, but a route rule that does not compile: the node
            # refuses to build the new pipeline, so the running configuration stays, slices included
            rejected = cfg.replace("- name: findings", "- name: renamed-findings") + """
  - name: broken
    type: stdout
    enable: true
"""
            rejected = rejected.replace("routes:\n", 'routes:\n  - name: broken-rule\n'
                                        '    input: "this is not rego ((("\n    actions: [broken]\n'
                                        '    template: raw-json\n', 1)
            (tmp_path / "controller.yaml").write_text(rejected)
            answer = await c_client.get("/reload", params={"key": controller.node.api_key()})
            assert answer.status_code == 422
            after = await fetch_slice(probe, "runner-1")
            assert after.data == before.data
            assert yaml.safe_load(after.data)["routes"][0]["name"] == "findings"
            assert runner.upstream.config_version == after.headers["Postee-Config-Version"]
            # and the runners are still current
            await eventually(lambda: runners_by_name(controller.registry.runners_json())["runner-1"]["heartbeats"] >= 2)
            assert runners_by_name(controller.registry.runners_json())["runner-1"]["config_current"] is True


async def test_the_announced_version_is_that_of_the_configuration_now_running(tmp_path):
    bus = InMemoryBus()
    cfg = secrets_config("http://127.0.0.1:9")
    async with running_controller(tmp_path, cfg, bus.connect("controller")) as (controller, c_client):
        async with bus.connect("listener").subscribe(CONFIG_CHANGED_SUBJECT) as changes:
            new_cfg = cfg.replace("- name: findings", "- name: renamed-findings")
            (tmp_path / "controller.yaml").write_text(new_cfg)
            assert (await c_client.get("/reload", params={"key": controller.node.api_key()})).status_code == 200
            announced = (await changes.next(10)).data.decode()
        assert announced == config_version(yaml.safe_dump(yaml.safe_load(new_cfg), sort_keys=True))


# -- 5. no stale runner ----------------------------------------------------------------------------------
class DeafToAnnouncements(DelegatingTransport):
    """A runner's transport whose subscriptions to `subjects` hear nothing (lost messages).

    By default the broadcast `postee.config.changed` only; the runner's own subject too when given.
    """

    def __init__(self, inner: Transport, subjects: tuple[str, ...] = (CONFIG_CHANGED_SUBJECT,)) -> None:
        super().__init__(inner)
        self.subjects = subjects

    @asynccontextmanager
    async def subscribe(self, subject: str, **options: Any) -> AsyncIterator[Subscription]:
        async with self.inner.subscribe(subject, **options) as subscription:
            yield _Deaf(subscription) if subject in self.subjects else subscription


class _Deaf:
    def __init__(self, inner: Subscription) -> None:
        self.inner = inner

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        async for _ in self.inner:
            continue
        if False:  # pragma: no cover - makes this an async generator that yields nothing
            yield

    async def next(self, timeout: float | None = None) -> Message:
        return await self.inner.next(timeout)


def heard_from(registry: Any, runner: str) -> bool:
    return runner in registry.runners and registry.runners[runner].heartbeats > 0


def renamed(cfg: str) -> str:
    return cfg.replace("- name: findings", "- name: renamed-findings")


async def test_a_runner_that_missed_the_announcement_converges_by_its_heartbeat(tmp_path):
    bus = InMemoryBus()
    cfg = secrets_config("http://127.0.0.1:9")
    runner_env = {"RUNNER_HOOK_URL": "http://127.0.0.1:9/", "RUNNER_TOKEN": "t"}
    async with running_controller(tmp_path, cfg, bus.connect("controller"), heartbeat_interval=BEAT) as (
        controller, c_client
    ), running_runner(tmp_path, "runner-1", DeafToAnnouncements(bus.connect("runner-1")), environ=runner_env,
                      heartbeat_interval=BEAT) as (runner, _):
        registry = controller.registry
        await eventually(lambda: heard_from(registry, "runner-1"))
        assert runners_by_name(registry.runners_json())["runner-1"]["config_current"] is True
        (tmp_path / "controller.yaml").write_text(renamed(cfg))
        assert (await c_client.get("/reload", params={"key": controller.node.api_key()})).status_code == 200
        runners = runners_by_name((await admin_get(c_client, controller.node, "/runners")).text)
        assert runners["runner-1"]["config_current"] is False
        fetches, beats = registry.runners["runner-1"].config_fetches, registry.runners["runner-1"].heartbeats
        # a few heartbeats with the old version, or a new fetch, whichever comes first
        await eventually(lambda: registry.runners["runner-1"].config_fetches > fetches
                         or registry.runners["runner-1"].heartbeats >= beats + 4)
        assert registry.runners["runner-1"].config_fetches > fetches, "the stale runner was never told"
        await eventually(lambda: "renamed-findings" in runner.node.pipeline.routes)
        await eventually(lambda: runners_by_name(registry.runners_json())["runner-1"]["config_current"] is True)


async def test_a_runner_cut_off_during_a_reload_fetches_its_slice_after_reconnecting(tmp_path):
    bus = InMemoryBus()
    cfg = secrets_config("http://127.0.0.1:9")
    runner_env = {"RUNNER_HOOK_URL": "http://127.0.0.1:9/", "RUNNER_TOKEN": "t"}
    # deaf to every notice: only its own reconnect can make it fetch again
    transport = DeafToAnnouncements(bus.connect("runner-1"),
                                    (CONFIG_CHANGED_SUBJECT, runner_config_subject("runner-1")))
    async with running_controller(tmp_path, cfg, bus.connect("controller")) as (controller, c_client), \
            running_runner(tmp_path, "runner-1", transport, heartbeat_interval=0.5,
                           environ=runner_env) as (runner, r_client):
        registry = controller.registry
        await eventually(lambda: heard_from(registry, "runner-1"))
        bus.disconnect("runner-1")
        (tmp_path / "controller.yaml").write_text(renamed(cfg))
        assert (await c_client.get("/reload", params={"key": controller.node.api_key()})).status_code == 200
        assert (await r_client.get("/readyz")).status_code == 503  # cut off: the link is down
        fetches, beats = registry.runners["runner-1"].config_fetches, registry.runners["runner-1"].heartbeats
        bus.connect("runner-1")
        await eventually(lambda: registry.runners["runner-1"].config_fetches > fetches
                         or registry.runners["runner-1"].heartbeats >= beats + 3)
        assert registry.runners["runner-1"].config_fetches > fetches, "the runner never asked again"
        await eventually(lambda: "renamed-findings" in runner.node.pipeline.routes)
        assert "findings" not in runner.node.pipeline.routes


async def test_a_slice_the_runner_cannot_use_is_reported_and_not_fetched_again_and_again(tmp_path):
    bus = InMemoryBus()
    cfg = secrets_config("http://127.0.0.1:9")
    # valid on the controller (the `$VAR` is the runner's business), invalid with the runner's value
    unusable = renamed(cfg).replace("body-content: \"secret event.input.n\"", "timeout: $RUNNER_TIMEOUT")
    runner_env = {"RUNNER_HOOK_URL": "http://127.0.0.1:9/", "RUNNER_TOKEN": "t", "RUNNER_TIMEOUT": "soon"}
    async with running_controller(tmp_path, cfg, bus.connect("controller"), heartbeat_interval=BEAT) as (
        controller, c_client
    ), running_runner(tmp_path, "runner-1", bus.connect("runner-1"), environ=runner_env,
                      heartbeat_interval=BEAT) as (runner, _):
        registry = controller.registry
        await eventually(lambda: heard_from(registry, "runner-1"))
        running = runner.current.version
        fetches = registry.runners["runner-1"].config_fetches
        (tmp_path / "controller.yaml").write_text(unusable)
        assert (await c_client.get("/reload", params={"key": controller.node.api_key()})).status_code == 200
        await eventually(lambda: any("rejected" in p for p in registry.runners["runner-1"].problems))
        (problem,) = registry.runners["runner-1"].problems
        assert "actions[0] (name: with-secret).timeout" in problem
        beats = registry.runners["runner-1"].heartbeats
        await eventually(lambda: registry.runners["runner-1"].heartbeats >= beats + 5)
        # told at each heartbeat that it is behind, it does not fetch the same unusable slice again
        assert registry.runners["runner-1"].config_fetches == fetches + 1
        assert runner.current.version == running and "findings" in runner.node.pipeline.routes
        assert runners_by_name(registry.runners_json())["runner-1"]["config_current"] is False
        # a usable configuration clears the problem
        (tmp_path / "controller.yaml").write_text(renamed(cfg))
        assert (await c_client.get("/reload", params={"key": controller.node.api_key()})).status_code == 200
        await eventually(lambda: "renamed-findings" in runner.node.pipeline.routes)
        await eventually(lambda: runners_by_name(registry.runners_json())["runner-1"]["config_current"] is True
                         and registry.runners["runner-1"].problems == [])


# -- 7. a runner named in no runs-on -----------------------------------------------------------------------
async def test_a_runner_named_in_no_runs_on_starts_warns_once_and_shows_as_such(tmp_path):
    bus = InMemoryBus()
    cfg = secrets_config("http://127.0.0.1:9")
    with structlog.testing.capture_logs() as logs:
        async with running_controller(tmp_path, cfg, bus.connect("controller"), heartbeat_interval=BEAT) as (
            controller, c_client
        ), running_runner(tmp_path, "runner-typo", bus.connect("runner-typo"), heartbeat_interval=BEAT) as (
            runner, r_client
        ):
            assert runner.node.pipeline.actions == {}
            assert (await r_client.post("/", content=finding(1))).status_code == 200  # still reported upstream
            await eventually(lambda: controller.registry.runners.get("runner-typo") is not None
                             and controller.registry.runners["runner-typo"].events == 1)
            # a reload makes it fetch again: still no action, and no second warning
            (tmp_path / "controller.yaml").write_text(renamed(cfg))
            fetches = controller.registry.runners["runner-typo"].config_fetches
            assert (await c_client.get("/reload", params={"key": controller.node.api_key()})).status_code == 200
            await eventually(lambda: controller.registry.runners["runner-typo"].config_fetches > fetches)
            beats = controller.registry.runners["runner-typo"].heartbeats
            await eventually(lambda: controller.registry.runners["runner-typo"].heartbeats >= beats + 2)
            await eventually(lambda: runners_by_name(controller.registry.runners_json())["runner-typo"]["problems"])
            entry = runners_by_name((await admin_get(c_client, controller.node, "/runners")).text)["runner-typo"]
            assert entry["actions"] == 0
            (problem,) = entry["problems"]
            assert "runs-on: runner-typo" in problem
    warnings = [e for e in logs if "runs-on" in e["event"] and e["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
