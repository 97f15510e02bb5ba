"""The pagerduty action against a local server speaking PagerDuty's Events API v2 (POST /v2/enqueue → 202)."""

import hashlib
import json
from datetime import UTC, datetime

import pytest

from postee.actions import ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.base import ActionConfigError
from postee.actions.pagerduty import (
    DEFAULT_EVENTS_URL,
    MAX_SUMMARY,
    PagerDutyAction,
    severity,
    timestamp,
)
from postee.values.eventkeys import dedup_key
from tests.helpers.http_sink import Reply, open_http_sink

ROUTING_KEY = "R0ut1ngK3yR0ut1ngK3yR0ut1ngK3y12"
AUTH_TOKEN = "u+AUTHTOKEN-never-sent"
ACCEPTED = Reply(202, '{"status":"success","message":"Event processed","dedup_key":"k"}')
INVALID = Reply(
    400,
    '{"status":"invalid event","message":"Event object is invalid",'
    '"errors":["Length of \'routing_key\' is incorrect (should be 32 characters)","\'payload.summary\' is missing"]}',
)
EVENT = {
    "image": "alpine:3.18",
    "registry": "Docker Hub",
    "resources": [{"resource": {"name": "openssl", "version": "3.1.0"}}],
}
DETAILS = {"image": "alpine:3.18", "critical": 2}
DELIVERY = Delivery(
    content={
        "title": "alpine:3.18 vulnerability scan report",
        "description": json.dumps(DETAILS),
        "severity": "High",
        "date": "1700000000",
        "url": "https://aqua.example.com/#/images/Docker%20Hub/alpine%3A3.18/vulns",
    },
    event=EVENT,
    route="vulns-route",
    event_id="6f1c0ffee",
)


def pagerduty_spec(url, **settings):
    return ActionSpec(
        name="my-pagerduty",
        type="pagerduty",
        settings={
            "pagerduty-auth-token": AUTH_TOKEN,
            "pagerduty-routing-key": ROUTING_KEY,
            "events-url": url,
            "retry-backoff": "0.01s",
            **settings,
        },
    )


def pagerduty(url, **settings):
    return PagerDutyAction.from_spec(pagerduty_spec(url, **settings))


async def test_triggers_an_event_field_by_field():
    async with open_http_sink([ACCEPTED]) as sink:
        async with pagerduty(f"{sink.url}/v2/enqueue") as action:
            result = await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    assert (result.status, json.loads(result.output)["status"]) == (202, "success")
    assert (request.method, request.path) == ("POST", "/v2/enqueue")
    assert request.header("content-type") == "application/json"
    assert request.header("authorization") is None  # the Events API authenticates by routing key
    assert AUTH_TOKEN not in request.text
    assert request.json() == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "vulns-route/6f1c0ffee",
        "payload": {
            "summary": "alpine:3.18 vulnerability scan report",
            "source": "alpine:3.18",
            "severity": "error",
            "timestamp": "2023-11-14T22:13:20+00:00",
            "custom_details": DETAILS,
        },
        "links": [{"href": DELIVERY.content["url"], "text": DELIVERY.content["url"]}],
    }


async def test_defaults_when_the_content_says_little():
    delivery = Delivery(content={"title": "Tracee alert", "description": "plain text"}, event={}, route="r")
    before = datetime.now(UTC)
    async with open_http_sink([ACCEPTED]) as sink:
        async with pagerduty(sink.url) as action:
            await action.send(delivery)
        [request] = await sink.wait_for(1)
    after = datetime.now(UTC)
    body = request.json()
    assert "dedup_key" not in body and "links" not in body
    payload = body["payload"]
    assert (payload["source"], payload["severity"], payload["custom_details"]) == ("postee", "critical", "plain text")
    assert before <= datetime.fromisoformat(payload["timestamp"]) <= after


async def test_dedup_key_from_dedup_props_like_unique_message_props():
    props = ["image", "resources.resource.name"]
    async with open_http_sink([ACCEPTED, ACCEPTED]) as sink:
        async with pagerduty(sink.url, **{"dedup-props": props}) as action:
            await action.send(DELIVERY)
            await action.send(Delivery(content=DELIVERY.content, event={"other": 1}, route="r2", event_id="e2"))
        first, second = await sink.wait_for(2)
    assert first.json()["dedup_key"] == "alpine:3.18-openssl" == dedup_key(EVENT, props)
    assert second.json()["dedup_key"] == "r2/e2"  # none of the props present: per-event key


def test_overlong_dedup_key_is_hashed():
    long_name = "n" * 300
    action = PagerDutyAction.from_spec(pagerduty_spec("http://127.0.0.1/", **{"dedup-props": ["name"]}))
    key = action.dedup_key(Delivery(content={}, event={"name": long_name}))
    assert key == hashlib.sha256(long_name.encode()).hexdigest()


