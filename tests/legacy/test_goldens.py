"""Every case of shared/compat/legacy/cases.json, compared byte for byte with Postee's own output.

Eval cases render one event; aggregate cases build the items as Postee's MsgHandling does (content
plus owners) and aggregate them newest first; slack_action cases post the rendered content through the
real Slack action to a local HTTP server and compare the exact request body.
"""

import pytest

from postee.actions import ActionSpec, Delivery
from postee.actions.slack import SlackAction
from postee.legacy import aggregate_contents, render_content, server_url
from tests.helpers.http_sink import Reply, open_http_sink
from tests.legacy.goldens import CASES, golden, load_event

BY_NAME = {case["name"]: case for case in CASES}


def content_of(case):
    """The content the case describes, as the pipeline would get it from the public API."""
    assert server_url(case["aqua_server"]) == case["server_url"]
    if case["kind"] == "eval":
        return render_content(load_event(case["input"]), case["renderer"], case["server_url"])
    items = [
        render_content(load_event(path), case["renderer"], case["server_url"]) for path in case["items_in_list_order"]
    ]
    return aggregate_contents(case["renderer"], items)


def test_all_39_cases_are_here():
    assert len(CASES) == 39
    assert {case["kind"] for case in CASES} == {"eval", "aggregate", "slack_action"}


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] != "slack_action"], ids=lambda c: c["name"])
def test_content_matches_golden_bytes(case):
    content = content_of(case)
    for key, path in case["expected"].items():
        assert content[key].encode("utf-8") == golden(path), key
    owners = case.get("owners_added_by_msghandling")
    if case["kind"] == "eval":
        assert content.get("owners") == owners
        assert set(content) == {"title", "description", "url"} | ({"owners"} if owners else set())
    else:
        assert set(content) == set(case["expected"])


@pytest.mark.parametrize("case", [c for c in CASES if c["kind"] == "slack_action"], ids=lambda c: c["name"])
async def test_slack_action_posts_golden_body(case):
    content = content_of(BY_NAME[case["content_from"]])
    async with open_http_sink([Reply(200, "ok")]) as sink:
        spec = ActionSpec(name="legacy-slack", type="slack", settings={"url": sink.url + "/services/T/B/x"})
        async with SlackAction.from_spec(spec) as action:
            result = await action.send(Delivery(content=content, route="scans"))
        requests = list(sink.requests)
    assert result.output == "ok"
    assert [r.body for r in requests] == [golden(path) for path in case["expected"]["bodies"]]
    assert all(r.method == "POST" and r.header("content-type").startswith("application/json") for r in requests)
