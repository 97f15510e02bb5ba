"""Who may say what on the bus, enforced by a real nats-server (issue #11, finding 1).

A rogue client holding a *valid* runner seed (runner-b's own key, or the shared seed of Postee's mode)
tries every attack from the finding against a real controller and a real runner-a: fetch runner-a's
slice, read every subject, forge runner-a's events and executions, register fake runners, answer a
config request in the controller's stead, announce a change. Each is refused by the server (the
rogue's connection reports the permissions violation) and none changes what the controller or
runner-a see; a control step shows each observation channel works.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import structlog
import trio
import yaml

from actors import TransportError
from postee.bus.nats_transport import NatsTransport, open_nats_transport
from postee.bus.nkeys_util import new_user_seed, public_key_from_seed
from postee.bus.protocol import (
    CONFIG_CHANGED_SUBJECT,
    CONFIG_KIND,
    CONFIG_SUBJECT,
    EVENTS_KIND,
    EVENTS_SUBJECT,
    EXECUTIONS_KIND,
    HEADER_EVENT_ID,
    HEADER_RUNNER,
    HEARTBEAT_KIND,
    HEARTBEAT_SUBJECT,
    ExecutionReport,
    Heartbeat,
    runner_config_subject,
    runner_inbox_prefix,
    runner_subject,
    runner_subjects_pattern,
)
from postee.bus.runner_keys import RunnerKeysError, read_runner_keys
from postee.bus.server import NatsServerConfigError
from postee.roles.launch import LinkOptions, run_controller
from tests.bus.link_helpers import controller_node, free_port, runner_node
from tests.roles.helpers import eventually, node_options

SECRET_A = "runner-a-secret-7Q2"
SECRET_B = "runner-b-secret-K9Z"

CFG = f"""
routes:
  - name: findings
    input: contains(input.SigMetadata.ID, "TRC-")
    actions: [hook-a, hook-b]
    template: raw-json
templates:
  - name: raw-json
    rego-package: postee.rawmessage.json
actions:
  - name: hook-a
    type: webhook
    enable: true
    runs-on: runner-a
    url: http://127.0.0.1:9/{SECRET_A}
  - name: hook-b
    type: webhook
    enable: true
    runs-on: runner-b
    url: http://127.0.0.1:9/{SECRET_B}
