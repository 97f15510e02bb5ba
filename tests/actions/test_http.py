"""The http action against a real local HTTP server, checked field by field."""

import base64
import json

import pytest

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, build_action, send_with_retries
from postee.actions.jsonbody import NotJsonTemplate, compile_json_template
from postee.values.eventpath import substitute
from tests.helpers.http_sink import Reply, open_http_sink

EVENT = {
    "SigMetadata": {"ID": "TRC-2", "Name": "Anti-Debugging", "Properties": {"Severity": 3}},
    "Context": {"container": {"image": "nginx:1.25"}},
    "resources": [{"name": "first"}, {"name": "second"}],
    "count": 7,
    "flag": False,
    "obj": {"a": [1, 2]},
    "host": "node-1",
}
DELIVERY = Delivery(
    content={"title": "Alert", "description": "Tracee saw ünïcode <b>things</b>"},
    event=EVENT,
    route="tracee",
    event_id="e1",
)


def http_spec(url, **settings):
    return ActionSpec(name="my-http", type="http", settings={"url": url, "retry-backoff": "0.01s", **settings})


async def test_sends_method_headers_and_substituted_body():
    body = "\n".join(
        [
            "id=event.input.SigMetadata.ID name=event.input.SigMetadata.Name"
            " sev=event.input.SigMetadata.Properties.Severity",
            "image: event.input.Context.container.image.",
            "second: event.input.resources.1.name",
            "missing: [event.input.no.such.path]",
            "count=event.input.count flag=event.input.flag obj=event.input.obj",
            "at the end: event.input.host",
        ]
    )
    headers = {"X-Multi": ["one", "two"], "Authorization": ["Bearer secret"], "X-Number": [5]}
    async with open_http_sink([Reply(201, "created")]) as sink:
        spec = http_spec(f"{sink.url}/hooks/in?team=sec", method="put", headers=headers, **{"body-content": body})
        async with build_action(spec) as action:
            result = await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    assert (result.status, result.output) == (201, "created")
    assert request.method == "PUT"
    assert (request.path, request.query) == ("/hooks/in", "team=sec")
    assert request.header_values("x-multi") == ["one", "two"]
    assert request.header("authorization") == "Bearer secret"
    assert request.header("x-number") == "5"
    assert base64.b64decode(request.header("postee-event")).decode() == DELIVERY.description
    assert request.text.split("\n") == [
        "id=TRC-2 name=Anti-Debugging sev=3",
        "image: nginx:1.25.",
        "second: second",
        "missing: []",
        'count=7 flag=false obj={"a":[1,2]}',
        "at the end: node-1",
    ]


async def test_body_file_and_default_method(tmp_path):
    body_file = tmp_path / "body.json"
    body_file.write_text('{"rule": "event.input.SigMetadata.ID", "image": "event.input.Context.container.image"}')
    async with open_http_sink() as sink:
        async with build_action(http_spec(sink.url, **{"body-file": str(body_file)})) as action:
            await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    assert request.method == "POST"
    assert request.json() == {"rule": "TRC-2", "image": "nginx:1.25"}


async def test_no_body_configured_sends_an_empty_body():
    async with open_http_sink() as sink:
        async with build_action(http_spec(sink.url, method="GET")) as action:
            await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    assert (request.method, request.body) == ("GET", b"")
    assert request.header("postee-event") is not None


async def test_5xx_is_retried_until_success():
    async with open_http_sink([Reply(500, "boom"), Reply(503), Reply(200, "ok")]) as sink:
        async with build_action(http_spec(sink.url, retries=3)) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts, report.status, report.output) == (True, 3, 200, "ok")
        assert len(sink.requests) == 3


async def test_5xx_gives_up_after_the_retries():
    async with open_http_sink(default=Reply(502, "bad gateway")) as sink:
        async with build_action(http_spec(sink.url, retries=2)) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts, report.status) == (False, 3, 502)
        assert "HTTP 502" in report.error.message and report.error.retryable
        assert len(sink.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_4xx_is_not_retried(status):
    async with open_http_sink(default=Reply(status, "no")) as sink:
        async with build_action(http_spec(sink.url, retries=3)) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts, report.status, report.output) == (False, 1, status, "no")
        assert not report.error.retryable
        assert len(sink.requests) == 1


async def test_429_is_retried():
    async with open_http_sink([Reply(429, headers=(("Retry-After", "0"),)), Reply(200)]) as sink:
        async with build_action(http_spec(sink.url)) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts) == (True, 2)


