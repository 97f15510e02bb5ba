"""The nexusIq action against a real local HTTP server answering as Nexus IQ's REST API (v2)."""

import base64
import json

import pytest

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.nexusiq import NexusIqAction, public_id_of
from tests.helpers.http_sink import Reply, open_http_sink

XML_BOM = (
    '<?xml version="1.0"?>\n<bom xmlns="http://cyclonedx.org/schema/bom/1.1" version="1">'
    '<components><component type="application"><name>openssl</name><version>3.0.1</version></component>'
    "</components></bom>"
)
JSON_BOM = json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.4", "version": 1, "components": []})
TITLE = "registry.local:5000/team/nginx:1.25"
PUBLIC_ID = "registry.local_5000_team_nginx_1.25"
INTERNAL_ID = "4bb67dcfc86344e3a483832f8c496419"
ORG = "org-7f3c"
USER, PASSWORD = "admin", "S3CRET-PASS"
JSON_HEADERS = (("Content-Type", "application/json"),)


def json_reply(status, value):
    return Reply(status, json.dumps(value), headers=JSON_HEADERS)


def app(public_id=PUBLIC_ID, internal_id=INTERNAL_ID):
    return {"id": internal_id, "publicId": public_id, "name": TITLE, "organizationId": ORG}


FOUND = json_reply(200, {"applications": [app()]})
NOT_FOUND = json_reply(200, {"applications": []})
CREATED = json_reply(200, app())
SUBMITTED = json_reply(202, {"statusUrl": f"api/v2/scan/applications/{INTERNAL_ID}/status/9cee2b6366fc4d328edc"})


def delivery(title=TITLE, description=XML_BOM):
    return Delivery(content={"title": title, "description": description}, route="nexus")


def nexus_action(url, **settings):
    base = {"url": url, "user": USER, "password": PASSWORD, "organization-id": ORG, "retry-backoff": "0.01s"}
    return NexusIqAction.from_spec(ActionSpec(name="my-nexus", type="nexusIq", settings={**base, **settings}))


def basic_auth():
    return "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


async def test_creates_a_missing_application_then_submits_the_bom():
    async with open_http_sink([NOT_FOUND, CREATED, SUBMITTED]) as sink:
        async with nexus_action(sink.url + "/") as action:
            result = await action.send(delivery())
        lookup, create, scan = await sink.wait_for(3)
    assert (lookup.method, lookup.path, lookup.query_params) == (
        "GET",
        "/api/v2/applications",
        {"publicId": [PUBLIC_ID]},
    )
    assert (create.method, create.path) == ("POST", "/api/v2/applications")
    assert create.header("content-type") == "application/json"
    assert create.json() == {"publicId": PUBLIC_ID, "name": TITLE, "organizationId": ORG}
    assert (scan.method, scan.path) == ("POST", f"/api/v2/scan/applications/{INTERNAL_ID}/sources/cyclone")
    assert scan.header("content-type") == "application/xml"
    assert scan.text == XML_BOM
    assert {r.header("authorization") for r in (lookup, create, scan)} == {basic_auth()}
    assert result.status == 202
    assert PUBLIC_ID in result.output and "statusUrl" in result.output


async def test_an_existing_application_is_reused_and_json_boms_say_so():
    async with open_http_sink([FOUND, SUBMITTED]) as sink:
        async with nexus_action(f"{sink.url}/iq") as action:
            await action.send(delivery(description=JSON_BOM))
        lookup, scan = await sink.wait_for(2)
        assert len(sink.requests) == 2
    assert lookup.path == "/iq/api/v2/applications"
    assert scan.path == f"/iq/api/v2/scan/applications/{INTERNAL_ID}/sources/cyclone"
    assert scan.header("content-type") == "application/json"
    assert scan.json() == json.loads(JSON_BOM)


async def test_only_the_exact_public_id_matches():
    other = json_reply(200, {"applications": [app(public_id="something-else", internal_id="other")]})
    async with open_http_sink([other, CREATED, SUBMITTED]) as sink:
        async with nexus_action(sink.url) as action:
            await action.send(delivery())
        _, create, scan = await sink.wait_for(3)
    assert create.method == "POST" and INTERNAL_ID in scan.path


