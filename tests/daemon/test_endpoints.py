"""The webhook and admin endpoints over real HTTP."""

import json

import trio

from tests.daemon.helpers import STDOUT_ONLY, admin_headers, event_bytes, running_node, webhook_route
from tests.helpers.http_sink import Reply, open_http_sink


async def test_ping_health_ready_metrics(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY) as (node, client):
        ping = await client.get("/ping")
        assert (ping.status_code, ping.text) == (200, "Postee alive!")
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert (await client.post("/", content=b'{"a": 1}')).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'postee_events_received_total{source="webhook"} 1.0' in metrics
        assert 'postee_mailbox_depth{mailbox="intake"}' in metrics
        assert (await client.get("/nope")).status_code == 404


async def test_ingest_answers_like_postee_and_rejects_bad_input(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY, max_body=1000) as (node, client):
        ok = await client.post("/", content=b'{"image": "alpine:3.19"}')
        assert (ok.status_code, ok.text) == (200, '""')
        assert (await client.post("/scan", content=b'{"image": "x"}')).status_code == 200
        bad = await client.post("/", content=b'{"image": ')
        assert bad.status_code == 400 and "invalid JSON" in bad.text
        not_object = await client.post("/", content=b"[1, 2]")
        assert not_object.status_code == 400 and "JSON object" in not_object.text
        too_big = await client.post("/", content=b'{"a": "' + b"x" * 2000 + b'"}')
        assert too_big.status_code == 413
        assert (await client.get("/ping")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'postee_events_rejected_total{reason="invalid"} 2.0' in metrics
        assert 'postee_events_rejected_total{reason="too_large"} 1.0' in metrics


async def test_events_endpoint_is_valid_json_with_backticks_rewritten(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY) as (node, client):
        for i in range(3):
            await client.post("/", content=json.dumps({"n": i, "text": "use `rm -rf`"}).encode())
        events = (await client.get("/events", headers=admin_headers(node))).json()
        assert [e["event"]["n"] for e in events] == [0, 1, 2]
        assert events[0]["event"]["text"] == "use 'rm -rf'"
        assert all(e["source"] == "webhook" and e["id"] for e in events)


async def test_ingest_token_protects_intake(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY, environ={"POSTEE_INGEST_TOKEN": "s3cret"}) as (node, client):
        assert (await client.post("/", content=b"{}")).status_code == 401
        auth = {"authorization": "Bearer s3cret"}
        assert (await client.post("/", content=b"{}", headers=auth)).status_code == 200
        assert (await client.get("/events", headers=auth)).status_code == 401  # reading needs the API key
        assert (await client.get("/events", headers=admin_headers(node))).status_code == 200
        assert (await client.get("/ping")).status_code == 200


async def test_full_intake_answers_503_with_retry_after(tmp_path):
    async with open_http_sink(default=Reply(200, delay=1.0)) as sink:
        cfg = webhook_route(f"{sink.url}/hook", route="slow", serialize=True)
        async with running_node(tmp_path, cfg, intake_capacity=1, mailbox_capacity=1, stop_grace=0.5) as (node, client):
            statuses = []
            # every stage holds a few (the router decides up to 4 events ahead, the route prepares 4):
            # 30 one-second events are more than all of them together
            for i in range(30):
                response = await client.post("/", content=json.dumps({"n": i}).encode())
                statuses.append(response.status_code)
                if response.status_code == 503:
                    assert response.headers["retry-after"] == "1"
            assert 503 in statuses and statuses[0] == 200
            metrics = (await client.get("/metrics")).text
            assert 'postee_events_rejected_total{reason="busy"}' in metrics


async def test_a_full_intake_refuses_without_parsing_and_keeps_the_connection(tmp_path):
    """Under a burst most requests are refused: their bodies are read (the connection stays usable) but
    not parsed (issue #15: parsing each took the CPU the accepted events needed). So a malformed body is
    answered 503 while intake is full, and a body over the limit still 413."""
    async with open_http_sink(default=Reply(200, delay=1.0)) as sink:
        cfg = webhook_route(f"{sink.url}/hook", route="slow", serialize=True)
        async with running_node(tmp_path, cfg, intake_capacity=1, mailbox_capacity=1, stop_grace=0.5,
                                max_body=1000) as (node, client):
            for i in range(30):  # as above: more than every stage holds
                if (await client.post("/", content=json.dumps({"n": i}).encode())).status_code == 503:
                    break
            else:
                raise AssertionError("intake never full")
            host, port = node.urls[0].removeprefix("http://").rsplit(":", 1)
            with trio.fail_after(10):
                stream = await trio.open_tcp_stream(host, int(port))
                async with stream:  # one connection: the refused request's body read, the next one answered
                    answers = await _exchange(stream, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n"
                                                      b'{"n": ', b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answers[0].startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answers[0].lower()
            assert answers[1].startswith(b"HTTP/1.1 200 ") and answers[1].endswith(b"Postee alive!")
            assert (await client.post("/", content=b'{"a": "' + b"x" * 2000 + b'"}')).status_code == 413
            metrics = (await client.get("/metrics")).text
            assert 'postee_events_rejected_total{reason="invalid"}' not in metrics
            assert 'postee_events_rejected_total{reason="too_large"} 1.0' in metrics


async def _exchange(stream: trio.SocketStream, *requests: bytes) -> list[bytes]:
    """Send each request on the one connection and read its answer (head and Content-Length body)."""
    answers, buffer = [], b""
    for request in requests:
        await stream.send_all(request)
        for _ in range(100):  # bounded: an answer is a few reads at most
            head, found, rest = buffer.partition(b"\r\n\r\n")
            if found:
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                if len(rest) >= length:
                    answers.append(head + b"\r\n\r\n" + rest[:length])
                    buffer = rest[length:]
                    break
            data = await stream.receive_some(65536)
            assert data, f"connection closed after {len(answers)} answers"
            buffer += data
    return answers


async def test_tenant_runs_one_route_synchronously(tmp_path):
    async with open_http_sink() as sink:
        cfg = f"""
routes:
  - name: alpine-only
    input: contains(input.image, "alpine")
    actions: [hook]
    template: raw
  - name: other
    actions: [hook]
    template: raw
templates:
  - name: raw
    rego-package: postee.rawmessage.json
actions:
  - name: hook
    type: webhook
    enable: true
    url: {sink.url}/hook
"""
        async with running_node(tmp_path, cfg) as (node, client):
            response = await client.post("/tenant/alpine-only", content=b'{"image": "alpine:3"}')
            assert response.status_code == 200
            outcome = response.json()
            assert outcome["matched"] is True and outcome["actions"]["hook"]["ok"] is True
            assert len(sink.requests) == 1  # done when the answer came, and only that route ran
            miss = (await client.post("/tenant/alpine-only", content=b'{"image": "debian"}')).json()
            assert miss["matched"] is False
            assert (await client.post("/tenant/nope", content=b"{}")).status_code == 404


async def test_reload_with_good_and_bad_config(tmp_path):
    async with open_http_sink() as sink:
        cfg_v1 = STDOUT_ONLY
        cfg_v2 = webhook_route(f"{sink.url}/v2", route="to-sink")
        async with running_node(tmp_path, cfg_v1, environ={"POSTEE_API_KEY": "k1"}) as (node, client):
            assert (await client.get("/reload", params={"key": "wrong"})).status_code == 403
            (tmp_path / "cfg.yaml").write_text(cfg_v2)
            reloaded = await client.get("/reload", params={"key": "k1"})
            assert reloaded.status_code == 200, reloaded.text
            await client.post("/", content=b'{"v": 2}')
            (request,) = await sink.wait_for(1)
            assert request.path == "/v2"
            (tmp_path / "cfg.yaml").write_text(cfg_v2.replace("actions: [hook]", "actions: [nothere]"))
            rejected = await client.get("/reload", params={"key": "k1"})
            assert rejected.status_code == 422 and "unknown action 'nothere'" in rejected.text
            await client.post("/", content=b'{"v": 3}')
            await sink.wait_for(2)  # the running config stayed in place
            assert node.config.routes[0].actions == ("hook",)


async def test_api_key_is_generated_once_and_persisted(tmp_path):
    async with running_node(tmp_path, STDOUT_ONLY) as (node, client):
        first = node.api_key()
    async with running_node(tmp_path, STDOUT_ONLY) as (node, client):
        assert node.api_key() == first and len(first) >= 20
        assert (await client.get("/reload", params={"key": first})).status_code == 200


async def test_trivy_event_reaches_stdout(tmp_path, capfd):
    async with running_node(tmp_path, STDOUT_ONLY) as (node, client):
        assert (await client.post("/", content=event_bytes("trivy-input.json"))).status_code == 200
        with trio.fail_after(10):
            while node.pipeline.actions["out"].sent_ok < 1:
                await trio.sleep(0.02)
    assert '"ArtifactName": "pom.xml"' in capfd.readouterr().out


async def test_https_listener_generates_a_self_signed_certificate_once(tmp_path):
    import ssl

    import httpx

    async with running_node(tmp_path, STDOUT_ONLY, https_bind="127.0.0.1:0") as (node, client):
        (tls_url,) = node.tls_urls
        cert = tmp_path / "db" / "postee-selfsigned.crt"
        assert cert.exists() and (tmp_path / "db" / "postee-selfsigned.key").stat().st_mode & 0o777 == 0o600
        context = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=context) as tls_client:
            response = await tls_client.get(tls_url.replace("https://127.0.0.1", "https://localhost") + "/ping")
            assert response.text == "Postee alive!"
        first = cert.read_bytes()
    async with running_node(tmp_path, STDOUT_ONLY, https_bind="127.0.0.1:0"):
        assert cert.read_bytes() == first