"""


def write_seed(path: Path) -> str:
    seed = new_user_seed()
    path.write_bytes(seed + b"\n")
    path.chmod(0o600)
    return public_key_from_seed(seed)


def keyed_setup(tmp_path: Path, *, shared: bool = False) -> tuple[LinkOptions, Path, Path, Path | None]:
    """(controller link, runner-a seed, runner-b seed, shared seed) on a free loopback port: runner-a
    has its own key, runner-b too unless there is a shared seed."""
    a_seed, b_seed = tmp_path / "a.seed", tmp_path / "b.seed"
    keys = tmp_path / "runner-keys.yaml"
    keyed = {"runner-a": write_seed(a_seed), "runner-b": write_seed(b_seed)}
    if shared:  # runner-b is then one of the shared seed's runners
        del keyed["runner-b"]
    keys.write_text(yaml.safe_dump(keyed))
    shared_seed = None
    if shared:
        shared_seed = tmp_path / "shared.seed"
        write_seed(shared_seed)
    link = LinkOptions(url=f"nats://127.0.0.1:{free_port()}", runner_keys=str(keys),
                       seed_file=str(shared_seed) if shared_seed else None)
    return link, a_seed, b_seed, shared_seed


async def violation(rogue: NatsTransport, subject: str) -> None:
    """Wait until the server has told the rogue it may not use `subject`."""
    try:
        await eventually(lambda: rogue.last_error is not None and "permissions violation" in rogue.last_error.lower()
                         and subject.lower() in rogue.last_error.lower(), timeout=10)
    except trio.TooSlowError:
        raise AssertionError(f"no violation for {subject}: {rogue.last_error}") from None


async def refused_request(rogue: NatsTransport, subject: str, data: bytes = b"", **options) -> None:
    with pytest.raises(TransportError):
        await rogue.request(subject, data, timeout=1.5, **options)
    await violation(rogue, subject)


async def test_a_runner_with_its_own_key_cannot_act_as_another_runner_or_as_the_controller(tmp_path):
    link, a_seed, b_seed, _ = keyed_setup(tmp_path)
    a_link = LinkOptions(url=link.url, seed_file=str(a_seed))
    async with controller_node(tmp_path, link, CFG) as (controller, c_client), \
            runner_node(tmp_path, a_link, "runner-a") as (runner_a, a_client), \
            open_nats_transport(link.url, name="rogue", nkey_seed_file=str(b_seed),
                                inbox_prefix=runner_inbox_prefix("runner-b")) as rogue:
        registry = controller.registry
        await eventually(lambda: "runner-a" in registry.runners)

        # The rogue's own slice is runner-b's, whatever name it asks for; runner-a's is out of reach.
        own = await rogue.request(runner_subject("runner-b", CONFIG_KIND), b"runner-a", timeout=10)
        assert SECRET_B in own.data.decode() and SECRET_A not in own.data.decode()
        await refused_request(rogue, runner_subject("runner-a", CONFIG_KIND), b"runner-a")
        await refused_request(rogue, CONFIG_SUBJECT, b"runner-a")

        # Reading every subject, runner-a's inbox, or the runners' reports: refused, and nothing arrives.
        async with rogue.subscribe(">") as everything, \
                rogue.subscribe(f"{runner_inbox_prefix('runner-a')}.>") as a_inbox, \
                rogue.subscribe(runner_subjects_pattern(EVENTS_KIND)) as reports, \
                rogue.subscribe(runner_subjects_pattern(CONFIG_KIND)) as config_requests:
            await violation(rogue, runner_subjects_pattern(CONFIG_KIND))
            fetches = registry.runners["runner-a"].config_fetches
            # runner-a's traffic: an event and its executions go up; a reload makes it fetch its slice
            assert (await a_client.post("/", content=b'{"SigMetadata": {"ID": "TRC-1"}, "n": 1}')).status_code == 200
            await eventually(lambda: registry.runners["runner-a"].events == 1)
            reload = await c_client.get("/reload", headers={"Authorization": f"Bearer {controller.node.api_key()}"})
            assert reload.status_code == 200
            await eventually(lambda: registry.runners["runner-a"].config_fetches > fetches)
            for subscription in (everything, a_inbox, reports, config_requests):
                with pytest.raises(TransportError):
                    await subscription.next(timeout=0.5)

        # Forged reports under runner-a's name: refused; under its own subject the name is its own.
        forged = ExecutionReport(runner="runner-a", route="findings", action="hook-a", action_type="webhook",
                                 event_id="forged", ok=True, attempts=1, started_at=0.0, duration=0.1)
        await refused_request(rogue, runner_subject("runner-a", EXECUTIONS_KIND), forged.to_json(),
                              headers={HEADER_EVENT_ID: "exec:forged-1"})
        await refused_request(rogue, runner_subject("runner-a", EVENTS_KIND), b'{"forged": true}',
                              headers={HEADER_RUNNER: "runner-a", HEADER_EVENT_ID: "forged-1"})
        await refused_request(rogue, EVENTS_SUBJECT, b'{"forged": true}',
                              headers={HEADER_RUNNER: "runner-a", HEADER_EVENT_ID: "forged-2"})
        answer = await rogue.request(runner_subject("runner-b", EXECUTIONS_KIND), forged.to_json(),
                                     headers={HEADER_EVENT_ID: "exec:forged-3"}, timeout=10)
        assert answer.data == b"ack"
        assert registry.executions[-1].event_id == "forged" and registry.executions[-1].runner == "runner-b"
        assert [r.event_id for r in registry.executions if r.runner == "runner-a"].count("forged") == 0
        assert registry.runners["runner-a"].events == 1

        # Fifty fake runners: refused; the registry knows runner-a and runner-b only.
        for n in range(50):
            beat = Heartbeat(runner=f"fake-{n}", sent_at=0.0)
            await rogue.publish(HEARTBEAT_SUBJECT, beat.to_json())
            await rogue.publish(runner_subject(f"fake-{n}", HEARTBEAT_KIND), beat.to_json())
        await violation(rogue, runner_subject("fake-49", HEARTBEAT_KIND))
        await rogue.publish(runner_subject("runner-b", HEARTBEAT_KIND),
                            Heartbeat(runner="fake-own", sent_at=0.0).to_json())  # control: its own subject works
        await eventually(lambda: "runner-b" in registry.runners)
        assert set(registry.runners) == {"runner-a", "runner-b"}

        # Answering runner-a in the controller's stead, and announcing a change: refused.
        await rogue.publish(f"{runner_inbox_prefix('runner-a')}.forged.reply", b"routes: []")
        await violation(rogue, f"{runner_inbox_prefix('runner-a')}.forged.reply")
        fetches = registry.runners["runner-a"].config_fetches
        await rogue.publish(CONFIG_CHANGED_SUBJECT, b"forged")
        await violation(rogue, CONFIG_CHANGED_SUBJECT)
        await rogue.publish(runner_config_subject("runner-a"), b"forged")
        await violation(rogue, runner_config_subject("runner-a"))
        assert registry.runners["runner-a"].config_fetches == fetches
        assert runner_a.current is not None and runner_a.current.version == controller.slice_version("runner-a")
        assert set(runner_a.node.pipeline.actions) == {"hook-a"}

        # Its reports cannot add metric series at will: an action name not in the configuration is `other`.
        for n in range(20):
            made_up = attrs.evolve(forged, action=f"made-up-{n}", event_id=f"made-up-{n}")
            await rogue.request(runner_subject("runner-b", EXECUTIONS_KIND), made_up.to_json(),
                                headers={HEADER_EVENT_ID: f"exec:made-up-{n}"}, timeout=10)

        # What /metrics shows comes from verified runners and the configuration only.
        metrics = (await c_client.get("/metrics")).text
        assert 'runner="runner-a"' in metrics and "fake-" not in metrics and "made-up-" not in metrics
        assert 'postee_runner_executions_total{action="other",runner="runner-b",status="ok"} 20.0' in metrics


ROGUE_REPLIES = """
import asyncio, sys
import nats

