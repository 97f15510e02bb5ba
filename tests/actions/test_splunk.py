"""The splunk action against a real local HTTP(S) server speaking HEC's event endpoint."""

import json

import pytest

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.registry import action_class
from postee.actions.splunk import NOTE_KEY, SplunkAction, collector_url
from tests.helpers.http_sink import Reply, open_http_sink, open_https_sink

TOKEN = "8d2f0a5e-hec-token"
SUCCESS = Reply(200, '{"text":"Success","code":0}')
EVENT = {
    "image": "alpine:3.18",
    "registry": "Aqua",
    "vulnerability_summary": {"critical": 1, "high": 2},
    "note": "ünïcode",
}


def delivery(event):
    """As the raw-message-json template renders it: the event as the description."""
    return Delivery(content={"title": "-", "description": json.dumps(event)}, event=event, route="splunk-route")


def splunk_spec(url, **settings):
    return ActionSpec(
        name="my-splunk", type="splunk", settings={"url": url, "token": TOKEN, "retry-backoff": "0.01s", **settings}
    )


def build(spec):
    return SplunkAction.from_spec(spec)


def scan_event(resources=6000, malware=3000, sensitive=3000):
    """An Aqua scan with long resources, malware and sensitive_data parts (sizes in characters)."""
    return {
        "image": "all-in-one:3.5.19223",
        "resources": [{"name": "r" * resources}],
        "malware": [{"name": "m" * malware}],
        "sensitive_data": [{"path": "s" * sensitive}],
        "vulnerability_summary": {"critical": 1},
    }


async def test_sends_the_event_to_the_collector_field_by_field():
    async with open_http_sink([SUCCESS]) as sink:
        async with build(splunk_spec(sink.url)) as action:
            result = await action.send(delivery(EVENT))
        [request] = await sink.wait_for(1)
    assert (result.status, result.output) == (200, '{"text":"Success","code":0}')
    assert (request.method, request.path, request.query) == ("POST", "/services/collector", "")
    assert request.header("authorization") == f"Splunk {TOKEN}"
    assert request.header("content-type") == "application/json"
    assert request.json() == {"sourcetype": "_json", "event": EVENT}


@pytest.mark.parametrize(
    ("suffix", "path"),
    [
        ("/", "/services/collector"),
        ("/splunk", "/splunk/services/collector"),
        ("/services/collector", "/services/collector"),
        ("/services/collector/event/", "/services/collector/event"),
    ],
)
async def test_url_forms(suffix, path):
    async with open_http_sink([SUCCESS]) as sink:
        async with build(splunk_spec(sink.url + suffix)) as action:
            await action.send(delivery(EVENT))
        [request] = await sink.wait_for(1)
    assert request.path == path


def test_collector_url_keeps_the_query():
    assert collector_url("https://splunk:8088/?channel=c1") == "https://splunk:8088/services/collector?channel=c1"


async def test_a_description_that_is_not_json_is_a_text_event():
    text = "<p>Raw Message Received</p>"
    async with open_http_sink([SUCCESS]) as sink:
        async with build(splunk_spec(sink.url)) as action:
            await action.send(Delivery(content={"title": "t", "description": text}))
        [request] = await sink.wait_for(1)
    assert request.json() == {"sourcetype": "_json", "event": text}


async def test_an_event_under_the_limit_is_sent_whole():
    event = scan_event()
    async with open_http_sink([SUCCESS]) as sink:
        async with build(splunk_spec(sink.url, **{"size-limit": 100_000})) as action:
            await action.send(delivery(event))
        [request] = await sink.wait_for(1)
    assert request.json()["event"] == event


@pytest.mark.parametrize(
    ("limit", "removed"),
    [
        (8000, ["resources"]),
        (5000, ["resources", "malware"]),
        (2000, ["resources", "malware", "sensitive_data"]),
    ],
)
async def test_events_over_the_limit_are_trimmed_in_order_with_a_note(limit, removed):
    event = scan_event()
    async with open_http_sink([SUCCESS]) as sink:
        async with build(splunk_spec(sink.url, **{"size-limit": limit})) as action:
            await action.send(delivery(event))
        [request] = await sink.wait_for(1)
    assert len(request.body) <= limit
    sent = request.json()["event"]
    kept = [key for key in ("resources", "malware", "sensitive_data") if key not in removed]
    assert {key: value for key, value in sent.items() if key != NOTE_KEY} == {
        "image": event["image"],
        "vulnerability_summary": event["vulnerability_summary"],
        **{key: event[key] for key in kept},
    }
    original = len(json.dumps({"sourcetype": "_json", "event": event}, separators=(",", ":")))
    assert sent[NOTE_KEY] == (
        f"postee removed {', '.join(removed)} to fit the size limit of {limit} bytes (the event was {original} bytes)"
    )


