"""The jira action against a local fake Jira: a real HTTP(S) server speaking the REST v2 and agile endpoints."""

import base64
import json
import tempfile
from contextlib import asynccontextmanager

import pytest
import trio
import trustme

from postee.actions import ActionConfigError, ActionError, ActionSpec, Delivery, send_with_retries
from postee.actions.jira import MAX_DESCRIPTION_CHARS, MAX_SUMMARY_CHARS, JiraAction
from postee.actions.jira_api import SPRINT_CUSTOM_TYPE
from tests.helpers.http_sink import HttpSink, Reply, _config, _serving

PROJECT = "SEC"
SPRINT_FIELD = "customfield_10020"

PRIORITY_META = {
    "name": "Priority",
    "schema": {"type": "priority", "system": "priority"},
    "defaultValue": {"id": "3", "name": "Medium"},
    "allowedValues": [{"id": "2", "name": "High"}, {"id": "3", "name": "Medium"}],
}
COMMON_FIELDS = {
    "summary": {"name": "Summary", "required": True, "schema": {"type": "string", "system": "summary"}},
    "description": {"name": "Description", "schema": {"type": "string", "system": "description"}},
    "priority": PRIORITY_META,
    "assignee": {"name": "Assignee", "schema": {"type": "user", "system": "assignee"}},
    "labels": {"name": "Labels", "schema": {"type": "array", "items": "string", "system": "labels"}},
}
TASK_FIELDS = {
    **COMMON_FIELDS,
    SPRINT_FIELD: {"name": "Sprint", "schema": {"type": "array", "items": "string", "custom": SPRINT_CUSTOM_TYPE}},
}
ISSUE_TYPES = [
    {"id": "10003", "name": "Sub-task", "subtask": True, "fields": COMMON_FIELDS},
    {"id": "10001", "name": "Bug", "subtask": False, "fields": COMMON_FIELDS},  # no Sprint field on its screen
    {"id": "10002", "name": "Task", "subtask": False, "fields": TASK_FIELDS},
]
FIELDS = [
    {"id": "summary", "name": "Summary", "schema": {"type": "string", "system": "summary"}},
    {
        "id": SPRINT_FIELD,
        "name": "Sprint",
        "schema": {"type": "array", "items": "string", "custom": SPRINT_CUSTOM_TYPE},
    },
    {"id": "customfield_10100", "name": "Scanner", "schema": {"type": "string"}},
    {"id": "customfield_10101", "name": "CVSS Score", "schema": {"type": "number"}},
    {"id": "customfield_10102", "name": "Affected Images", "schema": {"type": "array", "items": "string"}},
    {"id": "customfield_10103", "name": "Environment Tier", "schema": {"type": "option"}},
    {"id": "customfield_10104", "name": "Security Owner", "schema": {"type": "user"}},
    {"id": "customfield_10105", "name": "Teams", "schema": {"type": "array", "items": "option"}},
    {"id": "customfield_10106", "name": "Found On", "schema": {"type": "date"}},
    {"id": "customfield_10107", "name": "Region", "schema": {"type": "option-with-child"}},
    {"id": "customfield_10108", "name": "Affected Components", "schema": {"type": "array", "items": "component"}},
]
BOARDS = [{"id": 6, "name": "SEC board (old)", "type": "scrum"}, {"id": 7, "name": "SEC board", "type": "scrum"}]
SPRINTS = [
    {"id": 41, "name": "Sprint 2", "state": "closed"},
    {"id": 42, "name": "Sprint 3", "state": "active"},
    {"id": 43, "name": "Sprint 4", "state": "future"},
]

DELIVERY = Delivery(
    content={"title": "alpine:3.18 vulnerability scan report", "description": "h1. Image name: alpine:3.18\n|| CVE ||"},
    event={"image": "alpine:3.18"},
    route="trivy-to-jira",
)


def json_reply(payload, status=200):
    return Reply(status, json.dumps(payload), headers=(("Content-Type", "application/json"),))


