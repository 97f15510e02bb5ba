"""The opsgenie action against a local server speaking Opsgenie's alert API (POST /v2/alerts → 202)."""

import json

import pytest

from postee.actions import ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.base import ActionConfigError
from postee.actions.opsgenie import (
    DEFAULT_API_URL,
    MAX_DESCRIPTION,
    MAX_MESSAGE,
    MAX_TAGS,
    OpsgenieAction,
)
from tests.helpers.http_sink import Reply, open_http_sink

TOKEN = "eb243592-faa2-4ba2-a551q-1afdf565c889"
ACCEPTED = Reply(202, '{"result":"Request will be processed","took":0.302,"requestId":"43a29c5c-3dbf"}')
EVENT = {"image": "alpine:3.18", "registry": "Docker Hub", "resources": [{"resource": {"name": "openssl"}}]}
DELIVERY = Delivery(
    content={"title": "alpine:3.18 vulnerability scan report", "description": "Image name: alpine:3.18\ncritical: 2"},
    event=EVENT,
    route="vulns",
    event_id="e1",
)


def opsgenie_spec(url, **settings):
    return ActionSpec(
        name="my-opsgenie",
        type="opsgenie",
        settings={"token": TOKEN, "api-url": url, "retry-backoff": "0.01s", **settings},
    )


def opsgenie(url, **settings):
    return OpsgenieAction.from_spec(opsgenie_spec(url, **settings))


def with_description(description, title="t"):
    return Delivery(content={"title": title, "description": description}, event=EVENT, route="r", event_id="e")


async def test_creates_an_alert_field_by_field():
    settings = {
        "user": "postee-bot",
        "assignee": ["alice@example.com", "bob@example.com"],
        "recipients": ["carol@example.com"],
        "priority": "p2",
        "tags": ["security", "image"],
        "alias": "scan-event.input.image",
        "entity": "event.input.registry",
    }
    async with open_http_sink([ACCEPTED]) as sink:
        async with opsgenie(sink.url, **settings) as action:
            result = await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    assert (result.status, json.loads(result.output)["result"]) == (202, "Request will be processed")
    assert (request.method, request.path) == ("POST", "/v2/alerts")
    assert request.header("authorization") == f"GenieKey {TOKEN}"
    assert request.header("content-type") == "application/json"
    assert request.json() == {
        "message": "alpine:3.18 vulnerability scan report",
        "description": "Image name: alpine:3.18\ncritical: 2",
        "priority": "P2",
        "source": "postee",
        "alias": "scan-alpine:3.18",
        "entity": "Docker Hub",
        "tags": ["security", "image"],
        "responders": [
            {"type": "user", "username": "alice@example.com"},
            {"type": "user", "username": "bob@example.com"},
        ],
        "visibleTo": [{"type": "user", "username": "carol@example.com"}],
        "user": "postee-bot",
    }


async def test_minimal_config_sends_default_priority_and_no_optional_fields():
    async with open_http_sink([ACCEPTED]) as sink:
        async with opsgenie(f"{sink.url}/prefix/") as action:
            await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    assert request.path == "/prefix/v2/alerts"
    assert request.json() == {
        "message": DELIVERY.title,
        "description": DELIVERY.description,
        "priority": "P3",
        "source": "postee",
    }


def test_default_endpoint_is_opsgenie_us():
    action = OpsgenieAction.from_spec(ActionSpec(name="og", type="opsgenie", settings={"token": TOKEN}))
    assert DEFAULT_API_URL == "https://api.opsgenie.com"
    assert action.alerts_url == "https://api.opsgenie.com/v2/alerts"
    assert TOKEN not in repr(action)


async def test_long_fields_are_cut_to_opsgenie_limits():
    delivery = with_description("d" * (MAX_DESCRIPTION + 10), title="T" * 500)
    tags = [f"tag{i}" for i in range(MAX_TAGS + 5)] + ["x" * 80]
    async with open_http_sink([ACCEPTED]) as sink:
        async with opsgenie(sink.url, tags=tags) as action:
            await action.send(delivery)
        [request] = await sink.wait_for(1)
    alert = request.json()
    assert len(alert["message"]) == MAX_MESSAGE and alert["message"].endswith("…")
    assert len(alert["description"]) == MAX_DESCRIPTION and alert["description"].endswith("…")
    assert alert["tags"] == [f"tag{i}" for i in range(MAX_TAGS)]


