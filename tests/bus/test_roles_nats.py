"""Controller and runners over a real nats-server: bootstrap, security, outages, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
import yaml

from postee.bus.nats_transport import open_nats_transport
from postee.bus.protocol import CONFIG_SUBJECT, runner_inbox_prefix
from postee.roles.launch import LinkOptions
from postee.roles.runner import Runner, RunnerOptions
from tests.bus.link_helpers import controller_node, free_port, runner_node
from tests.daemon.helpers import admin_get, pipeline_settled
from tests.helpers.http_sink import open_http_sink
from tests.roles.helpers import FAST_BACKOFF, acknowledged, eventually, node_options, secrets_config
from tests.roles.tcp_proxy import TcpProxy
from tests.roles.test_memory_bus import seed_config, tracee

# Postee's integration test configuration (its Slack action stands in as a webhook: the Slack action
# type arrives with the remaining actions).
INTEGRATION_CFG = """
routes:
  - name: terminate-and-notify
    input: contains(input.SigMetadata.ID, "TRC-2")
    actions: [terminate-pod, send-slack-message]
    template: raw-json
templates:
  - name: raw-json
    rego-package: postee.rawmessage.json
actions:
  - name: stdout
    type: stdout
    enable: true
  - name: terminate-pod
    type: exec
    enable: true
    runs-on: test-runner-1
    exec-script: |
      #!/bin/sh
      echo "terminating $POSTEE_EVENT"
  - name: send-slack-message
    type: webhook
    enable: true
    url: SLACK_URL