async def test_a_refused_create_looks_the_application_up_again():
    # another send created it between our lookup and our create
    replies = [NOT_FOUND, json_reply(400, {"message": "Illegal publicId: already in use"}), FOUND, SUBMITTED]
    async with open_http_sink(replies) as sink:
        async with nexus_action(sink.url) as action:
            result = await action.send(delivery())
        requests = await sink.wait_for(4)
    assert [(r.method, r.path) for r in requests[2:]] == [
        ("GET", "/api/v2/applications"),
        ("POST", f"/api/v2/scan/applications/{INTERNAL_ID}/sources/cyclone"),
    ]
    assert result.status == 202


async def test_a_refused_create_of_a_still_missing_application_is_the_error():
    async with open_http_sink([NOT_FOUND, Reply(403, "no permission"), NOT_FOUND]) as sink:
        async with nexus_action(sink.url, retries=2) as action:
            report = await send_with_retries(action, delivery())
        assert (report.ok, report.attempts, report.status) == (False, 1, 403)
        assert len(sink.requests) == 3


def test_public_ids_are_sanitized():
    assert public_id_of("docker.io/library/nginx:1.25") == "docker.io_library_nginx_1.25"
    assert public_id_of(" my app@sha256:ab ") == "my_app_sha256_ab"
    assert public_id_of("Plain-id_1.0") == "Plain-id_1.0"


@pytest.mark.parametrize(
    ("content", "message"),
    [({"title": "", "description": XML_BOM}, "title"), ({"title": "app", "description": "plain text"}, "CycloneDX")],
)
async def test_unusable_content_sends_nothing(content, message):
    async with open_http_sink() as sink:
        async with nexus_action(sink.url) as action:
            with pytest.raises(ActionError, match=message) as info:
                await action.send(Delivery(content=content))
        assert sink.requests == []
    assert not info.value.retryable


async def test_a_reply_that_is_not_nexus_iq():
    async with open_http_sink([Reply(200, "<html>sign in</html>")]) as sink:
        async with nexus_action(sink.url) as action:
            with pytest.raises(ActionError, match="unexpected reply") as info:
                await action.send(delivery())
    assert not info.value.retryable


@pytest.mark.parametrize("status", [401, 404])
async def test_4xx_is_not_retried(status):
    async with open_http_sink(default=Reply(status, "nope")) as sink:
        async with nexus_action(sink.url, retries=3) as action:
            report = await send_with_retries(action, delivery())
        assert (report.ok, report.attempts, report.status) == (False, 1, status)
        assert not report.error.retryable
        assert PASSWORD not in str(report.error)
        assert len(sink.requests) == 1


async def test_5xx_is_retried_per_policy():
    async with open_http_sink(default=Reply(500, "oops")) as sink:
        async with nexus_action(sink.url, retries=2) as action:
            with pytest.raises(ActionError) as info:
                await action.send(delivery())
            assert info.value.retryable and info.value.status == 500
            report = await send_with_retries(action, delivery())
        assert (report.ok, report.attempts, report.status) == (False, 3, 500)
        assert len(sink.requests) == 1 + 3


async def test_a_5xx_on_the_scan_retries_the_whole_sequence():
    async with open_http_sink([FOUND, Reply(503), FOUND, SUBMITTED]) as sink:
        async with nexus_action(sink.url) as action:
            report = await send_with_retries(action, delivery())
        assert (report.ok, report.attempts, report.status) == (True, 2, 202)
        requests = await sink.wait_for(4)
    assert [r.method for r in requests] == ["GET", "POST", "GET", "POST"]
    assert requests[1].text == requests[3].text == XML_BOM


async def test_timeout_is_retryable():
    async with open_http_sink([Reply(200, delay=5.0), FOUND, SUBMITTED]) as sink:
        async with nexus_action(sink.url, timeout="0.2s", retries=1) as action:
            seen = []
            report = await send_with_retries(action, delivery(), on_attempt=seen.append)
        assert (report.ok, report.attempts) == (True, 2)
        assert seen[0].error.retryable and "timed out" in seen[0].error.message


def test_required_settings_are_named():
    with pytest.raises(ActionConfigError) as info:
        NexusIqAction.from_spec(ActionSpec(name="iq", type="nexusiq", settings={"url": "https://iq.local"}))
    assert [key for key, _ in info.value.problems] == ["user", "password", "organization-id"]
    assert "actions[iq].organization-id: required" in str(info.value)
