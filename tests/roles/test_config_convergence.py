"""Config slices and runner convergence: secrets stay where they are used, a rejected reload changes
nothing, no runner stays on an old slice, a runner without actions says so.

Controller and runners in one process over the in-memory bus, on Trio's virtual clock
(`tests/roles/sim_helpers.py`): the daemon's 5 s heartbeats cost nothing, so convergence by heartbeat
is tested at the interval it has in production. Faults come from injected bus parts (a client cut off
the bus, a subscription that hears nothing), never from patching our own code.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
import yaml

from actors.transport import Message, Subscription, Transport
from postee.bus.protocol import CONFIG_CHANGED_SUBJECT, CONFIG_SUBJECT, runner_config_subject
from postee.config.runner_slice import config_version
from postee.roles.controller import Controller
from tests.daemon.helpers import pipeline_settled
from tests.roles.helpers import DelegatingTransport, secrets_config
from tests.roles.sim_helpers import UNUSED_URL, Deployment, open_deployment, runners_by_name, settle, submit

CONFIG = secrets_config(UNUSED_URL)
RUNNER_ENV = {"RUNNER_HOOK_URL": f"{UNUSED_URL}/secret", "RUNNER_TOKEN": "t"}


def finding(n: int) -> bytes:
    return json.dumps({"SigMetadata": {"ID": "TRC-1"}, "n": n}).encode()


async def reload(sim: Deployment, controller: Controller, cfg_text: str) -> tuple[bool, str]:
    """Write the controller's file, then `GET /reload` (False: the endpoint's 422)."""
    sim.controller_config.write_text(cfg_text)
    assert controller.node is not None
    return await controller.node.reload()


async def fetch_slice(transport: Transport, runner: str) -> Message:
    return await transport.request(CONFIG_SUBJECT, runner.encode(), timeout=10)


# -- 2. secrets stay where they are used --------------------------------------------------------------
async def test_runner_secrets_are_resolved_on_the_runner_only(autojump_clock, tmp_path):
    runner_env = {"RUNNER_HOOK_URL": f"{UNUSED_URL}/secret", "RUNNER_TOKEN": "Bearer s3cret"}
    # the controller's environment has neither variable: it needs none of them
    async with open_deployment(tmp_path) as sim, sim.controller(CONFIG) as controller, \
            sim.runner("runner-1", environ=runner_env) as runner:
        sliced = yaml.safe_load((await fetch_slice(sim.bus.connect("probe"), "runner-1")).data)
        secret_action = next(a for a in sliced["actions"] if a["name"] == "with-secret")
        assert secret_action["url"] == "$RUNNER_HOOK_URL"  # travels as written
        assert secret_action["headers"] == {"Authorization": ["$RUNNER_TOKEN"]}
        assert set(runner.node.pipeline.actions) == {"with-secret", "plain-runner-hook"}
        # the runner's action was built from the resolved values (what its HTTP request would carry)
        built = runner.node.pipeline.actions["with-secret"].action.spec.settings
        assert built["url"] == f"{UNUSED_URL}/secret"
        assert json.loads(json.dumps(built["headers"])) == {"Authorization": ["Bearer s3cret"]}
        event = await submit(runner, finding(1))
        await settle(lambda: len(sim.recordings.calls) == 3 and pipeline_settled(controller.node, 1))
        assert sorted((c.node, c.action, c.event_id) for c in sim.recordings.calls) == [
            ("controller", "central", event.id),
            ("runner-1", "plain-runner-hook", event.id),
            ("runner-1", "with-secret", event.id),
        ]
        assert "s3cret" not in repr(controller.node.config.action("with-secret").settings)


async def test_a_runner_missing_a_secret_disables_that_action_says_so_and_runs_the_rest(autojump_clock, tmp_path):
    runner_env = {"RUNNER_HOOK_URL": f"{UNUSED_URL}/secret"}  # RUNNER_TOKEN is not set on the runner
    with structlog.testing.capture_logs() as logs:
        async with open_deployment(tmp_path) as sim, sim.controller(CONFIG) as controller, \
                sim.runner("runner-1", environ=runner_env) as runner:
            assert set(runner.node.pipeline.actions) == {"plain-runner-hook"}
            event = await submit(runner, finding(1))
            await settle(lambda: len(sim.recordings.calls) == 2 and pipeline_settled(runner.node, 1)
                         and pipeline_settled(controller.node, 1))
            assert sorted((c.node, c.action, c.event_id) for c in sim.recordings.calls) == [
                ("controller", "central", event.id), ("runner-1", "plain-runner-hook", event.id)]
            await settle(lambda: runners_by_name(controller).get("runner-1", {}).get("problems"))
            entry = runners_by_name(controller)["runner-1"]
            assert entry["actions"] == 1
            (problem,) = entry["problems"]
            assert "with-secret" in problem and "RUNNER_TOKEN" in problem
    lines = [e for e in logs if "RUNNER_TOKEN" in e["event"]]
    assert len(lines) == 1 and "with-secret" in lines[0]["event"], lines


# -- 3. a rejected reload changes nothing ---------------------------------------------------------------
async def test_a_rejected_reload_leaves_the_slices_as_they_were(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, sim.controller(CONFIG) as controller, \
            sim.runner("runner-1", environ=RUNNER_ENV) as runner:
        probe = sim.bus.connect("probe")
        before = await fetch_slice(probe, "runner-1")
        # valid YAML and a valid config shape, but a route rule that does not compile: the node
        # refuses to build the new pipeline, so the running configuration stays, slices included
        rejected = CONFIG.replace("- name: findings", "- name: renamed-findings") + """
  - name: broken
    type: stdout
    enable: true