async def main(url, seed):
    nc = await nats.connect(url, nkeys_seed=seed, inbox_prefix="_INBOX.runner.runner-b")
    # its own config request, naming reply subjects it may not publish on itself
    for reply in ("postee.runner.runner-a.config", "postee.config.changed", "postee.config.changed.runner-a",
                  "postee.runner.runner-a.events", "_INBOX.runner.runner-a.stolen"):
        await nc.publish("postee.runner.runner-b.config", b"runner-b", reply=reply)
    answer = await nc.request("postee.runner.runner-b.config", b"runner-b", timeout=10)  # a control
    print(len(answer.data))
    await nc.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_the_controller_answers_only_in_the_senders_inbox(tmp_path):
    """A requester names its reply subject and nats-server does not check it: the controller must not
    answer (with its rights) on another runner's subjects, an announcement or another inbox."""
    link, a_seed, b_seed, _ = keyed_setup(tmp_path)
    with structlog.testing.capture_logs() as logs:
        async with controller_node(tmp_path, link, CFG) as (controller, _), \
                runner_node(tmp_path, LinkOptions(url=link.url, seed_file=str(a_seed)), "runner-a"):
            registry = controller.registry
            await eventually(lambda: registry.runners.get("runner-a") is not None
                             and registry.runners["runner-a"].heartbeats > 0)
            before = attrs.evolve(registry.runners["runner-a"])
            rogue = await trio.run_process([sys.executable, "-c", ROGUE_REPLIES, link.url, str(b_seed)],
                                           capture_stdout=True, capture_stderr=True, check=False)
            assert rogue.returncode == 0, rogue.stderr.decode()[-2000:]
            assert int(rogue.stdout) > 0  # its own request was answered, after the five others were handled
            after = registry.runners["runner-a"]
            assert (after.config_fetches, after.events) == (before.config_fetches, before.events)
    refused = [e for e in logs if e["event"] == "no answer: the reply subject is not the sender's inbox"]
    assert len(refused) == 5


