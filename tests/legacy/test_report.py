"""Owners, urls, aggregation and the markup primitives of the legacy renderers."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postee.legacy import RENDERERS, LegacyRenderError, aggregate_contents, render_content, server_url
from postee.legacy.markup import go_json_string
from postee.legacy.report import query_escape

SCAN = {"image": "alpine:3", "registry": "docker.io"}


# --- owners (Postee panics on anything but an array of strings) --------------------------------


@pytest.mark.parametrize(
    ("owners", "expected"),
    [
        (["alice", "bob"], "alice;bob"),
        (["alice", None, "bob"], "alice;bob"),  # Postee: panic (interface conversion)
        (None, None),  # Postee: panic
        ([None], None),  # Postee: panic
        ([], None),
        ([""], None),
        (["", "bob"], ";bob"),
    ],
)
def test_owners_are_the_string_entries_joined_and_absent_when_empty(owners, expected):
    for renderer in RENDERERS:
        content = render_content({**SCAN, "application_scope_owners": owners}, renderer, "")
        assert content.get("owners") == expected
        assert content["title"] == "alpine:3 vulnerability scan report"


def test_owners_come_from_the_exact_key_only():
    content = render_content({**SCAN, "Application_Scope_Owners": ["alice"]}, "html", "")
    assert "owners" not in content


@pytest.mark.parametrize("owners", ["alice", {"name": "alice"}, 3, ["alice", 3], [["alice"]]])
def test_owners_of_another_type_fail_the_decoding_like_in_postee(owners):
    with pytest.raises(LegacyRenderError, match="application_scope_owners"):
        render_content({**SCAN, "application_scope_owners": owners}, "html", "")


# --- server url, url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aqua_server", "expected"),
    [
        ("", ""),
        ("https://myserver.com", "https://myserver.com/#/images/"),
        ("https://myserver.com/", "https://myserver.com/#/images/"),
        ("http://h:8080/aqua", "http://h:8080/aqua/#/images/"),
    ],
)
def test_server_url(aqua_server, expected):
    assert server_url(aqua_server) == expected


def test_url_escapes_the_image_like_go_query_escape_but_not_the_registry():
    assert query_escape("a-Z_0.~ b/:?&=+%é\x00") == "a-Z_0.~+b%2F%3A%3F%26%3D%2B%25%C3%A9%00"
    content = render_content({"image": "team/app 1", "registry": "reg/x y"}, "jira", server_url("https://s"))
    assert content["url"] == "https://s/#/images/reg/x y/team%2Fapp+1"
    assert content["description"].endswith(f"See more: [{content['url']}|{content['url']}]\n")


def test_no_see_more_line_without_a_server_url_but_the_url_is_still_built():
    content = render_content(SCAN, "html", "")
    assert content["url"] == "docker.io/alpine%3A3"
    assert "See more" not in content["description"]


def test_unknown_renderer_is_postees_unknown_layout_type():
    with pytest.raises(ValueError, match="unknown layout type") as info:
        render_content(SCAN, "xml", "")
    assert not isinstance(info.value, LegacyRenderError)
    with pytest.raises(ValueError, match="unknown layout type"):
        aggregate_contents("markdown", [])


# --- aggregation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("urls", "expected"),
    [(["a", "b"], "a\nb"), (["", "b"], "b"), (["a", "", "c"], "a\n\nc"), (["", ""], ""), ([], "")],
)
def test_aggregated_url_adds_a_newline_only_once_the_text_is_non_empty(urls, expected):
    items = [{"title": "t", "description": "", "url": url} for url in urls]
    assert aggregate_contents("jira", items)["url"] == expected


def test_aggregation_keeps_the_given_order_and_joins_non_empty_owners():
    items = [
        {"title": "new", "description": "N\n", "url": "u1", "owners": "a;b"},
        {"title": "mid", "description": "M\n", "url": "u2"},
        {"title": "old", "description": "O\n", "url": "u3", "owners": "c"},
    ]
    assert aggregate_contents("jira", items) == {
        "title": "Vulnerability scan report",
        "description": "h1. new\nN\nh1. mid\nM\nh1. old\nO\n",
        "url": "u1\nu2\nu3",
        "owners": "a;b;c",
    }
    assert "owners" not in aggregate_contents("html", items[1:2])
    assert aggregate_contents("html", items[1:2])["description"] == "<h1>mid</h1>\nM\n"
    slack = aggregate_contents("slack", items[1:2])["description"]
    assert slack == '{"type":"section","text":{"type":"mrkdwn","text":"*mid*"}},M\n'


# --- markup -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "go"),
    [
        ("<a href='x'>&</a>", '"\\u003ca href=\'x\'\\u003e\\u0026\\u003c/a\\u003e"'),
        ("line\u2028para\u2029", '"line\\u2028para\\u2029"'),
        ("\n\r\t", '"\\n\\r\\t"'),
        ("\b\f\x00\x1b\x1f", '"\\u0008\\u000c\\u0000\\u001b\\u001f"'),
        ('"\\', '"\\"\\\\"'),
        ("\x7f é ✓ \U0001f600", '"\x7f é ✓ \U0001f600"'),
        ("lone \ud800", '"lone \ufffd"'),
    ],
)
def test_go_json_string_escapes_as_go_1_18(text, go):
    assert go_json_string(text) == go


@given(st.text())
def test_go_json_string_is_json_that_reads_back(text):
    assert json.loads(go_json_string(text)) == text


def test_nothing_from_the_event_is_escaped_in_html_and_jira():
    event = {"image": "<b>&x|y", "registry": "r"}
    html = render_content(event, "html", "")["description"]
    assert html.startswith("<p>Image name: <b>&x|y</p>\n")
    jira = render_content(event, "jira", "")["description"]
    assert jira.startswith("Image name: <b>&x|y\n")


def test_slack_tables_chunk_five_rows_per_block_with_numbered_rows():
    checks = [{"control": f"c{n}", "policy_name": "P", "failed": n % 2 == 0} for n in range(6)]
    description = render_content({"image_assurance_results": {"checks_performed": checks}}, "slack", "")["description"]
    blocks = json.loads("[" + description[:-1] + "]")
    tables = [b["fields"] for b in blocks if "fields" in b][1:]  # after the counts table
    assert [len(fields) for fields in tables] == [10, 4]
    assert [f["text"] for f in tables[0][:4]] == ["*#* *Control*", "*Policy Name* / *Status*", "1 c0", "P / FAIL"]
    assert [f["text"] for f in tables[1]] == ["5 c4", "P / FAIL", "6 c5", "P / PASS"]
