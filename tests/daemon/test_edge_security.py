"""Secure by default at the HTTP edge (issue #11, point 4), over real HTTP against a real node.

Reading endpoints and `/reload` need the API key (`Authorization: Bearer <key>`); `/tenant/{route}`
checks the ingest token before it looks the route up, shows action output only to the API key, and is
bounded (concurrent runs, a timeout). `--open-events` gives Postee's open `GET /events` back.
"""

import functools
import os
import stat

import trio

from postee.web.selfsigned import ensure_self_signed
from tests.daemon.helpers import STDOUT_ONLY, admin_headers, running_node, webhook_route
from tests.helpers.http_sink import Reply, open_http_sink

EXEC_ROUTE = """
routes:
  - name: run-it
    actions: [script]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: script
    type: exec
    enable: true
    exec-script: |
      echo "the-script-printed-SECRET-42"
      exit 3
"""

TOKEN = {"authorization": "Bearer ingest-t0ken"}


async def test_events_need_the_api_key_even_without_an_ingest_token(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY) as (node, client):
        assert (await client.post("/", content=b'{"n": 1234567}')).status_code == 200
        anonymous = await client.get("/events")
        assert anonymous.status_code == 401 and "1234567" not in anonymous.text
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert (await client.get("/events", headers={"authorization": "Bearer wrong"})).status_code == 401
        authorized = await client.get("/events", headers=admin_headers(node))
        assert authorized.status_code == 200 and [e["event"]["n"] for e in authorized.json()] == [1234567]


async def test_the_ingest_token_does_not_read_events(tmp_path):
    environ = {"POSTEE_INGEST_TOKEN": "ingest-t0ken"}
    async with running_node(tmp_path, STDOUT_ONLY, environ=environ) as (node, client):
        assert (await client.post("/", content=b"{}", headers=TOKEN)).status_code == 200
        assert (await client.get("/events", headers=TOKEN)).status_code == 401
        assert (await client.get("/events", headers=admin_headers(node))).status_code == 200
        # the API key is the stronger credential: it is accepted on the webhook too
        assert (await client.post("/", content=b"{}", headers=admin_headers(node))).status_code == 200


async def test_open_events_switch_gives_postee_open_events_back(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY, open_events=True) as (node, client):
        await client.post("/", content=b'{"n": 2}')
        assert [e["event"]["n"] for e in (await client.get("/events")).json()] == [2]
        assert (await client.get("/runners")).status_code == 404  # only /events is opened
    environ = {"POSTEE_OPEN_EVENTS": "1", "POSTEE_INGEST_TOKEN": "ingest-t0ken"}
    async with running_node(tmp_path, STDOUT_ONLY, environ=environ) as (node, client):
        # as open as the webhook: with an ingest token set, that token reads them
        assert (await client.get("/events")).status_code == 401
        assert (await client.get("/events", headers=TOKEN)).status_code == 200


async def test_reload_takes_the_key_as_a_bearer_token_and_still_from_the_query(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY, environ={"POSTEE_API_KEY": "k1"}) as (node, client):
        assert (await client.get("/reload")).status_code == 403
        assert (await client.get("/reload", headers={"authorization": "Bearer nope"})).status_code == 403
        assert (await client.get("/reload", headers={"authorization": "Bearer k1"})).status_code == 200
        assert (await client.get("/reload", params={"key": "k1"})).status_code == 200  # Postee's form


async def test_readyz_status_is_open_but_its_details_need_the_key(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY) as (node, client):
        anonymous = await client.get("/readyz")
        assert anonymous.status_code == 200 and anonymous.json() == {"ready": True}
        detailed = (await client.get("/readyz", headers=admin_headers(node))).json()
        assert detailed["ready"] is True and detailed["checks"]["config"] is True
        for path in ("/healthz", "/ping", "/metrics"):
            assert (await client.get(path)).status_code == 200, path


async def test_runners_and_executions_need_the_key(tmp_path):
    from actors.testing import InMemoryBus
    from tests.roles.helpers import running_controller

    bus = InMemoryBus()
    async with running_controller(tmp_path, STDOUT_ONLY, bus.connect("controller")) as (controller, client):
        for path in ("/runners", "/executions"):
            anonymous = await client.get(path)
            assert anonymous.status_code == 401, path
            authorized = await client.get(path, headers=admin_headers(controller.node))
            assert authorized.status_code == 200 and authorized.json() == [], path