async def test_long_summary_is_cut():
    delivery = Delivery(content={"title": "T" * 5000, "description": ""}, route="r", event_id="e")
    async with open_http_sink([ACCEPTED]) as sink:
        async with pagerduty(sink.url) as action:
            await action.send(delivery)
        [request] = await sink.wait_for(1)
    summary = request.json()["payload"]["summary"]
    assert len(summary) == MAX_SUMMARY and summary.endswith("…")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("critical", "critical"),
        ("CRITICAL", "critical"),
        ("high", "error"),
        ("medium", "warning"),
        ("low", "info"),
        ("negligible", "info"),
        ("info", "info"),
        ("warning", "warning"),
        ("unknown", "critical"),
        (None, "critical"),
        ("3", "critical"),
    ],
)
def test_severity_mapping(content, expected):
    assert severity(content) == expected


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("1700000000", "2023-11-14T22:13:20+00:00"),
        (1700000000, "2023-11-14T22:13:20+00:00"),
        ("1700000000123", "2023-11-14T22:13:20.123000+00:00"),
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00+00:00"),
        ("2024-05-01T10:00:00+02:00", "2024-05-01T10:00:00+02:00"),
        ("2024-05-01 10:00:00", "2024-05-01T10:00:00+00:00"),
    ],
)
def test_timestamp_from_content_date(date, expected):
    assert timestamp(date) == expected


@pytest.mark.parametrize("date", [None, "", "0", "yesterday", True])
def test_timestamp_falls_back_to_now(date):
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert timestamp(date, now) == "2025-01-02T03:04:05+00:00"


async def test_invalid_event_400_names_pagerduty_errors():
    async with open_http_sink([INVALID]) as sink:
        async with pagerduty(sink.url) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status) == (False, 1, 400)
    error = report.error
    assert not error.retryable
    assert "invalid event" in error.message
    assert "Length of 'routing_key' is incorrect (should be 32 characters)" in error.message
    assert "'payload.summary' is missing" in error.message
    assert ROUTING_KEY not in error.message and AUTH_TOKEN not in error.message
    assert len(sink.requests) == 1


async def test_429_is_retried_honouring_retry_after():
    throttled = Reply(
        429,
        '{"status":"throttle event","message":"Requests for this service are arriving too quickly"}',
        headers=(("Retry-After", "0"),),
    )
    async with open_http_sink([throttled, ACCEPTED]) as sink:
        async with pagerduty(sink.url) as action:
            seen = []
            report = await send_with_retries(action, DELIVERY, on_attempt=seen.append)
    assert (report.ok, report.attempts, report.status) == (True, 2, 202)
    assert (seen[0].error.retryable, seen[0].error.status, seen[0].error.retry_after) == (True, 429, 0.0)
    first, second = sink.requests
    assert first.json()["dedup_key"] == second.json()["dedup_key"] == "vulns-route/6f1c0ffee"


async def test_5xx_is_retried_per_policy():
    async with open_http_sink(default=Reply(500, "Internal Server Error")) as sink:
        async with pagerduty(sink.url, retries=2) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status) == (False, 3, 500)
    assert report.error.retryable
    assert len(sink.requests) == 3


async def test_timeout_is_retryable_and_the_retry_reuses_the_dedup_key():
    async with open_http_sink([Reply(202, delay=10.0), ACCEPTED]) as sink:
        async with pagerduty(sink.url, timeout="0.2s", retries=1) as action:
            seen = []
            report = await send_with_retries(action, DELIVERY, on_attempt=seen.append)
        assert (report.ok, report.attempts) == (True, 2)
        assert seen[0].error.retryable and "timed out" in seen[0].error.message
        first, second = sink.requests
    assert first.json()["dedup_key"] == second.json()["dedup_key"]


async def test_missing_title_fails_without_sending():
    async with open_http_sink([ACCEPTED]) as sink:
        async with pagerduty(sink.url) as action:
            with pytest.raises(ActionError) as info:
                await action.send(Delivery(content={"description": "x"}))
    assert not info.value.retryable and "title" in info.value.message
    assert sink.requests == []


def test_defaults_and_secrets():
    spec = ActionSpec(name="pd", type="pagerduty", settings={"pagerduty-routing-key": ROUTING_KEY})
    action = PagerDutyAction.from_spec(spec)
    assert action.events_url == DEFAULT_EVENTS_URL == "https://events.pagerduty.com/v2/enqueue"
    assert action.dedup_props == ()
    assert ROUTING_KEY not in repr(action)


def test_missing_routing_key_is_named():
    spec = ActionSpec(name="pd", type="pagerduty", settings={"pagerduty-auth-token": AUTH_TOKEN})
    with pytest.raises(ActionConfigError) as info:
        PagerDutyAction.from_spec(spec)
    assert info.value.problems == [("pagerduty-routing-key", "required")]
    assert "actions[pd].pagerduty-routing-key: required" in str(info.value)


def test_every_config_problem_is_reported():
    spec = ActionSpec(
        name="pd", type="pagerduty", settings={"events-url": "not a url", "dedup-props": {"a": 1}, "retries": -1}
    )
    with pytest.raises(ActionConfigError) as info:
        PagerDutyAction.from_spec(spec)
    keys = sorted(key for key, _ in info.value.problems)
    assert keys == ["dedup-props", "events-url", "pagerduty-routing-key", "retries"]