"""


def security(kind: str, tls_material, nkey_seed_file) -> tuple[LinkOptions, LinkOptions]:
    """(controller link, runner link) for 'plain', 'tls' or 'tls+seed' on a free port."""
    url = f"nats://127.0.0.1:{free_port()}"
    if kind == "plain":
        return LinkOptions(url=url), LinkOptions(url=url)
    tls = {"ca_root": str(tls_material.ca_root)}
    seed = {"seed_file": str(nkey_seed_file.path)} if kind.endswith("+seed") else {}
    controller = LinkOptions(url=url, tls_cert=str(tls_material.server_cert), tls_key=str(tls_material.server_key),
                             **tls, **seed)
    runner = LinkOptions(url=url, tls_cert=str(tls_material.client_cert), tls_key=str(tls_material.client_key),
                         **tls, **seed)
    return controller, runner


@pytest.mark.parametrize("kind", ["plain", "tls", "tls+seed"])
async def test_runner_gets_exactly_its_slice(tmp_path, tls_material, nkey_seed_file, kind):
    controller_link, runner_link = security(kind, tls_material, nkey_seed_file)
    async with controller_node(tmp_path, controller_link,
                               INTEGRATION_CFG.replace("SLACK_URL", "http://127.0.0.1:9/")) as (controller, _):
        # never terminate-pod; nor stdout, which no route lists (issue #12: unused entries are not loaded)
        assert set(controller.node.pipeline.actions) == {"send-slack-message"}
        async with open_nats_transport(
            runner_link.url, name="probe", tls_ca=runner_link.ca_root, tls_cert=runner_link.tls_cert,
            tls_key=runner_link.tls_key, nkey_seed_file=runner_link.seed_file,
        ) as transport:
            reply = await transport.request(CONFIG_SUBJECT, b"test-runner-1", timeout=10)
        sliced = yaml.safe_load(reply.data)
        assert sliced["routes"] == [{"name": "terminate-and-notify",
                                     "input": 'contains(input.SigMetadata.ID, "TRC-2")',
                                     "actions": ["terminate-pod"], "template": "raw-json"}]
        assert [a["name"] for a in sliced["actions"]] == ["terminate-pod"]
        assert [t["name"] for t in sliced["templates"]] == ["raw-json"]
        async with runner_node(tmp_path, runner_link, "test-runner-1") as (runner, _):
            assert set(runner.node.pipeline.actions) == {"terminate-pod"}


def runner_process(tmp_path: Path, link: LinkOptions, name: str = "test-runner-1") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEE_", "AQUAALERT_"))}
    env["PATH_TO_DB"] = str(tmp_path / f"{name}-proc" / "webhooks.db")
    args = [sys.executable, "-m", "postee", f"--controller-url={link.url}", f"--runner-name={name}",
            "--url=127.0.0.1:0", "--tls=off"]
    for flag, value in (("--runner-ca-cert", link.ca_root), ("--runner-tls-cert", link.tls_cert),
                        ("--runner-tls-key", link.tls_key), ("--runner-seed-file", link.seed_file)):
        if value:
            args.append(f"{flag}={value}")
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("problem", ["wrong seed", "no client certificate", "untrusted CA"])
async def test_refused_runner_exits_with_a_clear_message(tmp_path, tls_material, nkey_seed_file, problem):
    controller_link, runner_link = security("tls+seed", tls_material, nkey_seed_file)
    if problem == "wrong seed":
        runner_link = LinkOptions(url=runner_link.url, ca_root=runner_link.ca_root, tls_cert=runner_link.tls_cert,
                                  tls_key=runner_link.tls_key, seed_file=str(nkey_seed_file.wrong_path))
    elif problem == "no client certificate":
        runner_link = LinkOptions(url=runner_link.url, ca_root=runner_link.ca_root, seed_file=runner_link.seed_file)
    else:
        runner_link = LinkOptions(url=runner_link.url, ca_root=runner_link.ca_root,
                                  tls_cert=str(tls_material.untrusted_client_cert),
                                  tls_key=str(tls_material.untrusted_client_key), seed_file=runner_link.seed_file)
    async with controller_node(tmp_path, controller_link,
                               INTEGRATION_CFG.replace("SLACK_URL", "http://127.0.0.1:9/")) as (controller, client):
        result = await trio.to_thread.run_sync(runner_process, tmp_path, runner_link)
        assert result.returncode == 1, result.stderr[-2000:]
        assert "refused this runner" in result.stderr
        assert nkey_seed_file.seed.decode() not in result.stderr + result.stdout
        assert nkey_seed_file.wrong_seed.decode() not in result.stderr + result.stdout
        assert (await client.get("/readyz")).status_code == 200  # the controller keeps running


async def test_controller_down_events_kept_then_delivered_once(tmp_path):
    port = free_port()
    link = LinkOptions(url=f"nats://127.0.0.1:{port}")
    async with open_http_sink() as controller_sink, open_http_sink() as runner_sink:
        cfg = seed_config(controller_sink.url, runner_sink.url)
        async with trio.open_nursery() as outer:
            async with controller_node(tmp_path, link, cfg):
                outer_runner = await outer.start(_run_runner_until_cancelled, tmp_path, link)
                runner, r_client = outer_runner
            # the controller (and its nats-server) is gone now
            for n in range(200):
                assert (await r_client.post("/", content=tracee("TRC-2", n))).status_code == 200
            await eventually(lambda: len(runner_sink.requests) == 200, timeout=120)
            assert controller_sink.requests == []
            async with controller_node(tmp_path, link, cfg) as (controller, c_client):
                await eventually(lambda: len(controller_sink.requests) == 200, timeout=180)
                await eventually(lambda: controller.registry.runners.get("postee-runner-1") is not None
                                 and controller.registry.runners["postee-runner-1"].executions == 400, timeout=180)
                # quiet: every event and execution report acknowledged (a resend after a lost
                # acknowledgement is answered before that), and the controller done with every event
                await eventually(lambda: acknowledged(runner, 200, 400) and pipeline_settled(controller.node, 200),
                                 timeout=60)
                assert len(controller_sink.requests) == 200  # each processed once
                numbers = [e["event"]["n"] for e in (await admin_get(c_client, controller.node, "/events")).json()
                           if e["source"] == "postee-runner-1"]
                assert numbers == list(range(200))
            outer.cancel_scope.cancel()


async def _run_runner_until_cancelled(tmp_path, link, *, task_status=trio.TASK_STATUS_IGNORED):
    async with runner_node(tmp_path, link, "postee-runner-1") as (runner, client):
        task_status.started((runner, client))
        await trio.sleep_forever()


async def test_killed_nats_server_is_restarted_and_nothing_is_lost(tmp_path):
    port = free_port()
    link = LinkOptions(url=f"nats://127.0.0.1:{port}")
    async with open_http_sink() as controller_sink, open_http_sink() as runner_sink:
        cfg = seed_config(controller_sink.url, runner_sink.url)
        async with controller_node(tmp_path, link, cfg) as (controller, c_client), \
                runner_node(tmp_path, link, "postee-runner-1") as (runner, r_client):
            for n in range(10):
                await r_client.post("/", content=tracee("TRC-2", n))
            await eventually(lambda: len(controller_sink.requests) == 10, timeout=60)
            server = controller.nats_server
            first_pid = server.pid
            os.kill(first_pid, signal.SIGKILL)
            for n in range(10, 30):
                await r_client.post("/", content=tracee("TRC-2", n))
            await eventually(lambda: len(controller_sink.requests) == 30, timeout=120)
            await eventually(lambda: acknowledged(runner, 30, 60) and pipeline_settled(controller.node, 30),
                             timeout=60)
            assert len(controller_sink.requests) == 30
            numbers = [e["event"]["n"] for e in (await admin_get(c_client, controller.node, "/events")).json()]
            assert numbers == list(range(30))
            assert json.loads((await admin_get(c_client, controller.node, "/runners")).text)[0]["state"] == "up"
            assert server.pid != first_pid and server.starts == 2  # restarted by its supervisor


async def test_runner_started_before_the_controller_connects_once_it_is_up(tmp_path):
    port = free_port()
    link = LinkOptions(url=f"nats://127.0.0.1:{port}")
    cfg = INTEGRATION_CFG.replace("SLACK_URL", "http://127.0.0.1:9/")
    async with trio.open_nursery() as outer:
        # the runner goes through a cut proxy: each attempt is closed at once until the controller is up
        proxy = await outer.start(TcpProxy(port).run)
        proxy.cut()
        async with trio.open_nursery() as nursery:
            ready = trio.Event()

            async def runner_side():
                async with runner_node(tmp_path, LinkOptions(url=proxy.url), "test-runner-1") as (runner, client):
                    assert set(runner.node.pipeline.actions) == {"terminate-pod"}
                    assert (await admin_get(client, runner.node, "/readyz")).json()["checks"]["controller_link"] is True
                    ready.set()

            nursery.start_soon(runner_side)
            await eventually(lambda: proxy.attempts >= 2, timeout=60)  # the runner tried, and tried again
            assert not ready.is_set()
            async with controller_node(tmp_path, link, cfg):
                proxy.restore()
                with trio.fail_after(90):
                    await ready.wait()
                proxy.cut()  # before the server goes: the proxy would have nothing to forward to
        outer.cancel_scope.cancel()


def test_controller_and_runner_modes_exclude_each_other(tmp_path):
    result = subprocess.run([sys.executable, "-m", "postee", "--controller-mode", "--runner-name", "r1",
                             "--controller-url", "nats://127.0.0.1:4222"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and "exclude each other" in result.stderr


async def test_a_runner_cut_off_while_the_controller_reloads_converges_after_reconnecting(tmp_path):
    """The runner's link (through a proxy) is down while the controller reloads: it misses the
    broadcast, and must still end up running its new slice once the link is back."""
    port = free_port()
    cfg = seed_config("http://127.0.0.1:9", "http://127.0.0.1:9")
    async with controller_node(tmp_path, LinkOptions(url=f"nats://127.0.0.1:{port}"), cfg) as (
        controller, c_client
    ), trio.open_nursery() as nursery:
        proxy = await nursery.start(TcpProxy(port).run)
        async with open_nats_transport(proxy.url, name="postee-runner-postee-runner-1",
                                       inbox_prefix=runner_inbox_prefix("postee-runner-1")) as transport:
            options = RunnerOptions("postee-runner-1", node_options(tmp_path, "postee-runner-1"),
                                    heartbeat_interval=0.3, backoff=FAST_BACKOFF)
            runner = Runner(options, transport)
            async with trio.open_nursery() as runner_side:
                with trio.fail_after(60):
                    await runner_side.start(runner.run)
                info = controller.registry.runners
                await eventually(lambda: "postee-runner-1" in info and info["postee-runner-1"].heartbeats > 0)
                assert "runner-only-route" in runner.node.pipeline.routes

                proxy.cut()
                await transport.wait_disconnected(timeout=30)
                (tmp_path / "controller.yaml").write_text(
                    cfg.replace("- name: runner-only-route", "- name: renamed-runner-route"))
                assert (await c_client.get("/reload", params={"key": controller.node.api_key()})).status_code == 200
                runners = (await admin_get(c_client, controller.node, "/runners")).json()
                entry = {e["name"]: e for e in runners}["postee-runner-1"]
                assert entry["config_current"] is False
                fetches, beats = info["postee-runner-1"].config_fetches, info["postee-runner-1"].heartbeats
                proxy.restore()
                await transport.wait_connected(timeout=30)
                # a new fetch, or a few heartbeats from a runner that did not ask: whichever comes first
                await eventually(lambda: info["postee-runner-1"].config_fetches > fetches
                                 or info["postee-runner-1"].heartbeats >= beats + 4, timeout=60)
                assert info["postee-runner-1"].config_fetches > fetches, "the runner stayed on its old slice"
                await eventually(lambda: "renamed-runner-route" in runner.node.pipeline.routes, timeout=60)
                await eventually(lambda: {e["name"]: e for e in json.loads(controller.registry.runners_json())}
                                 ["postee-runner-1"]["config_current"] is True, timeout=30)
                assert proxy.connections >= 2  # it did reconnect through the proxy
                runner.request_stop()
                with trio.fail_after(30):
                    await runner.node.stopped.wait()
        nursery.cancel_scope.cancel()


def start_runner_process(tmp_path: Path, url: str, name: str, port: int, extra_env: dict[str, str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEE_", "AQUAALERT_", "RUNNER_"))}
    env |= {"PATH_TO_DB": str(tmp_path / f"{name}-proc" / "webhooks.db"), **extra_env}
    log = (tmp_path / f"{name}.log").open("w")
    args = [sys.executable, "-m", "postee", f"--controller-url={url}", f"--runner-name={name}",
            f"--url=127.0.0.1:{port}", "--tls=off"]
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


async def test_secrets_stay_on_their_runner_and_runner_problems_show_on_the_controller(tmp_path):
    """Over a real nats-server, runners as real processes: the controller starts without the runner's
    secrets; a runner missing one disables that action only; a runner named in no `runs-on` says so;
    a rejected reload leaves the slices alone."""
    link = LinkOptions(url=f"nats://127.0.0.1:{free_port()}")
    async with open_http_sink() as sink:
        cfg = secrets_config(sink.url)
        # the controller's environment (node_options: PATH only) has no RUNNER_* variable
        async with controller_node(tmp_path, link, cfg) as (controller, c_client):
            runner_port = free_port()
            runner = start_runner_process(tmp_path, link.url, "runner-1", runner_port,
                                          {"RUNNER_HOOK_URL": f"{sink.url}/secret"})  # no RUNNER_TOKEN
            typo = start_runner_process(tmp_path, link.url, "runner-typo", free_port(), {})
            try:
                await eventually(lambda: {"runner-1", "runner-typo"} <= {
                    name for name, info in controller.registry.runners.items() if info.heartbeats}, timeout=60)
                entries = {e["name"]: e for e in (await admin_get(c_client, controller.node, "/runners")).json()}
                assert entries["runner-1"]["actions"] == 1 and entries["runner-1"]["config_current"] is True
                (problem,) = entries["runner-1"]["problems"]
                assert "'with-secret' disabled" in problem and "RUNNER_TOKEN" in problem
                assert entries["runner-typo"]["actions"] == 0
                (problem,) = entries["runner-typo"]["problems"]
                assert "runs-on: runner-typo" in problem

                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner_port}", timeout=10) as r_client:
                    answer = await r_client.post("/", content=json.dumps({"SigMetadata": {"ID": "TRC-1"}, "n": 7}))
                    assert answer.status_code == 200
                requests = await sink.wait_for(2, timeout=30)
                assert sorted(r.path for r in requests) == ["/central", "/plain"]

                async with open_nats_transport(link.url, name="probe") as probe:
                    before = await probe.request(CONFIG_SUBJECT, b"runner-1", timeout=10)
                    broken_rule = 'input: "not rego((("'  # the new pipeline cannot be built: 422
                    (tmp_path / "controller.yaml").write_text(cfg.replace("- name: findings", "- name: renamed")
                                                              .replace('input: contains(input.SigMetadata.ID, "TRC-")',
                                                                       broken_rule))
                    assert (await c_client.get("/reload", params={"key": controller.node.api_key()})).status_code == 422
                    after = await probe.request(CONFIG_SUBJECT, b"runner-1", timeout=10)
                assert after.data == before.data
            finally:
                codes = await trio.to_thread.run_sync(lambda: (stop_process(runner), stop_process(typo)))
        assert codes == (0, 0)
        runner_log = (tmp_path / "runner-1.log").read_text()
        assert len([line for line in runner_log.splitlines() if "RUNNER_TOKEN" in line]) == 1, runner_log[-3000:]
        typo_log = (tmp_path / "runner-typo.log").read_text()
        assert len([line for line in typo_log.splitlines() if "runs-on: runner-typo" in line]) == 1, typo_log[-3000:]