async def test_the_shared_seed_of_postees_mode_still_works_but_cannot_act_as_the_controller(tmp_path):
    link, a_seed, _, shared_seed = keyed_setup(tmp_path, shared=True)
    assert shared_seed is not None
    with structlog.testing.capture_logs() as logs:
        async with controller_node(tmp_path, link, CFG) as (controller, _), \
                runner_node(tmp_path, LinkOptions(url=link.url, seed_file=str(a_seed)), "runner-a"), \
                open_nats_transport(link.url, name="postee-go-runner", nkey_seed_file=str(shared_seed)) as shared:
            registry = controller.registry
            # A Postee runner (shared seed, Postee's subjects) still bootstraps and reports.
            sliced = await shared.request(CONFIG_SUBJECT, b"runner-b", timeout=10)
            assert SECRET_B in sliced.data.decode()
            await shared.publish(EVENTS_SUBJECT, b'{"SigMetadata": {"ID": "TRC-9"}}')
            await eventually(lambda: "postee-runner" in registry.runners and registry.runners["postee-runner"].events)
            # It cannot answer config requests, reply in an inbox, announce a change, or touch runner-a.
            async with shared.subscribe(CONFIG_SUBJECT):
                await violation(shared, CONFIG_SUBJECT)
            for subject in ("_INBOX.someone.reply", CONFIG_CHANGED_SUBJECT, runner_config_subject("runner-b")):
                await shared.publish(subject, b"routes: []")
                await violation(shared, subject)
            await refused_request(shared, runner_subject("runner-a", CONFIG_KIND), b"runner-a")
            # ... nor by naming it on Postee's shared subjects, which the seed may use
            with pytest.raises(TransportError):
                await shared.request(CONFIG_SUBJECT, b"runner-a", timeout=1.5)
            events_before = registry.runners["runner-a"].events
            forged = await shared.request(EVENTS_SUBJECT, b'{"forged": true}', timeout=10,
                                          headers={HEADER_RUNNER: "runner-a", HEADER_EVENT_ID: "e-1"})
            assert forged.data == b"ack"  # taken, so a sender does not resend it, and dropped
            assert registry.runners["runner-a"].events == events_before
            assert "forged" not in controller.node.recent.to_json()
            async with shared.subscribe(f"{runner_inbox_prefix('runner-a')}.>"):
                await violation(shared, f"{runner_inbox_prefix('runner-a')}.>")
            # `_INBOX.>` is the seed's (Postee runners' inboxes), but replies to runner-a are filtered out
            async with shared.subscribe("_INBOX.>") as inboxes:
                fetches = registry.runners["runner-a"].config_fetches
                await controller.transport.publish(runner_config_subject("runner-a"), b"fetch again")
                await eventually(lambda: registry.runners["runner-a"].config_fetches > fetches)
                with pytest.raises(TransportError):
                    await inboxes.next(timeout=0.5)
    assert any("any holder of it can fetch any runner's configuration" in entry["event"] for entry in logs)


async def test_an_open_bus_on_a_public_address_is_refused_unless_asked_for(tmp_path):
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(CFG)
    options = node_options(tmp_path, "controller", str(cfg))
    with trio.fail_after(10), pytest.raises(NatsServerConfigError, match="--insecure-bus"):
        await run_controller(options, LinkOptions(url=f"nats://0.0.0.0:{free_port()}"))
    assert not (tmp_path / "controller" / "webhooks.db.nats").exists()  # refused before anything started
    # asked for explicitly, it runs (warned)
    with structlog.testing.capture_logs() as logs:
        async with controller_node(tmp_path, LinkOptions(url=f"nats://0.0.0.0:{free_port()}", insecure_bus=True),
                                   CFG):
            pass
    assert any("no authentication (--insecure-bus)" in entry["event"] for entry in logs)