class FakeJira(HttpSink):
    """A Jira that routes by method and path, records every request, and may be scripted per path.

    `script[(method, path)]` is a list of replies used (and consumed) before the normal answer.
    """

    def __init__(self, *, deployment="Server", issue_types=ISSUE_TYPES, legacy_createmeta=True, sprints=SPRINTS):
        super().__init__([], Reply(404))
        self.deployment = deployment
        self.issue_types = issue_types
        self.legacy_createmeta = legacy_createmeta
        self.sprints = sprints
        self.script: dict[tuple[str, str], list[Reply]] = {}
        self.created = 0

    def to(self, method, path):
        """The recorded requests for `method path`."""
        return [r for r in self.requests if (r.method, r.path) == (method, path)]

    def issues(self):
        return [r.json()["fields"] for r in self.to("POST", "/rest/api/2/issue")]

    def _record(self, request):
        super()._record(request)
        scripted = self.script.get((request.method, request.path))
        if scripted:
            return scripted.pop(0)
        return self.answer(request)

    def answer(self, request):
        method, path, query = request.method, request.path, request.query_params
        if (method, path) == ("GET", "/rest/api/2/issue/createmeta"):
            if not self.legacy_createmeta:
                return json_reply({"errorMessages": ["Not found"]}, 404)
            keys = query["projectKeys"][0].split(",")
            projects = [{"key": PROJECT, "issuetypes": self.issue_types}] if PROJECT in keys else []
            return json_reply({"projects": projects})
        if (method, path) == ("GET", f"/rest/api/2/issue/createmeta/{PROJECT}/issuetypes"):
            return json_reply({"values": [{k: v for k, v in t.items() if k != "fields"} for t in self.issue_types]})
        if method == "GET" and path.startswith(f"/rest/api/2/issue/createmeta/{PROJECT}/issuetypes/"):
            [issue_type] = [t for t in self.issue_types if t["id"] == path.rsplit("/", 1)[1]]
            return json_reply({"values": [{"fieldId": k, **v} for k, v in issue_type["fields"].items()]})
        if (method, path) == ("GET", "/rest/api/2/field"):
            return json_reply(FIELDS)
        if (method, path) == ("GET", "/rest/api/2/serverInfo"):
            return json_reply({"version": "9.12.0", "deploymentType": self.deployment})
        if (method, path) == ("GET", "/rest/api/2/user/search"):
            return json_reply([{"accountId": f"acc-{query['query'][0]}", "active": True}])
        if (method, path) == ("POST", "/rest/api/2/issue"):
            self.created += 1
            key = f"{PROJECT}-{self.created}"
            return json_reply({"id": str(10000 + self.created), "key": key, "self": f"{self.url}/issue/{key}"}, 201)
        if (method, path) == ("GET", "/rest/agile/1.0/board"):
            name = query["name"][0]
            return json_reply({"isLast": True, "values": [b for b in BOARDS if name in b["name"]]})
        if (method, path) == ("GET", "/rest/agile/1.0/board/7/sprint"):
            states = query["state"][0].split(",")
            return json_reply({"isLast": True, "values": [s for s in self.sprints if s["state"] in states]})
        if method == "POST" and path.startswith("/rest/agile/1.0/sprint/"):
            return Reply(204)
        return json_reply({"errorMessages": [f"no route {method} {path}"]}, 404)


@asynccontextmanager
async def open_fake_jira(*, tls=False, **options):
    jira = FakeJira(**options)
    if not tls:
        async with _serving(jira, _config()) as running:
            yield running
        return
    jira.ca = trustme.CA()
    with tempfile.TemporaryDirectory(prefix="fake-jira-") as directory:
        pem = f"{directory}/server.pem"
        jira.ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(pem)
        async with _serving(jira, _config(pem, pem)) as running:
            yield running


def jira_action(url, **settings):
    base = {"url": url, "user": "postee@example.com", "password": "s3cret", "project-key": PROJECT}
    base.update({"retry-backoff": "0.01s", **settings})
    base = {key: value for key, value in base.items() if value is not None}
    return JiraAction.from_spec(ActionSpec(name="my-jira", type="jira", settings=base))


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------------- creating issues


