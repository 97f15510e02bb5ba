"""The serviceNow action against a real local HTTP server speaking the Table API's create call."""

import base64
import json
import logging

import pytest

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.registry import action_class
from postee.actions.servicenow import ServiceNowAction, servicenow_date, severity_level
from tests.helpers.http_sink import Reply, open_http_sink

PASSWORD = "s3cret-pw"
SUMMARY = (
    "Name: all-in-one:3.5.19223\nRegistry: Aqua\nMalware found: Yes\nSensitive data found: Yes\n\n"
    "vulnerabilities:\n*   critical: 1,\n*   high: 1,\n*   medium: 1,\n*   low: 1,\n*   negligible: 1\n\n"
)
CONTENT = {
    # As `postee.servicenow` renders tests/fixtures/compat inputs/aqua-input.json (template-cases.json).
    "title": "Aqua security | image | all-in-one:3.5.19223 | Scan report",
    "description": "<p><b>Name:</b> all-in-one:3.5.19223</p>\n<p>ünïcode & <i>html</i></p>",
    "url": "",
    "category": "Security Image Scan results",
    "subcategory": "Security incident",
    "date": "1624544066",
    "severity": "1",
    "summary": SUMMARY,
    "assignedTo": "owner",
    "assignedGroup": "group",
}
DELIVERY = Delivery(content=CONTENT, event={"image": "all-in-one:3.5.19223"}, route="aqua", event_id="e1")
CREATED = Reply(201, json.dumps({"result": {"number": "INC0010042", "sys_id": "9d385017c611228701d22104cc95c371"}}))


def servicenow_spec(instance_url=None, **settings):
    base = {"user": "postee", "password": PASSWORD, "retry-backoff": "0.01s"}
    if instance_url is not None:
        base["instance-url"] = instance_url
    return ActionSpec(name="my-snow", type="serviceNow", settings={**base, **settings})


def build(spec):
    return ServiceNowAction.from_spec(spec)


async def test_creates_an_incident_field_by_field():
    async with open_http_sink([CREATED]) as sink:
        async with build(servicenow_spec(sink.url)) as action:
            result = await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    assert result.status == 201
    assert result.output == "created incident INC0010042 (sys_id 9d385017c611228701d22104cc95c371)"
    assert (request.method, request.path) == ("POST", "/api/now/table/incident")
    assert request.query_params == {"sysparm_fields": ["number,sys_id"]}
    assert request.header("authorization") == "Basic " + base64.b64encode(f"postee:{PASSWORD}".encode()).decode()
    assert request.header("content-type") == "application/json"
    assert request.header("accept") == "application/json"
    assert request.json() == {
        "short_description": CONTENT["title"],
        "work_notes": "[code]" + CONTENT["description"] + "[/code]",
        "description": SUMMARY,
        "caller_id": "postee",
        "opened_at": "2021-06-24 14:14:26",
        "impact": 1,
        "urgency": 1,
        "category": "Security Image Scan results",
        "subcategory": "Security incident",
        "assigned_to": "owner",
        "assignment_group": "group",
    }


async def test_board_names_the_table_and_instance_url_may_have_a_path():
    async with open_http_sink([CREATED]) as sink:
        async with build(servicenow_spec(f"{sink.url}/proxy/", board="u_security_findings")) as action:
            await action.send(DELIVERY)
        [request] = await sink.wait_for(1)
    assert request.path == "/proxy/api/now/table/u_security_findings"


async def test_sparse_content_leaves_optional_fields_out():
    # The incident template with no create_time renders date "0"; no severity, no assignees.
    content = {"title": "test", "description": "<p>x</p>", "date": "0", "category": "Security incident"}
    async with open_http_sink([CREATED]) as sink:
        async with build(servicenow_spec(sink.url)) as action:
            await action.send(Delivery(content=content))
        [request] = await sink.wait_for(1)
    assert request.json() == {
        "short_description": "test",
        "work_notes": "[code]<p>x</p>[/code]",
        "description": "",
        "caller_id": "postee",
        "category": "Security incident",
    }