async def test_request_timeout_is_retried():
    async with open_http_sink([Reply(200, delay=30.0), Reply(200, "second")]) as sink:
        async with build_action(http_spec(sink.url, timeout="0.3s", retries=1)) as action:
            seen = []
            report = await send_with_retries(action, DELIVERY, on_attempt=seen.append)
        assert (report.ok, report.attempts, report.output) == (True, 2, "second")
        assert seen[0].error.retryable and "timed out" in seen[0].error.message
        assert len(sink.requests) == 2


async def test_connection_refused_is_retryable(closed_port_url):
    async with build_action(http_spec(closed_port_url)) as action:
        with pytest.raises(ActionError) as info:
            await action.send(DELIVERY)
    assert info.value.retryable
    assert "127.0.0.1" in info.value.message


async def test_errors_do_not_leak_url_paths():
    async with open_http_sink(default=Reply(403)) as sink:
        async with build_action(http_spec(f"{sink.url}/services/T000/SECRET-TOKEN")) as action:
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
    assert "SECRET-TOKEN" not in str(info.value)
    assert info.value.status == 403


async def test_one_client_is_reused_across_sends():
    async with open_http_sink() as sink:
        async with build_action(http_spec(sink.url)) as action:
            client = action._client
            for _ in range(3):
                await action.send(DELIVERY)
            assert action._client is client
        assert action._client is None
        assert len(await sink.wait_for(3)) == 3


async def test_send_before_open_is_a_clear_error():
    action = build_action(http_spec("http://127.0.0.1:1/"))
    with pytest.raises(RuntimeError, match="open"):
        await action.send(DELIVERY)


def test_substitution_rules():
    event = {"a": {"b": "x"}, "n": None, "list": ["p", "q"], "s": "with event.input.a.b inside"}
    assert substitute("event.input.a.b-event.input.a.b", event) == "x-x"
    assert substitute("event.input.n|event.input.list|event.input.list.5|", event) == 'null|["p","q"]||'
    assert substitute("no references", event) == "no references"
    # values are pasted once, not substituted again
    assert substitute("event.input.s", event) == "with event.input.a.b inside"
    assert substitute("event.input.a", event) == json.dumps({"b": "x"}, separators=(",", ":"))


def test_keys_may_contain_inner_hyphens():
    event = {"aqua-server": "https://aqua", "image": {"repo-name": "nginx"}}
    assert (
        substitute("at event.input.aqua-server for event.input.image.repo-name-", event) == "at https://aqua for nginx-"
    )


# --- event values in a JSON body are data, never JSON syntax (issue #11, finding 2) -----------------

BREAKOUT = 'alpine", "from": "ATTACKER", "x": "'
HOSTILE_EVENT = {
    "image": BREAKOUT,
    "note": 'line one\nline two\r\n\t"quoted" \\ back\u2028slash \u0000 nul',
    "count": 7,
    "count_text": "7",
    "obj": {"a": [1, "two"], "b": None},
    "flag": True,
}
HOSTILE = Delivery(content={"title": "t", "description": "d"}, event=HOSTILE_EVENT)


async def sent_body(**settings) -> bytes:
    """The body the http action sent to a real local server for `HOSTILE`."""
    async with open_http_sink() as sink:
        async with build_action(http_spec(sink.url, **settings)) as action:
            await action.send(HOSTILE)
        [request] = await sink.wait_for(1)
    return request.body


async def test_a_value_inside_a_json_string_cannot_add_keys_or_break_the_json():
    template = '{"image": "event.input.image", "from": "postee", "note": "note: event.input.note!"}'
    body = await sent_body(**{"body-content": template})
    sent = json.loads(body)  # still JSON, whatever the event held
    assert list(sent) == ["image", "from", "note"]
    assert sent["image"] == BREAKOUT
    assert sent["from"] == "postee"
    assert sent["note"] == f"note: {HOSTILE_EVENT['note']}!"


async def test_a_json_body_file_is_escaped_too(tmp_path):
    body_file = tmp_path / "body.json"
    body_file.write_text('[\n  {"image": "event.input.image"},\n  "event.input.note"\n]\n')
    sent = json.loads(await sent_body(**{"body-file": str(body_file)}))
    assert sent == [{"image": BREAKOUT}, HOSTILE_EVENT["note"]]


async def test_a_placeholder_standing_as_a_json_value_is_inserted_as_that_value():
    template = """{
        "image": event.input.image,
        "count": event.input.count, "count_text": event.input.count_text,
        "obj": event.input.obj, "flag": event.input.flag,
        "missing": event.input.no.such.path,
        "list": [event.input.count, event.input.image],
        "inside": "obj=event.input.obj count=event.input.count"
    }"""
    sent = json.loads(await sent_body(**{"body-content": template}))
    assert sent == {
        "image": BREAKOUT,
        "count": 7,
        "count_text": "7",
        "obj": {"a": [1, "two"], "b": None},
        "flag": True,
        "missing": None,
        "list": [7, BREAKOUT],
        "inside": 'obj={"a":[1,"two"],"b":null} count=7',
    }