async def test_creates_the_issue_field_by_field():
    async with open_fake_jira() as jira:
        settings = {
            "issuetype": "Bug",
            "priority": "High",
            "assignee": "alice",
            "labels": ["trivy", "alpine"],
            "fix-versions": ["2.1"],
            "affects-versions": ["2.0", "1.9"],
        }
        async with jira_action(f"{jira.url}/", **settings) as action:
            result = await action.send(DELIVERY)
        [meta] = jira.to("GET", "/rest/api/2/issue/createmeta")
        [create] = jira.to("POST", "/rest/api/2/issue")
    assert meta.query_params == {"projectKeys": [PROJECT], "expand": ["projects.issuetypes.fields"]}
    assert create.header("authorization") == basic("postee@example.com", "s3cret")
    assert create.header("content-type") == "application/json"
    assert create.header("accept") == "application/json"
    assert create.json() == {
        "fields": {
            "project": {"key": PROJECT},
            "issuetype": {"id": "10001"},
            "summary": "alpine:3.18 vulnerability scan report",
            "description": "h1. Image name: alpine:3.18\n|| CVE ||",
            "priority": {"name": "High"},
            "assignee": {"name": "alice"},
            "labels": ["trivy", "alpine"],
            "fixVersions": [{"name": "2.1"}],
            "versions": [{"name": "2.0"}, {"name": "1.9"}],
        }
    }
    assert result.status == 201
    assert result.output == f"created SEC-1 {jira.url}/browse/SEC-1"
    # no user field lookup on Server: `name` is used as it is; no field list needed without unknowns
    assert jira.to("GET", "/rest/api/2/field") == []


async def test_defaults_come_from_the_project_create_metadata():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url) as action:
            await action.send(DELIVERY)
    [fields] = jira.issues()
    assert fields["issuetype"] == {"id": "10002"}  # "Task", Postee's default issue type
    assert fields["priority"] == {"name": "Medium"}  # the project's default priority, not Postee's "High"
    assert fields["assignee"] == {"name": "postee@example.com"}  # Postee assigns to the user by default
    assert {"labels", "fixVersions", "versions"}.isdisjoint(fields)


async def test_without_task_the_first_standard_issue_type_is_used_and_no_priority_when_none_offered():
    no_priority = {key: value for key, value in COMMON_FIELDS.items() if key not in ("priority", "assignee")}
    types = [
        {"id": "5", "name": "Sub-task", "subtask": True, "fields": no_priority},
        {"id": "6", "name": "Story", "subtask": False, "fields": no_priority},
    ]
    async with open_fake_jira(issue_types=types) as jira:
        async with jira_action(jira.url) as action:
            await action.send(DELIVERY)
    [fields] = jira.issues()
    assert fields["issuetype"] == {"id": "6"}
    assert "priority" not in fields and "assignee" not in fields


async def test_jira_9_create_metadata_endpoints_when_the_expanded_form_is_gone():
    async with open_fake_jira(legacy_createmeta=False) as jira:
        async with jira_action(jira.url, board="SEC board") as action:
            await action.send(DELIVERY)
            await action.send(DELIVERY)
        assert len(jira.to("GET", "/rest/api/2/issue/createmeta")) == 1
        [types] = jira.to("GET", f"/rest/api/2/issue/createmeta/{PROJECT}/issuetypes")
        [task] = jira.to("GET", f"/rest/api/2/issue/createmeta/{PROJECT}/issuetypes/10002")
    assert types.query_params["maxResults"] == ["200"]
    assert task.method == "GET"
    first, _ = jira.issues()
    assert (first["issuetype"], first["priority"], first[SPRINT_FIELD]) == ({"id": "10002"}, {"name": "Medium"}, 42)


async def test_metadata_is_looked_up_once_per_action():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, unknowns={"Scanner": "trivy"}, board="SEC board") as action:
            for _ in range(3):
                await action.send(DELIVERY)
        for path in ("/rest/api/2/issue/createmeta", "/rest/api/2/field", "/rest/agile/1.0/board"):
            assert len(jira.to("GET", path)) == 1, path
        assert len(jira.to("GET", "/rest/agile/1.0/board/7/sprint")) == 1
        assert len(jira.issues()) == 3


async def test_concurrent_sends_share_one_metadata_lookup():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, unknowns={"Scanner": "trivy"}) as action:
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(action.send, DELIVERY)
        assert len(jira.to("GET", "/rest/api/2/issue/createmeta")) == 1
        assert len(jira.to("GET", "/rest/api/2/field")) == 1
        assert (
            sorted(r.json()["fields"]["summary"] for r in jira.to("POST", "/rest/api/2/issue")) == [DELIVERY.title] * 4
        )