async def test_runners_added_to_the_keys_file_may_connect_after_a_reload_and_none_before(tmp_path):
    """An empty keys file does not open the bus: only the controller may use it. A runner added to the
    file may connect once the controller reloads (nats-server reloads its users), and is verified."""
    keys = tmp_path / "keys.yaml"
    keys.write_text("# runners to come\n")
    a_seed = tmp_path / "a.seed"
    a_key = write_seed(a_seed)
    link = LinkOptions(url=f"nats://0.0.0.0:{free_port()}", runner_keys=str(keys))  # beyond loopback: no refusal
    a_link = LinkOptions(url=link.url.replace("0.0.0.0", "127.0.0.1"), seed_file=str(a_seed))
    async with controller_node(tmp_path, link, CFG) as (controller, c_client):
        for options in ({}, {"nkey_seed_file": str(a_seed)}):  # anonymous, then runner-a before it is added
            with pytest.raises(TransportError, match="(?i)authorization"):
                async with open_nats_transport(a_link.url, name="early", connect_timeout=5, **options):
                    pass
        keys.write_text(yaml.safe_dump({"runner-a": a_key}))
        auth = {"Authorization": f"Bearer {controller.node.api_key()}"}
        assert (await c_client.get("/reload", headers=auth)).status_code == 200
        async with runner_node(tmp_path, a_link, "runner-a") as (runner_a, _):
            assert set(runner_a.node.pipeline.actions) == {"hook-a"}
        assert controller.options.verified_runners == frozenset({"runner-a"})
        keys.write_text("runner-a: not-a-key\n")  # a broken file: the reload is refused, the keys stay
        refused = await c_client.get("/reload", headers=auth)
        assert refused.status_code == 422 and "runner-a" in refused.text
        assert controller.options.verified_runners == frozenset({"runner-a"})


def test_the_cli_refuses_an_open_public_bus_with_the_reason(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    result = subprocess.run(
        [sys.executable, "-m", "postee", f"--cfgfile={cfg}", "--controller-mode", "--url=127.0.0.1:0", "--tls=off",
         f"--controller-url=nats://0.0.0.0:{free_port()}"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PATH_TO_DB": str(tmp_path / "db")},
    )
    assert result.returncode != 0
    assert "--insecure-bus" in result.stderr and "Traceback" not in result.stderr


def test_postee_nkey_writes_a_private_seed_and_prints_the_keys_file_line(tmp_path):
    seed = tmp_path / "runner-1.seed"
    made = subprocess.run([sys.executable, "-m", "postee", "nkey", "--name", "runner 1", str(seed)],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    assert seed.stat().st_mode & 0o777 == 0o600
    assert seed.read_text().strip() not in made.stdout + made.stderr  # the seed is never printed
    keys = tmp_path / "keys.yaml"
    keys.write_text(made.stdout)
    ((name, public),) = read_runner_keys(keys)
    assert name == "runner 1" and public.startswith("U")
    shown = subprocess.run([sys.executable, "-m", "postee", "nkey", "--show", str(seed)],
                           capture_output=True, text=True, timeout=60)
    assert shown.stdout.strip() == public
    again = subprocess.run([sys.executable, "-m", "postee", "nkey", str(seed)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode != 0 and "cannot create" in again.stderr


def test_a_runner_keys_file_is_checked_and_never_echoes_a_seed(tmp_path):
    seed = new_user_seed().decode()
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"runner-1: {seed}\n")
    with pytest.raises(RunnerKeysError, match="runner-1") as caught:
        read_runner_keys(keys)
    assert seed not in str(caught.value)
    public = public_key_from_seed(seed.encode())
    keys.write_text(f"runner-1: {public}\nrunner-2: {public}\n")
    with pytest.raises(RunnerKeysError, match="same key"):
        read_runner_keys(keys)