async def test_an_iso_date_and_a_low_severity_from_the_insight_template():
    content = {**CONTENT, "date": "2022-08-25T09:02:28.991Z", "severity": "3"}
    async with open_http_sink([CREATED]) as sink:
        async with build(servicenow_spec(sink.url)) as action:
            await action.send(Delivery(content=content))
        [request] = await sink.wait_for(1)
    body = request.json()
    assert (body["opened_at"], body["impact"], body["urgency"]) == ("2022-08-25 09:02:28", 3, 3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1624544066", "2021-06-24 14:14:26"),
        (1624544066, "2021-06-24 14:14:26"),
        ("1624544066.9", "2021-06-24 14:14:26"),
        ("2022-08-25T11:02:28+02:00", "2022-08-25 09:02:28"),
        ("2022-08-25 09:02:28", "2022-08-25 09:02:28"),
        ("0", ""),
        ("", ""),
        (None, ""),
        ("yesterday", ""),
        ("1e400", ""),
        ("nan", ""),
        (True, ""),
    ],
)
def test_servicenow_date(value, expected):
    assert servicenow_date(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1),
        ("2", 2),
        (3, 3),
        (" 2 ", 2),
        ("5", 3),
        ("0", 1),
        ("-4", 1),
        ("High", 1),
        ("medium", 2),
        ("negligible", 3),
        ("", None),
        (None, None),
        ("urgent", None),
        (False, None),
    ],
)
def test_severity_level(value, expected):
    assert severity_level(value) == expected


async def test_another_2xx_with_a_table_answer_is_accepted_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="postee.actions.servicenow")
    async with open_http_sink([Reply(200, json.dumps({"result": {"sys_id": "abc"}}))]) as sink:
        async with build(servicenow_spec(sink.url)) as action:
            result = await action.send(DELIVERY)
    assert (result.status, result.output) == (200, "created incident (sys_id abc)")
    assert "HTTP 200 instead of 201 Created" in caplog.text


async def test_a_2xx_that_is_not_a_table_answer_is_an_error():
    # E.g. a single sign-on redirect ending on a login page: nothing was created.
    login = Reply(302, headers=(("Location", "/login.do"),))
    async with open_http_sink([login, Reply(200, "<html>Log in</html>")]) as sink:
        async with build(servicenow_spec(sink.url)) as action:
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
    assert not info.value.retryable
    assert info.value.status == 200
    assert "expected 201 Created" in info.value.message


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_4xx_is_not_retried(status):
    answer = json.dumps({"error": {"message": "User Not Authenticated"}, "status": "failure"})
    async with open_http_sink(default=Reply(status, answer)) as sink:
        async with build(servicenow_spec(sink.url, retries=3)) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts, report.status) == (False, 1, status)
        assert not report.error.retryable
        assert "User Not Authenticated" in report.error.message
        assert PASSWORD not in report.error.message
        assert len(sink.requests) == 1


async def test_5xx_is_retried_per_policy():
    async with open_http_sink(default=Reply(503, "busy")) as sink:
        async with build(servicenow_spec(sink.url, retries=2)) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts, report.status) == (False, 3, 503)
        assert report.error.retryable
        assert len(sink.requests) == 3


async def test_5xx_then_created():
    async with open_http_sink([Reply(500), CREATED]) as sink:
        async with build(servicenow_spec(sink.url)) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts, report.status) == (True, 2, 201)
        assert sink.requests[0].body == sink.requests[1].body


async def test_timeout():
    async with open_http_sink([Reply(201, delay=2.0)]) as sink:
        async with build(servicenow_spec(sink.url, timeout="0.2s")) as action:
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
        await sink.wait_for(1)
    assert info.value.retryable
    assert "timed out" in info.value.message


def test_the_real_instance_url():
    action = build(servicenow_spec(instance="dev12345"))
    assert action.url == "https://dev12345.service-now.com/api/now/table/incident"
    assert action.retry_policy.timeout == 30.0


def test_missing_required_keys_are_all_named():
    with pytest.raises(ActionConfigError) as info:
        build(ActionSpec(name="snow", type="serviceNow", settings={}))
    assert info.value.problems == [
        ("user", "required"),
        ("password", "required"),
        ("instance", "required: set instance or instance-url"),
    ]
    assert "actions[snow].password: required" in str(info.value)


@pytest.mark.parametrize(
    ("settings", "key", "message"),
    [
        ({"instance": "dev1.service-now.com"}, "instance", "expected the instance name"),
        ({"instance": "https://dev1"}, "instance", "expected the instance name"),
        ({"instance-url": "dev1.service-now.com"}, "instance-url", "expected an absolute"),
        ({"instance": "dev1", "instance-url": "http://x"}, "instance-url", "set either"),
        ({"instance": "dev1", "board": "incident; drop"}, "board", "expected a table name"),
        ({"instance": "dev1", "timeout": "soon"}, "timeout", ""),
    ],
)
def test_bad_settings(settings, key, message):
    spec = ActionSpec(name="snow", type="serviceNow", settings={"user": "u", "password": PASSWORD, **settings})
    with pytest.raises(ActionConfigError) as info:
        build(spec)
    [(problem_key, problem)] = info.value.problems
    assert problem_key == key and message in problem
    assert PASSWORD not in str(info.value)


def test_registered_under_postees_spelling_case_insensitively():
    assert action_class("serviceNow") is ServiceNowAction
    assert action_class("SERVICENOW") is ServiceNowAction