async def test_tenant_checks_the_token_before_looking_the_route_up(tmp_path):
    environ = {"POSTEE_INGEST_TOKEN": "ingest-t0ken"}
    async with running_node(tmp_path, STDOUT_ONLY, environ=environ) as (node, client):
        unknown = await client.post("/tenant/no-such-route", content=b"{}")
        known = await client.post("/tenant/all", content=b"{}")
        assert (unknown.status_code, unknown.text) == (known.status_code, known.text) == (
            401, "missing or wrong bearer token\n")
        assert (await client.post("/tenant/no-such-route", content=b"{}", headers=TOKEN)).status_code == 404
        assert (await client.post("/tenant/all", content=b"{}", headers=TOKEN)).status_code == 200


async def test_tenant_shows_action_output_only_to_the_api_key(tmp_path):
    async with running_node(tmp_path, EXEC_ROUTE) as (node, client):
        anonymous = await client.post("/tenant/run-it", content=b'{"image": "x"}')
        assert anonymous.status_code == 200
        assert "SECRET-42" not in anonymous.text
        assert anonymous.json() == {"route": "run-it", "matched": True, "dropped": None,
                                    "actions": {"script": {"ok": False, "attempts": 1}}}
        admin = await client.post("/tenant/run-it", content=b'{"image": "x"}', headers=admin_headers(node))
        action = admin.json()["actions"]["script"]
        assert action["ok"] is False and "exited with status 3" in action["error"]
        assert "the-script-printed-SECRET-42" in action["output"]


async def test_tenant_runs_are_limited_and_answer_503_when_full(tmp_path):
    async with open_http_sink(default=Reply(200, delay=1.5)) as sink:
        cfg = webhook_route(f"{sink.url}/hook", route="slow")
        async with running_node(tmp_path, cfg, tenant_concurrency=1, stop_grace=0.5) as (node, client):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(client.post, "/tenant/slow", content=b"{}"))
                await sink.wait_for(1)  # the first run holds the only slot
                full = await client.post("/tenant/slow", content=b"{}")
                assert full.status_code == 503 and full.headers["retry-after"] == "1"
                assert len(sink.requests) == 1
                nursery.cancel_scope.cancel()
            metrics = (await client.get("/metrics")).text
            assert 'postee_events_rejected_total{reason="busy"} 1.0' in metrics


async def test_tenant_run_gives_up_after_its_timeout(tmp_path):
    async with open_http_sink(default=Reply(200, delay=5.0)) as sink:
        cfg = webhook_route(f"{sink.url}/hook", route="slow")
        async with running_node(tmp_path, cfg, tenant_timeout=0.5, stop_grace=0.5) as (node, client):
            with trio.fail_after(4):
                response = await client.post("/tenant/slow", content=b"{}")
            assert response.status_code == 504
            assert response.json()["route"] == "slow" and "0.5" in response.json()["error"]


async def test_a_slow_tenant_body_gives_its_slot_back_after_the_tenant_timeout(tmp_path):
    """A client that takes a slot and then sends its body byte by byte (or never) keeps it only for
    the tenant timeout; then it is answered 408 and the next run gets the slot."""
    cfg = webhook_route("http://127.0.0.1:9/hook", route="slow")
    async with running_node(tmp_path, cfg, tenant_concurrency=1, tenant_timeout=1.0, stop_grace=0.5) as (
        node, client
    ):
        host, port = node.urls[0].removeprefix("http://").rsplit(":", 1)
        stalled = await trio.open_tcp_stream(host, int(port))
        async with stalled:
            await stalled.send_all(b"POST /tenant/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            with trio.fail_after(10):
                while (await client.post("/tenant/slow", content=b"{}")).status_code == 503:
                    await trio.sleep(0.1)  # the slot is the stalled client's until its timeout
            with trio.fail_after(10):
                answer = await stalled.receive_some(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]


def test_self_signed_key_mode_is_set_even_when_the_key_exists(tmp_path):
    db = tmp_path / "db" / "webhooks.db"
    previous = os.umask(0o022)
    try:
        cert, key = ensure_self_signed(db)
        os.chmod(key, 0o644)
        assert ensure_self_signed(db) == (cert, key)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