async def test_a_json_content_type_with_a_body_that_is_not_json_is_a_config_error():
    headers = {"Content-Type": ["application/json; charset=utf-8"]}
    spec = http_spec("http://127.0.0.1:1/", headers=headers, **{"body-content": 'image: "event.input.image"'})
    with pytest.raises(ActionConfigError) as info:
        build_action(spec)
    [(key, message)] = info.value.problems
    assert key == "body-content"
    assert "Content-Type" in message and "not a JSON document" in message
    # without references there is nothing to escape: the body is the user's own business
    build_action(http_spec("http://127.0.0.1:1/", headers=headers, **{"body-content": "ping"}))


async def test_a_body_that_is_not_json_keeps_plain_substitution():
    body = await sent_body(**{"body-content": "image=event.input.image count=event.input.count"})
    assert body.decode() == f"image={BREAKOUT} count=7"


async def test_header_values_are_never_taken_from_the_event():
    """Configured header values are sent as written; the description travels base64-encoded, so an
    event with CR/LF cannot add a header line."""
    delivery = Delivery(content={"title": "t", "description": "x\r\nX-Injected: yes"}, event=HOSTILE_EVENT)
    async with open_http_sink() as sink:
        spec = http_spec(sink.url, headers={"X-Image": ["event.input.image"]})
        async with build_action(spec) as action:
            await action.send(delivery)
        [request] = await sink.wait_for(1)
    assert request.header("x-image") == "event.input.image"
    assert request.header("x-injected") is None
    assert base64.b64decode(request.header("postee-event")).decode() == delivery.description


def test_json_template_edges():
    event = {"image": BREAKOUT, "text": "é\ud800x", "n": 3}
    escaped = compile_json_template(
        r'{"say": "\"event.input.image\"", "k-event.input.n": [event.input.n ,event.input.n]}'
    )
    assert json.loads(escaped.render(event)) == {"say": f'"{BREAKOUT}"', "k-3": [3, 3]}
    # a lone surrogate (valid in a JSON event, not in UTF-8) is escaped rather than breaking the body
    assert json.loads(compile_json_template('{"t": "event.input.text", "v": event.input.text}').render(event)) == {
        "t": "é\ud800x",
        "v": "é\ud800x",
    }
    not_json = [
        '{"a": 1} trailing',
        "event.input.n",
        '"event.input.image"',
        '{"a": 1event.input.n}',
        "{event.input.n: 1}",
    ]
    for template in not_json:
        with pytest.raises(NotJsonTemplate):
            compile_json_template(template)


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


async def test_non_finite_numbers_never_make_the_json_body_invalid():
    """JSON has no NaN or infinity: standing as a value (even nested) such a number is sent as null;
    inside a string its text is fine."""
    nan, inf = float("nan"), float("inf")
    event = {"n": nan, "big": inf, "small": -inf, "obj": {"a": [1, nan], "b": {"c": -inf}}, "ok": 1.5}
    template = """{
        "n": event.input.n, "big": event.input.big, "small": event.input.small,
        "obj": event.input.obj, "ok": event.input.ok, "text": "n=event.input.n big=event.input.big"
    }"""
    async with open_http_sink() as sink:
        async with build_action(http_spec(sink.url, **{"body-content": template})) as action:
            await action.send(Delivery(content={"title": "t", "description": "d"}, event=event))
        [request] = await sink.wait_for(1)
    assert json.loads(request.body, parse_constant=_no_constants) == {
        "n": None,
        "big": None,
        "small": None,
        "obj": {"a": [1, None], "b": {"c": None}},
        "ok": 1.5,
        "text": "n=NaN big=Infinity",
    }


async def test_a_header_value_that_is_not_ascii_is_a_config_error():
    """HTTP header values are bytes; httpx (and the lean client) encode them as ASCII, so a value like
    `Zürich` would fail every send at run time: it is refused at load time, named."""
    spec = http_spec("http://127.0.0.1:1/", headers={"X-Team": ["Zürich"]})
    with pytest.raises(ActionConfigError) as info:
        build_action(spec)
    [(key, message)] = info.value.problems
    assert key == "headers.X-Team" and "ASCII" in message
    build_action(http_spec("http://127.0.0.1:1/", headers={"X-Team": ["Zurich"]}))