async def test_bearer_token_for_server_and_data_center():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, user=None, password=None, token="pat-123") as action:
            await action.send(DELIVERY)
        requests = jira.requests
    assert {r.header("authorization") for r in requests} == {"Bearer pat-123"}
    assert "assignee" not in jira.issues()[0]  # no user to default to


async def test_user_with_token_is_still_bearer_off_atlassian_cloud():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, password=None, token="pat-123") as action:
            await action.send(DELIVERY)
        [create] = jira.to("POST", "/rest/api/2/issue")
    assert create.header("authorization") == "Bearer pat-123"


def test_user_with_token_on_an_atlassian_cloud_host_is_basic():
    action = jira_action("https://acme.atlassian.net", password=None, token="api-token")
    assert (action.auth.scheme, action.auth.user) == ("basic", "postee@example.com")
    bearer = jira_action("https://jira.acme.internal", password=None, token="pat")
    assert bearer.auth.scheme == "bearer"
    assert "pat" not in repr(bearer.auth) and "api-token" not in repr(action.auth)


async def test_cloud_user_fields_are_account_ids_found_by_search():
    async with open_fake_jira(deployment="Cloud") as jira:
        settings = {"assignee": "alice@example.com", "unknowns": {"Security Owner": "bob@example.com"}}
        async with jira_action(jira.url, **settings) as action:
            await action.send(DELIVERY)
            await action.send(DELIVERY)
        searches = jira.to("GET", "/rest/api/2/user/search")
        assert len(jira.to("GET", "/rest/api/2/serverInfo")) == 1
    assert sorted(s.query_params["query"][0] for s in searches) == ["alice@example.com", "bob@example.com"]
    for fields in jira.issues():
        assert fields["assignee"] == {"accountId": "acc-alice@example.com"}
        assert fields["customfield_10104"] == {"accountId": "acc-bob@example.com"}


async def test_application_scope_owner_placeholder_assigns_to_the_event_owner():
    delivery = Delivery(content={**DELIVERY.content, "owners": ["carol", "dave"]})
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, assignee=["<%application_scope_owner%>"]) as action:
            await action.send(delivery)
    assert jira.issues()[0]["assignee"] == {"name": "carol"}


# ---------------------------------------------------------------------- description, summary


async def test_a_long_description_is_truncated_with_a_visible_note():
    description = "| CVE-2024-0001 | openssl | HIGH |\n" * 2000  # 70,000 characters
    async with open_fake_jira() as jira:
        async with jira_action(jira.url) as action:
            await action.send(Delivery(content={"title": "t", "description": description}))
    posted = jira.issues()[0]["description"]
    assert len(posted) <= MAX_DESCRIPTION_CHARS
    assert len(posted) > MAX_DESCRIPTION_CHARS - 200
    assert "Truncated by Postee: the description had 70,000 characters; Jira accepts 32,767." in posted
    cut = posted.split("\n\n----\n")[0]
    assert description.startswith(cut)


async def test_truncation_counts_utf16_units_as_jira_does():
    description = "🔥" * 20_000  # 40,000 UTF-16 code units
    async with open_fake_jira() as jira:
        async with jira_action(jira.url) as action:
            await action.send(Delivery(content={"title": "t", "description": description}))
    posted = jira.issues()[0]["description"]
    assert len(posted.encode("utf-16-le")) // 2 <= MAX_DESCRIPTION_CHARS
    assert posted.startswith("🔥" * 16_000)


async def test_short_description_and_long_multiline_title():
    title = "Critical vulnerabilities\nin " + "registry.example.com/team/app " * 20
    async with open_fake_jira() as jira:
        async with jira_action(jira.url) as action:
            await action.send(Delivery(content={"title": title, "description": "x" * MAX_DESCRIPTION_CHARS}))
    fields = jira.issues()[0]
    assert fields["description"] == "x" * MAX_DESCRIPTION_CHARS  # exactly at the limit: untouched
    assert len(fields["summary"]) <= MAX_SUMMARY_CHARS
    assert fields["summary"].startswith("Critical vulnerabilities in registry.example.com/team/app")
    assert fields["summary"].endswith("…") and "\n" not in fields["summary"]