async def test_json_description_overrides_the_settings():
    description = json.dumps(
        {
            "description": "3 critical vulnerabilities",
            "alias": "alpine-3.18",
            "entity": "registry/alpine",
            "priority": "p1",
            "tags": "critical, alpine",
        }
    )
    async with open_http_sink([ACCEPTED]) as sink:
        async with opsgenie(sink.url, alias="configured", entity="configured", priority="P4", tags=["cfg"]) as action:
            await action.send(with_description(description))
        [request] = await sink.wait_for(1)
    alert = request.json()
    assert alert["description"] == "3 critical vulnerabilities"
    assert (alert["alias"], alert["entity"], alert["priority"]) == ("alpine-3.18", "registry/alpine", "P1")
    assert alert["tags"] == ["critical", "alpine"]


async def test_json_object_without_description_or_other_keys_is_sent_whole():
    partial = json.dumps({"priority": "P5", "details": {"cves": 2}})
    unrelated = json.dumps({"image": "alpine", "cves": 2})
    async with open_http_sink([ACCEPTED, ACCEPTED]) as sink:
        async with opsgenie(sink.url, priority="P2") as action:
            await action.send(with_description(partial))
            await action.send(with_description(unrelated))
        first, second = await sink.wait_for(2)
    assert (first.json()["description"], first.json()["priority"]) == (partial, "P5")
    assert (second.json()["description"], second.json()["priority"]) == (unrelated, "P2")


async def test_bad_priority_from_the_template_fails_without_sending():
    async with open_http_sink([ACCEPTED]) as sink:
        async with opsgenie(sink.url) as action:
            with pytest.raises(ActionError) as info:
                await action.send(with_description('{"priority": "urgent"}'))
    assert not info.value.retryable
    assert "urgent" in info.value.message
    assert sink.requests == []


async def test_missing_title_fails_without_sending():
    async with open_http_sink([ACCEPTED]) as sink:
        async with opsgenie(sink.url) as action:
            with pytest.raises(ActionError) as info:
                await action.send(with_description("body", title=" "))
    assert not info.value.retryable and "title" in info.value.message
    assert sink.requests == []


async def test_422_is_not_retryable_and_keeps_opsgenie_message():
    reply = Reply(422, '{"message":"Request body is not processable. Please check the errors.","took":0.01}')
    async with open_http_sink([reply]) as sink:
        async with opsgenie(sink.url) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status) == (False, 1, 422)
    assert not report.error.retryable
    assert "not processable" in report.error.message
    assert TOKEN not in report.error.message
    assert len(sink.requests) == 1


async def test_401_bad_key_is_not_retried():
    async with open_http_sink([Reply(401, '{"message":"Key format is not valid!"}')]) as sink:
        async with opsgenie(sink.url) as action:
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
    assert (info.value.status, info.value.retryable) == (401, False)
    assert TOKEN not in str(info.value)


async def test_5xx_is_retried_per_policy():
    async with open_http_sink(default=Reply(503)) as sink:
        async with opsgenie(sink.url, retries=2) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status) == (False, 3, 503)
    assert report.error.retryable
    assert len(sink.requests) == 3
    assert all(r.json()["message"] == DELIVERY.title for r in sink.requests)


async def test_5xx_then_accepted():
    async with open_http_sink([Reply(500), ACCEPTED]) as sink:
        async with opsgenie(sink.url) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status) == (True, 2, 202)


async def test_429_is_retried():
    async with open_http_sink([Reply(429, headers=(("Retry-After", "0"),)), ACCEPTED]) as sink:
        async with opsgenie(sink.url) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts) == (True, 2)


async def test_timeout_is_retryable():
    async with open_http_sink([Reply(202, delay=10.0)]) as sink:
        async with opsgenie(sink.url, timeout="0.2s", retries=0) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts) == (False, 1)
        assert report.error.retryable and "timed out" in report.error.message
        assert len(sink.requests) == 1


def test_missing_token_is_named():
    with pytest.raises(ActionConfigError) as info:
        OpsgenieAction.from_spec(ActionSpec(name="og", type="opsgenie", settings={"user": "x"}))
    assert info.value.problems == [("token", "required")]
    assert "actions[og].token: required" in str(info.value)


def test_every_config_problem_is_reported():
    spec = ActionSpec(
        name="og",
        type="opsgenie",
        settings={"priority": "P9", "api-url": "ftp://x", "tags": {"a": 1}, "timeout": "0s"},
    )
    with pytest.raises(ActionConfigError) as info:
        OpsgenieAction.from_spec(spec)
    assert sorted(key for key, _ in info.value.problems) == ["api-url", "priority", "tags", "timeout", "token"]