"""
        rejected = rejected.replace("routes:\n", 'routes:\n  - name: broken-rule\n'
                                    '    input: "this is not rego ((("\n    actions: [broken]\n'
                                    '    template: raw-json\n', 1)
        ok, message = await reload(sim, controller, rejected)
        assert not ok and "rejected" in message
        after = await fetch_slice(probe, "runner-1")
        assert after.data == before.data
        assert yaml.safe_load(after.data)["routes"][0]["name"] == "findings"
        assert runner.upstream.config_version == after.headers["Postee-Config-Version"]
        # and the runners are still current
        await settle(lambda: runners_by_name(controller)["runner-1"]["heartbeats"] >= 2)
        assert runners_by_name(controller)["runner-1"]["config_current"] is True


async def test_the_announced_version_is_that_of_the_configuration_now_running(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, sim.controller(CONFIG) as controller:
        async with sim.bus.connect("listener").subscribe(CONFIG_CHANGED_SUBJECT) as changes:
            new_cfg = CONFIG.replace("- name: findings", "- name: renamed-findings")
            assert (await reload(sim, controller, new_cfg))[0]
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


async def test_a_runner_that_missed_the_announcement_converges_by_its_heartbeat(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim, sim.controller(CONFIG) as controller, \
            sim.runner("runner-1", DeafToAnnouncements(sim.bus.connect("runner-1")), environ=RUNNER_ENV) as runner:
        registry = controller.registry
        await settle(lambda: heard_from(registry, "runner-1"))
        assert runners_by_name(controller)["runner-1"]["config_current"] is True
        assert (await reload(sim, controller, renamed(CONFIG)))[0]
        assert runners_by_name(controller)["runner-1"]["config_current"] is False
        fetches, beats = registry.runners["runner-1"].config_fetches, registry.runners["runner-1"].heartbeats
        # a few heartbeats with the old version, or a new fetch, whichever comes first
        await settle(lambda: registry.runners["runner-1"].config_fetches > fetches
                     or registry.runners["runner-1"].heartbeats >= beats + 4)
        assert registry.runners["runner-1"].config_fetches > fetches, "the stale runner was never told"
        await settle(lambda: "renamed-findings" in runner.node.pipeline.routes)
        await settle(lambda: runners_by_name(controller)["runner-1"]["config_current"] is True)


async def test_a_runner_cut_off_during_a_reload_fetches_its_slice_after_reconnecting(autojump_clock, tmp_path):
    async with open_deployment(tmp_path) as sim:
        # deaf to every notice: only its own reconnect can make it fetch again
        transport = DeafToAnnouncements(sim.bus.connect("runner-1"),
                                        (CONFIG_CHANGED_SUBJECT, runner_config_subject("runner-1")))
        async with sim.controller(CONFIG) as controller, \
                sim.runner("runner-1", transport, environ=RUNNER_ENV) as runner:
            registry = controller.registry
            await settle(lambda: heard_from(registry, "runner-1"))
            sim.bus.disconnect("runner-1")
            assert (await reload(sim, controller, renamed(CONFIG)))[0]
            ready, _ = runner.node.readiness()  # GET /readyz
            assert not ready  # cut off: the link is down (503)
            fetches, beats = registry.runners["runner-1"].config_fetches, registry.runners["runner-1"].heartbeats
            sim.bus.connect("runner-1")
            await settle(lambda: registry.runners["runner-1"].config_fetches > fetches
                         or registry.runners["runner-1"].heartbeats >= beats + 3)
            assert registry.runners["runner-1"].config_fetches > fetches, "the runner never asked again"
            await settle(lambda: "renamed-findings" in runner.node.pipeline.routes)
            assert "findings" not in runner.node.pipeline.routes
            assert runner.node.readiness()[0]


async def test_a_slice_the_runner_cannot_use_is_reported_and_not_fetched_again_and_again(autojump_clock, tmp_path):
    # valid on the controller (the `$VAR` is the runner's business), invalid with the runner's value
    unusable = renamed(CONFIG).replace("body-content: \"secret event.input.n\"", "timeout: $RUNNER_TIMEOUT")
    runner_env = RUNNER_ENV | {"RUNNER_TIMEOUT": "soon"}
    async with open_deployment(tmp_path) as sim, sim.controller(CONFIG) as controller, \
            sim.runner("runner-1", environ=runner_env) as runner:
        registry = controller.registry
        await settle(lambda: heard_from(registry, "runner-1"))
        running = runner.current.version
        fetches = registry.runners["runner-1"].config_fetches
        assert (await reload(sim, controller, unusable))[0]
        await settle(lambda: any("rejected" in p for p in registry.runners["runner-1"].problems))
        (problem,) = registry.runners["runner-1"].problems
        assert "actions[0] (name: with-secret).timeout" in problem
        beats = registry.runners["runner-1"].heartbeats
        await settle(lambda: registry.runners["runner-1"].heartbeats >= beats + 5)
        # told at each heartbeat that it is behind, it does not fetch the same unusable slice again
        assert registry.runners["runner-1"].config_fetches == fetches + 1
        assert runner.current.version == running and "findings" in runner.node.pipeline.routes
        assert runners_by_name(controller)["runner-1"]["config_current"] is False
        # a usable configuration clears the problem
        assert (await reload(sim, controller, renamed(CONFIG)))[0]
        await settle(lambda: "renamed-findings" in runner.node.pipeline.routes)
        await settle(lambda: runners_by_name(controller)["runner-1"]["config_current"] is True
                     and registry.runners["runner-1"].problems == [])


# -- 7. a runner named in no runs-on -----------------------------------------------------------------------
async def test_a_runner_named_in_no_runs_on_starts_warns_once_and_shows_as_such(autojump_clock, tmp_path):
    with structlog.testing.capture_logs() as logs:
        async with open_deployment(tmp_path) as sim, sim.controller(CONFIG) as controller, \
                sim.runner("runner-typo") as runner:
            assert runner.node.pipeline.actions == {}
            await submit(runner, finding(1))  # still reported upstream
            await settle(lambda: controller.registry.runners.get("runner-typo") is not None
                         and controller.registry.runners["runner-typo"].events == 1)
            # a reload makes it fetch again: still no action, and no second warning
            fetches = controller.registry.runners["runner-typo"].config_fetches
            assert (await reload(sim, controller, renamed(CONFIG)))[0]
            await settle(lambda: controller.registry.runners["runner-typo"].config_fetches > fetches)
            beats = controller.registry.runners["runner-typo"].heartbeats
            await settle(lambda: controller.registry.runners["runner-typo"].heartbeats >= beats + 2)
            await settle(lambda: runners_by_name(controller)["runner-typo"]["problems"])
            entry = runners_by_name(controller)["runner-typo"]
            assert entry["actions"] == 0
            (problem,) = entry["problems"]
            assert "runs-on: runner-typo" in problem
    warnings = [e for e in logs if "runs-on" in e["event"] and e["log_level"] == "warning"]
    assert len(warnings) == 1, warnings