async def test_an_empty_title_is_a_clear_error():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url) as action:
            with pytest.raises(ActionError) as info:
                await action.send(Delivery(content={"title": "  ", "description": "d"}))
    assert not info.value.retryable
    assert "title" in info.value.message
    assert jira.issues() == []


# ---------------------------------------------------------------------- custom fields


async def test_custom_fields_take_the_shape_of_their_schema_type():
    unknowns = {
        "Scanner": "trivy",  # string, by name
        "cvss score": "9.8",  # number, name matched case-insensitively
        "Affected Images": "alpine:3.18, nginx:1.25",  # array of strings, comma-separated
        "customfield_10103": "Production",  # option, by id
        "Security Owner": "bob",  # user, Server
        "Teams": ["red", "blue"],  # array of options
        "Found On": "2024-05-01",  # date
        "Region": {"value": "EMEA", "child": {"value": "Paris"}},  # Jira's shape, passed as it is
        "Affected Components": ["api"],  # array of named objects
        "Sprint": "42",  # the sprint field takes a sprint id
    }
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, unknowns=unknowns) as action:
            await action.send(DELIVERY)
        [field_lookup] = jira.to("GET", "/rest/api/2/field")
    assert field_lookup.header("authorization") == basic("postee@example.com", "s3cret")
    fields = jira.issues()[0]
    assert {key: value for key, value in fields.items() if key.startswith("customfield_")} == {
        "customfield_10100": "trivy",
        "customfield_10101": 9.8,
        "customfield_10102": ["alpine:3.18", "nginx:1.25"],
        "customfield_10103": {"value": "Production"},
        "customfield_10104": {"name": "bob"},
        "customfield_10105": [{"value": "red"}, {"value": "blue"}],
        "customfield_10106": "2024-05-01",
        "customfield_10107": {"value": "EMEA", "child": {"value": "Paris"}},
        "customfield_10108": [{"name": "api"}],
        SPRINT_FIELD: 42,
    }


async def test_integers_stay_integers_in_number_fields():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, unknowns={"CVSS Score": 7, "customfield_10102": ["a"]}) as action:
            await action.send(DELIVERY)
    fields = jira.issues()[0]
    assert (fields["customfield_10101"], fields["customfield_10102"]) == (7, ["a"])


@pytest.mark.parametrize(
    ("unknowns", "words"),
    [
        ({"No Such Field": "x"}, ["unknowns.No Such Field", "no field"]),
        ({"CVSS Score": "high"}, ["unknowns.CVSS Score", "number"]),
        ({"Scanner": ["a", "b"]}, ["unknowns.Scanner", "one value"]),
    ],
)
async def test_unusable_custom_fields_fail_before_creating_anything(unknowns, words):
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, unknowns=unknowns) as action:
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
    assert not info.value.retryable
    for word in words:
        assert word in info.value.message
    assert jira.issues() == []


# ---------------------------------------------------------------------- board and sprint


async def test_active_sprint_of_the_board_set_through_the_sprint_field():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, board="SEC board") as action:
            result = await action.send(DELIVERY)
        [boards] = jira.to("GET", "/rest/agile/1.0/board")
        [sprints] = jira.to("GET", "/rest/agile/1.0/board/7/sprint")  # the exact name, not "SEC board (old)"
    assert boards.query_params["name"] == ["SEC board"]
    assert sprints.query_params["state"] == ["active"]
    assert jira.issues()[0][SPRINT_FIELD] == 42
    assert [r for r in jira.requests if r.path.startswith("/rest/agile/1.0/sprint/")] == []
    assert result.output.startswith("created SEC-1")


async def test_issue_moved_to_the_sprint_when_its_screen_has_no_sprint_field():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, board="SEC board", issuetype="bug") as action:
            result = await action.send(DELIVERY)
        [move] = jira.to("POST", "/rest/agile/1.0/sprint/42/issue")
    assert SPRINT_FIELD not in jira.issues()[0]
    assert move.json() == {"issues": ["SEC-1"]}
    assert "moved to sprint 42" in result.output


