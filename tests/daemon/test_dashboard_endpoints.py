"""What the `/ui` dashboard reads, on a real listener: the page itself (open, no data, a strict
Content-Security-Policy), `/node`, `/executions` on every node, and `/events` without bodies."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from tests.daemon.test_feed_socket import bearer, failing_the_second_event, post_events, running_node, ws_url


async def get(node, path: str, key: bool = True) -> httpx.Response:
    headers = dict((k.decode(), v.decode()) for k, v in bearer(node)) if key else {}
    async with httpx.AsyncClient(base_url=node.urls[0], timeout=10) as client:
        return await client.get(path, headers=headers)


async def test_the_page_is_served_without_the_key_and_allows_only_its_own_script_and_style(tmp_path):
    async with running_node(tmp_path) as node:
        page = await get(node, "/ui", key=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert node.api_key() not in page.text  # the page holds no secret and no data
    csp = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    for kind in ("script", "style"):
        [inline] = re.findall(rf"<{kind}>(.*?)</{kind}>", page.text, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert csp[f"{kind}-src"] == f"'sha256-{digest}'"  # only that exact code runs
    assert "innerHTML" not in page.text and "http://" not in page.text and "https://" not in page.text
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_node_executions_and_event_summaries_need_the_key(tmp_path):
    async with running_node(tmp_path, failing_the_second_event()) as node:
        await post_events(node, 3)
        for path in ("/node", "/executions"):
            assert (await get(node, path, key=False)).status_code == 401
        about = (await get(node, "/node")).json()
        assert (about["name"], about["role"], about["routes"]) == ("standalone", "standalone", ["all"])
        executions = []
        for _ in range(100):  # bounded: the actions run behind the answers
            executions = (await get(node, "/executions")).json()
            if len(executions) == 3:
                break
            await trio.sleep(0.05)
        summaries = (await get(node, "/events?bodies=0&limit=2")).json()
        full = (await get(node, "/events")).json()
    assert [e["event"]["image"] for e in full] == ["img-0", "img-1", "img-2"]
    order = [e["id"] for e in full]
    assert {order.index(e["event_id"]): e["ok"] for e in executions} == {0: True, 1: False, 2: True}
    assert {(e["node"], e["route"], e["action"]) for e in executions} == {("standalone", "all", "hook")}
    assert [s["id"] for s in summaries] == [e["id"] for e in full[1:]]
    assert all(set(s) == {"id", "received_at", "source", "size", "routes", "failed"} for s in summaries)
    assert summaries[0]["size"] == len(json.dumps({"image": "img-1"}))


async def test_event_summaries_carry_the_routes_they_matched_and_odd_limits_are_ignored(tmp_path):
    async with running_node(tmp_path) as node:
        await post_events(node, 2)
        for _ in range(100):
            summaries = (await get(node, "/events?bodies=0")).json()
            if all("routes" in s for s in summaries):
                break
            await trio.sleep(0.05)
        assert [(s["routes"], s["failed"]) for s in summaries] == [(["all"], []), (["all"], [])]
        for odd in ("%C2%B2", "9" * 5000, "-1", "x"):  # not a plain small number: the whole list, never a 500
            answer = await get(node, f"/events?bodies=0&limit={odd}")
            assert answer.status_code == 200 and len(answer.json()) == 2


async def test_a_tenant_run_says_its_route_too(tmp_path):
    async with running_node(tmp_path) as node, \
            open_websocket_url(ws_url(node, "types=event"), extra_headers=bearer(node)) as ws:
        async with httpx.AsyncClient(base_url=node.urls[0], timeout=10) as client:
            assert (await client.post("/tenant/all", content=b'{"image": "x"}')).status_code == 200
        with trio.fail_after(10):
            said = [json.loads(await ws.get_message()) for _ in range(2)]
    assert [(m["stage"], m.get("routes")) for m in said] == [("accepted", None), ("routed", ["all"])]


@pytest.mark.parametrize("server", ["lean", "hypercorn"])
async def test_a_body_cut_short_by_the_client_leaving_is_not_an_event(tmp_path, server):
    """Found in review: a body that ended with the client's disconnect was parsed and accepted (the
    client, seeing a failure, sends it again: the event ran twice). Under either server."""
    async with running_node(tmp_path, environ={"POSTEE_HTTP_SERVER": server}) as node:
        host, port = node.urls[0].removeprefix("http://").split(":")
        sock = trio.socket.socket()
        await sock.connect((host, int(port)))
        await sock.send(b'POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"image": "half-sent"}')
        sock.close()  # 22 of the 100 bytes announced: the body never ended
        incomplete = 'postee_events_rejected_total{reason="incomplete"} 1.0'
        with trio.fail_after(10):
            while incomplete not in node.metrics.render().decode():  # the node saw the request end short
                await trio.sleep(0.05)
        await post_events(node, 1)  # a complete one after it is accepted as usual
        events = json.loads(node.recent_events_json())
    assert [e["event"] for e in events] == [{"image": "img-0"}]


async def test_a_tenant_runs_routes_are_listed_even_when_nobody_watched(tmp_path):
    """Found trying it as a user: events from `POST /tenant/{route}` showed no routes in `/events?bodies=0`
    when no feed client was connected at the time (their tally was kept only while watched)."""
    async with running_node(tmp_path) as node:
        async with httpx.AsyncClient(base_url=node.urls[0], timeout=10) as client:
            assert (await client.post("/tenant/all", content=b'{"image": "x"}')).status_code == 200
        [summary] = (await get(node, "/events?bodies=0")).json()
    assert (summary["routes"], summary["failed"]) == (["all"], [])
