"""Legacy scan renderers in the running daemon: configured as templates, rendered by routes, aggregated
by number and by timeout, posted by the actions exactly as Postee posts them (the goldens)."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from postee.cli_rego import main as rego_main
from tests.daemon.helpers import running_node
from tests.helpers.http_sink import open_http_sink

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
AQUA_INPUT = (LEGACY / "inputs" / "aqua-input.json").read_bytes()
SCAN1 = (LEGACY / "scan1-input.json").read_bytes()


def golden(name: str) -> bytes:
    return (LEGACY / f"{name}.golden").read_bytes()


def legacy_config(sink_url: str, *, renderer: str, action: str, plugins: str = "") -> str:
    return f"""
aqua-server: https://myserver.com
routes:
  - name: scans
    input: contains(input.image, "")
    actions: [out]
    template: legacy
    plugins:
      unique-message-props: []
{plugins}
templates:
  - name: legacy
    legacy-scan-renderer: {renderer}
actions:
  - name: out
    type: {action}
    enable: true
    url: {sink_url}/out
"""


async def test_a_slack_route_posts_what_postee_posts(tmp_path):
    async with open_http_sink() as sink:
        cfg = legacy_config(sink.url, renderer="slack", action="slack")
        async with running_node(tmp_path, cfg) as (_, client):
            assert (await client.post("/", content=AQUA_INPUT)).status_code == 200
            (request,) = await sink.wait_for(1)
    assert request.body == golden("slack-action.aqua-input.srv.body")


async def test_aggregated_by_number_the_newest_comes_first_as_in_postee(tmp_path):
    plugins = "      aggregate-message-number: 2"
    async with open_http_sink() as sink:
        cfg = legacy_config(sink.url, renderer="slack", action="slack", plugins=plugins)
        async with running_node(tmp_path, cfg) as (_, client):
            for body in (SCAN1, AQUA_INPUT):  # Postee's golden aggregate: scan1 arrived first
                assert (await client.post("/", content=body)).status_code == 200
            (request,) = await sink.wait_for(1)
    assert request.body == golden("slack-action.aggregated.srv.body")


async def test_aggregated_by_timeout_through_a_webhook(tmp_path):
    plugins = "      aggregate-message-timeout: 3s"  # both posts land in one window
    async with open_http_sink() as sink:
        cfg = legacy_config(sink.url, renderer="html", action="webhook", plugins=plugins)
        async with running_node(tmp_path, cfg) as (node, client):
            for body in (SCAN1, AQUA_INPUT):
                assert (await client.post("/", content=body)).status_code == 200
            with trio.fail_after(20):
                (request,) = await sink.wait_for(1)
    assert request.body == golden("aggregated.html.srv.description")


async def test_an_event_the_renderer_cannot_decode_is_dropped_for_that_route_with_the_reason(tmp_path):
    async with open_http_sink() as sink:
        cfg = legacy_config(sink.url, renderer="jira", action="webhook")
        async with running_node(tmp_path, cfg) as (node, client):
            bad = json.dumps({"image": "alpine:3.18", "vulnerability_summary": {"critical": "many"}})
            assert (await client.post("/", content=bad)).status_code == 200
            assert (await client.post("/", content=AQUA_INPUT)).status_code == 200
            (request,) = await sink.wait_for(1)  # the next event still goes through
            assert request.body == golden("aqua-input.jira.srv.description")
            metrics = (await client.get("/metrics")).text
    assert 'postee_renders_total{outcome="error",template="legacy"} 1.0' in metrics


def test_route_test_shows_legacy_content(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(legacy_config("http://127.0.0.1:9", renderer="html", action="webhook"))
    event = tmp_path / "event.json"
    event.write_bytes(AQUA_INPUT)
    assert rego_main(["route", "test", "--cfgfile", str(cfg), "--event", str(event), "--json"]) == 0
    (route,) = json.loads(capsys.readouterr().out)["routes"]
    assert route["matched"] and route["content"]["description"] == golden("aqua-input.html.srv.description").decode()
    assert route["content"]["url"] == golden("aqua-input.html.srv.url").decode()


def test_render_prints_a_legacy_renderers_content(tmp_path, capsys):
    event = tmp_path / "event.json"
    event.write_bytes(AQUA_INPUT)
    args = ["render", "--template", "legacy:slack", "--event", str(event), "--aqua-server", "https://myserver.com",
            "--json"]
    assert rego_main(args) == 0
    content = json.loads(capsys.readouterr().out)
    assert content["description"] == golden("aqua-input.slack.srv.description").decode()
    assert content["title"] == golden("aqua-input.slack.title").decode()
    assert rego_main(["render", "--template", "legacy:xml", "--event", str(event)]) != 0
    assert "unknown layout type 'xml'" in capsys.readouterr().err


def test_an_unknown_renderer_is_postees_config_error(tmp_path):
    """`cases.json`'s config errors: Postee refuses any other `legacy-scan-renderer` value."""
    from postee.config import Severity, parse_config

    cases = json.loads((LEGACY / "cases.json").read_text())
    for case in cases["config_errors"]:
        data = {"templates": [case["template"]],
                "routes": [{"name": "r", "template": case["template"]["name"], "actions": []}]}
        _, problems = parse_config(data, source="cfg.yaml", environ={})
        errors = [str(p) for p in problems if p.severity is Severity.ERROR]
        assert any(case["error"] in e and "legacy-scan-renderer" in e for e in errors), errors