async def test_a_named_future_sprint():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, board="SEC board", sprint="sprint 4") as action:
            await action.send(DELIVERY)
        [sprints] = jira.to("GET", "/rest/agile/1.0/board/7/sprint")
    assert sprints.query_params["state"] == ["active,future"]
    assert jira.issues()[0][SPRINT_FIELD] == 43


async def test_a_sprint_id_needs_no_board():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, sprint="43") as action:
            await action.send(DELIVERY)
    assert jira.issues()[0][SPRINT_FIELD] == 43
    assert [r for r in jira.requests if r.path.startswith("/rest/agile")] == []


async def test_no_active_sprint_leaves_the_issue_in_the_backlog():
    async with open_fake_jira(sprints=[{"id": 43, "name": "Sprint 4", "state": "future"}]) as jira:
        async with jira_action(jira.url, board="SEC board") as action:
            result = await action.send(DELIVERY)
    assert SPRINT_FIELD not in jira.issues()[0]
    assert "no active sprint" in result.output


async def test_unknown_board_is_not_retryable_and_creates_nothing():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, board="Nope", retries=2) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.error.retryable) == (False, 1, False)
    assert "'Nope'" in report.error.message
    assert jira.issues() == []


async def test_a_failed_move_to_the_sprint_does_not_fail_the_send():
    async with open_fake_jira() as jira:
        jira.script[("POST", "/rest/agile/1.0/sprint/42/issue")] = [json_reply({"errorMessages": ["down"]}, 503)]
        async with jira_action(jira.url, board="SEC board", issuetype="Bug") as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts) == (True, 1)  # a retry would open a second issue
    assert "NOT moved to sprint 42" in report.output and "HTTP 503" in report.output
    assert len(jira.issues()) == 1


# ---------------------------------------------------------------------- failures


async def test_400_carries_jira_error_messages_and_is_not_retried():
    error = {"errorMessages": ["Issue type is a sub-task"], "errors": {"customfield_10101": "Number value expected"}}
    async with open_fake_jira() as jira:
        jira.script[("POST", "/rest/api/2/issue")] = [json_reply(error, 400)]
        async with jira_action(jira.url) as action:
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
            report = await send_with_retries(action, Delivery(content={"title": "again", "description": ""}))
    assert (info.value.retryable, info.value.status) == (False, 400)
    assert "POST http://127.0.0.1:" in info.value.message and "/rest/api/2/issue: HTTP 400" in info.value.message
    assert "Issue type is a sub-task" in info.value.message
    assert "customfield_10101: Number value expected" in info.value.message
    assert "s3cret" not in info.value.message
    assert (report.ok, report.attempts) == (True, 1)


async def test_401_is_not_retryable():
    async with open_fake_jira() as jira:
        jira.script[("GET", "/rest/api/2/issue/createmeta")] = [Reply(401, "Unauthorized")]
        async with jira_action(jira.url, retries=3) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status) == (False, 1, 401)
    assert "Unauthorized" in report.error.message


async def test_5xx_is_retried_per_policy():
    async with open_fake_jira() as jira:
        jira.script[("POST", "/rest/api/2/issue")] = [Reply(503), json_reply({"errorMessages": ["oops"]}, 500)]
        async with jira_action(jira.url, retries=3) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts) == (True, 3)
        assert len(jira.to("POST", "/rest/api/2/issue")) == 3
        assert len(jira.to("GET", "/rest/api/2/issue/createmeta")) == 1  # cached across attempts


async def test_5xx_exhausting_the_retries():
    async with open_fake_jira() as jira:
        jira.script[("POST", "/rest/api/2/issue")] = [Reply(502)] * 3
        async with jira_action(jira.url, retries=1) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.status, report.error.retryable) == (False, 2, 502, True)
    assert len(jira.to("POST", "/rest/api/2/issue")) == 2


async def test_failed_metadata_lookup_is_not_cached():
    async with open_fake_jira() as jira:
        jira.script[("GET", "/rest/api/2/issue/createmeta")] = [Reply(500)]
        async with jira_action(jira.url, retries=1) as action:
            report = await send_with_retries(action, DELIVERY)
        assert (report.ok, report.attempts) == (True, 2)
        assert len(jira.to("GET", "/rest/api/2/issue/createmeta")) == 2


