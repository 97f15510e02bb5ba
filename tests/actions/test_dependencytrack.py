"""The dependencytrack action against a real local HTTP server answering as Dependency-Track's BOM API."""

import base64
import json

import pytest

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.dependencytrack import DependencyTrackAction, project_of
from tests.helpers.http_sink import Reply, open_http_sink

BOM = json.dumps(
    {
        "bomFormat": "CycloneDX",
        "specVersion": "1.4",
        "version": 1,
        "components": [{"type": "library", "bom-ref": "openssl@3.0.1", "name": "openssl", "version": "3.0.1"}],
    }
)
XML_BOM = '<?xml version="1.0"?>\n<bom xmlns="http://cyclonedx.org/schema/bom/1.1" version="1"><components/></bom>'
TOKEN = "3b2a3f0e-8f5a-4c3b-9d8e-0123456789ab"
ACCEPTED = Reply(200, json.dumps({"token": TOKEN}), headers=(("Content-Type", "application/json"),))
API_KEY = "odt_SECRETKEY"


def delivery(title="docker.io/library/nginx:1.25", description=BOM):
    return Delivery(content={"title": title, "description": description}, route="dt")


def dt_action(url, **settings):
    base = {"url": url, "dependency-track-api-key": API_KEY, "retry-backoff": "0.01s"}
    return DependencyTrackAction.from_spec(
        ActionSpec(name="my-dtrack", type="dependencytrack", settings={**base, **settings})
    )


async def test_uploads_the_bom_to_the_project_named_by_the_title():
    async with open_http_sink([ACCEPTED]) as sink:
        async with dt_action(sink.url + "/") as action:
            result = await action.send(delivery())
        [request] = await sink.wait_for(1)
    assert (request.method, request.path) == ("PUT", "/api/v1/bom")
    assert request.header("x-api-key") == API_KEY
    assert request.header("content-type") == "application/json"
    body = request.json()
    assert set(body) == {"projectName", "projectVersion", "autoCreate", "bom"}
    assert (body["projectName"], body["projectVersion"], body["autoCreate"]) == (
        "docker.io/library/nginx",
        "1.25",
        True,
    )
    assert base64.b64decode(body["bom"]).decode() == BOM
    assert result.status == 200
    assert TOKEN in result.output and "docker.io/library/nginx:1.25" in result.output


async def test_an_xml_bom_and_a_title_without_version():
    async with open_http_sink([ACCEPTED]) as sink:
        async with dt_action(f"{sink.url}/dtrack") as action:
            await action.send(delivery(title="my-app", description=XML_BOM))
        [request] = await sink.wait_for(1)
    assert request.path == "/dtrack/api/v1/bom"
    body = request.json()
    assert (body["projectName"], body["projectVersion"]) == ("my-app", "latest")
    assert base64.b64decode(body["bom"]).decode() == XML_BOM


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("nginx:1.25", ("nginx", "1.25")),
        ("registry.local:5000/team/app:2.0.1", ("registry.local:5000/team/app", "2.0.1")),
        ("registry.local:5000/team/app", ("registry.local:5000/team/app", "latest")),
        ("app", ("app", "latest")),
        ("app:", ("app", "latest")),
        (" app:v1 ", ("app", "v1")),
        ("a:b:c", ("a:b", "c")),
    ],
)
def test_project_name_and_version_from_the_title(title, expected):
    assert project_of(title) == expected


@pytest.mark.parametrize("content", [{"title": "", "description": BOM}, {"title": "app:1", "description": "  "}])
async def test_empty_title_or_bom_is_not_sent(content):
    async with open_http_sink() as sink:
        async with dt_action(sink.url) as action:
            with pytest.raises(ActionError) as info:
                await action.send(Delivery(content=content))
        assert sink.requests == []
    assert not info.value.retryable


async def test_a_reply_without_token_is_an_error():
    async with open_http_sink([Reply(200, "<html>login</html>")]) as sink:
        async with dt_action(sink.url) as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery())
    assert not info.value.retryable
    assert "token" in info.value.message and info.value.status == 200


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_4xx_is_not_retried(status):
    async with open_http_sink(default=Reply(status, "denied")) as sink:
        async with dt_action(sink.url, retries=3) as action:
            report = await send_with_retries(action, delivery())
        assert (report.ok, report.attempts, report.status) == (False, 1, status)
        assert not report.error.retryable
        assert API_KEY not in str(report.error)
        assert len(sink.requests) == 1


async def test_5xx_is_retried_per_policy():
    async with open_http_sink(default=Reply(503, "down")) as sink:
        async with dt_action(sink.url, retries=2) as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery())
            assert info.value.retryable and info.value.status == 503
            report = await send_with_retries(action, delivery())
        assert (report.ok, report.attempts, report.status) == (False, 3, 503)
        assert len(sink.requests) == 1 + 3


async def test_5xx_then_success():
    async with open_http_sink([Reply(500), ACCEPTED]) as sink:
        async with dt_action(sink.url) as action:
            report = await send_with_retries(action, delivery())
        assert (report.ok, report.attempts) == (True, 2)
        first, second = await sink.wait_for(2)
    assert first.json() == second.json()


async def test_timeout_is_retryable():
    async with open_http_sink([Reply(200, delay=5.0), ACCEPTED]) as sink:
        async with dt_action(sink.url, timeout="0.2s", retries=1) as action:
            seen = []
            report = await send_with_retries(action, delivery(), on_attempt=seen.append)
        assert (report.ok, report.attempts) == (True, 2)
        assert seen[0].error.retryable and "timed out" in seen[0].error.message


def test_required_settings_are_named():
    with pytest.raises(ActionConfigError) as info:
        DependencyTrackAction.from_spec(ActionSpec(name="dt", type="dependencytrack", settings={}))
    assert [key for key, _ in info.value.problems] == ["url", "dependency-track-api-key"]
    assert "actions[dt].dependency-track-api-key: required" in str(info.value)


def test_a_bad_url_is_a_config_error():
    with pytest.raises(ActionConfigError) as info:
        dt_action("dtrack.local")
    assert info.value.problems[0][0] == "url"