async def test_the_default_limit_is_10000_bytes():
    async with open_http_sink([SUCCESS]) as sink:
        async with build(splunk_spec(sink.url)) as action:
            assert action.size_limit == 10000
            await action.send(delivery(scan_event(resources=11000, malware=10, sensitive=10)))
        [request] = await sink.wait_for(1)
    assert len(request.body) <= 10000
    sent = request.json()["event"]
    assert "resources" not in sent and "malware" in sent and sent[NOTE_KEY].startswith("postee removed resources ")


async def test_an_event_still_too_big_is_sent_anyway(caplog):
    event = {"image": "big", "layers": "x" * 3000, "resources": [1], "malware": [2]}
    async with open_http_sink([SUCCESS]) as sink:
        async with build(splunk_spec(sink.url, **{"size-limit": 1000})) as action:
            await action.send(delivery(event))
        [request] = await sink.wait_for(1)
    sent = request.json()["event"]
    assert sent["layers"] == event["layers"] and "resources" not in sent and "malware" not in sent
    assert sent[NOTE_KEY].startswith("postee removed resources, malware to fit")
    assert "over size-limit 1000 even trimmed" in caplog.text


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_4xx_is_not_retried(status):
    answer = '{"text":"Invalid token","code":4}'
    async with open_http_sink(default=Reply(status, answer)) as sink:
        async with build(splunk_spec(sink.url, retries=3)) as action:
            report = await send_with_retries(action, delivery(EVENT))
        assert (report.ok, report.attempts, report.status, report.output) == (False, 1, status, answer)
        assert not report.error.retryable
        assert TOKEN not in report.error.message
        assert len(sink.requests) == 1


async def test_server_busy_is_retried_per_policy():
    busy = Reply(503, '{"text":"Server is busy","code":9}')
    async with open_http_sink(default=busy) as sink:
        async with build(splunk_spec(sink.url, retries=2)) as action:
            report = await send_with_retries(action, delivery(EVENT))
        assert (report.ok, report.attempts, report.status) == (False, 3, 503)
        assert report.error.retryable
        assert len(sink.requests) == 3


async def test_5xx_then_success():
    async with open_http_sink([Reply(500), SUCCESS]) as sink:
        async with build(splunk_spec(sink.url)) as action:
            report = await send_with_retries(action, delivery(EVENT))
        assert (report.ok, report.attempts) == (True, 2)
        assert sink.requests[0].body == sink.requests[1].body


async def test_timeout():
    async with open_http_sink([Reply(200, delay=2.0)]) as sink:
        async with build(splunk_spec(sink.url, timeout="0.2s")) as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery(EVENT))
        await sink.wait_for(1)
    assert info.value.retryable
    assert "timed out" in info.value.message


async def test_tls_verify_by_default_rejects_an_unknown_ca():
    async with open_https_sink([SUCCESS]) as sink:
        async with build(splunk_spec(sink.url)) as action:
            assert action.verify is True
            with pytest.raises(ActionError) as info:
                await action.send(delivery(EVENT))
    assert not info.value.retryable
    assert "certificate verification failed" in info.value.message
    assert "tls-verify: false" in info.value.message
    assert sink.requests == []


async def test_tls_verify_true_rejects_an_unknown_ca():
    async with open_https_sink() as sink:
        async with build(splunk_spec(sink.url, **{"tls-verify": True})) as action:
            report = await send_with_retries(action, delivery(EVENT))
    assert (report.ok, report.attempts) == (False, 1)


async def test_tls_verify_false_accepts_an_unknown_ca():
    async with open_https_sink([SUCCESS]) as sink:
        async with build(splunk_spec(sink.url, **{"tls-verify": "false"})) as action:
            result = await action.send(delivery(EVENT))
        [request] = await sink.wait_for(1)
    assert result.status == 200
    assert request.header("authorization") == f"Splunk {TOKEN}"
    assert request.json()["event"] == EVENT


def test_missing_required_keys_are_all_named():
    with pytest.raises(ActionConfigError) as info:
        build(ActionSpec(name="splunk", type="splunk", settings={}))
    assert info.value.problems == [("url", "required"), ("token", "required")]
    assert str(info.value) == "actions[splunk].url: required; actions[splunk].token: required"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"size-limit": "big"}, "size-limit"),
        ({"size-limit": -1}, "size-limit"),
        ({"tls-verify": "maybe"}, "tls-verify"),
        ({"url": "splunk:8088"}, "url"),
        ({"retries": -1}, "retries"),
    ],
)
def test_bad_settings(settings, key):
    spec = splunk_spec("https://splunk.example:8088")
    with pytest.raises(ActionConfigError) as info:
        build(ActionSpec(name=spec.name, type=spec.type, settings={**spec.settings, **settings}))
    assert [problem_key for problem_key, _ in info.value.problems] == [key]
    assert TOKEN not in str(info.value)


def test_size_limit_zero_means_the_default():
    assert build(splunk_spec("https://splunk.example:8088", **{"size-limit": 0})).size_limit == 10000
    assert build(splunk_spec("https://splunk.example:8088", **{"size-limit": "20000"})).size_limit == 20000


def test_registered_case_insensitively():
    assert action_class("Splunk") is SplunkAction