async def test_timeout():
    async with open_fake_jira() as jira:
        jira.script[("POST", "/rest/api/2/issue")] = [Reply(201, "{}", delay=2.0)]
        async with jira_action(jira.url, timeout="0.2s", retries=0) as action:
            report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.error.retryable) == (False, 1, True)
    assert "timed out" in report.error.message


async def test_unknown_project_and_unknown_issue_type():
    async with open_fake_jira() as jira:
        async with jira_action(jira.url, **{"project-key": "NOPE"}) as action:
            with pytest.raises(ActionError) as project:
                await action.send(DELIVERY)
        async with jira_action(jira.url, issuetype="Epic") as action:
            with pytest.raises(ActionError) as issuetype:
                await action.send(DELIVERY)
    assert not project.value.retryable and "'NOPE' not found" in project.value.message
    assert not issuetype.value.retryable
    assert "no issue type 'Epic'" in issuetype.value.message and "'Task'" in issuetype.value.message
    assert jira.issues() == []


async def test_connection_refused_is_retryable(closed_port_url):
    async with jira_action(closed_port_url, retries=1) as action:
        report = await send_with_retries(action, DELIVERY)
    assert (report.ok, report.attempts, report.error.retryable) == (False, 2, True)


# ---------------------------------------------------------------------- TLS


async def test_tls_verified_against_a_ca_bundle(tmp_path):
    async with open_fake_jira(tls=True) as jira:
        ca_file = tmp_path / "ca.pem"
        jira.ca.cert_pem.write_to_path(str(ca_file))
        async with jira_action(jira.url, **{"tls-verify": str(ca_file)}) as action:
            result = await action.send(DELIVERY)
        async with jira_action(jira.url) as action:  # verification is on by default
            with pytest.raises(ActionError) as info:
                await action.send(DELIVERY)
        async with jira_action(jira.url, **{"tls-verify": False}) as action:
            await action.send(DELIVERY)
    assert jira.url.startswith("https://") and result.output.startswith("created SEC-1")
    assert not info.value.retryable and "certificate" in info.value.message
    assert len(jira.issues()) == 2


# ---------------------------------------------------------------------- configuration


def config_problems(settings):
    with pytest.raises(ActionConfigError) as info:
        JiraAction.from_spec(ActionSpec(name="my-jira", type="jira", settings=settings))
    return dict(info.value.problems), str(info.value)


def test_missing_url_and_project_key():
    problems, text = config_problems({"user": "u", "password": "p"})
    assert problems == {"url": "required", "project-key": "required"}
    assert "actions[my-jira].url: required" in text and "actions[my-jira].project-key: required" in text


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ({}, "password", "set user with password"),
        ({"password": "p"}, "user", "required with password"),
        ({"user": "u", "password": "p", "token": "t"}, "token", "not both"),
        ({"token": "t", "sprint": "Sprint 3"}, "sprint", "needs `board`"),
        ({"token": "t", "tls-verify": "/no/such/ca.pem"}, "tls-verify", "file not found"),
        ({"token": "t", "url": "jira.example.com"}, "url", "absolute"),
        ({"token": "t", "unknowns": ["a"]}, "unknowns", "mapping"),
        ({"token": "t", "timeout": "soon"}, "timeout", ""),
    ],
)
def test_invalid_settings(settings, key, words):
    problems, _ = config_problems({"url": "https://jira.example.com", "project-key": PROJECT, **settings})
    assert key in problems and words in problems[key]


def test_secrets_never_appear_in_config_errors():
    _, text = config_problems({"user": "u", "password": "pw-s3cret", "token": "tok-s3cret", "sprint": "x"})
    assert "s3cret" not in text and "token: set either password or token, not both" in text


def test_postee_style_settings():
    action = JiraAction.from_spec(
        ActionSpec(
            name="jira",
            type="Jira",
            settings={
                "url": "https://jira.example.com/jira",
                "user": "u",
                "token": "t",
                "project-key": "SEC",
                "labels": "single",
                "tls-verify": "false",
                "assignee": "someone",
            },
        )
    )
    assert (action.url, action.labels, action.verify, action.assignees) == (
        "https://jira.example.com/jira",
        ("single",),
        False,
        ("someone",),
    )
    assert action.timeout == 30.0
    assert JiraAction.settings_keys >= {"url", "project-key", "unknowns", "board", "sprint", "tls-verify"}
