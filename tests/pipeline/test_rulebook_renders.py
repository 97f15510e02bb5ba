"""The rule book renders, in the rules' own worker call, the templates of the routes an event matched
(issue #15: one round trip to a worker per event instead of two). What a route gets must be exactly what
rendering alone gives: the same content, the same error, and nothing rendered for a route that did not
match (a rule answering `1` does not match). Both engines.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import trio

from postee.pipeline.events import parse_event
from postee.pipeline.rendering import RenderCache
from postee.pipeline.rulebook import RuleBook
from postee.rego.library import TemplateLibrary
from postee.rego.pool import open_rego_pool
from postee.rego.render import TemplateError, TemplateSpec, load_template, render_rego
from postee.rego.rules import build_rule
from tests.helpers.http_sink import open_http_sink
from tests.pipeline.conftest import running_pipeline
from tests.pipeline.rendering_helpers import templates_and_hook

BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"no {name}"))
    for name in ("regopy", "regorus")
]

SHOWN = """package postee.shown

title := sprintf("team %v", [input.team])
result := sprintf("n=%v at %v", [input.n, input.postee.AquaServer])
"""

CONFLICTS = """package postee.conflicts

title := "conflicts"
result = "small" { input.n > 6 }
result = "large" { input.n > 7 }
"""

ONE = "package postee\n\nallow = 1 { input.n > 0 }\n"


async def templates(pool):
    library = TemplateLibrary.load()
    built = {}
    for name, body in (("shown", SHOWN), ("shown-too", SHOWN), ("conflicts", CONFLICTS), ("never", SHOWN)):
        built[name] = await load_template(TemplateSpec(name, body=body), library)
    return built


@pytest.mark.parametrize("engine", BACKENDS)
@pytest.mark.parametrize("combined", [True, False], ids=["rule-set", "rules-apart"])
async def test_renders_in_the_rules_call_are_what_rendering_alone_gives(engine, combined, tmp_path):
    (tmp_path / "one.rego").write_text(ONE)
    if combined:
        rules = {
            "team-a": build_rule("team-a", 'input.team == "a"'),
            "team-a-again": build_rule("team-a-again", 'input.team == "a"'),
            "large": build_rule("large", "input.n > 5"),
            "answers-one": build_rule("answers-one", None, ["one.rego"], base=str(tmp_path)),
            "everything": build_rule("everything", None),
        }
    else:  # a single distinct rule is not combined: asked apart, in the same call
        rules = {"large": build_rule("large", "input.n > 5"), "everything": build_rule("everything", None)}
    async with open_rego_pool(engine, isolation="thread", workers=1) as pool:
        built = await templates(pool)
        uses = {"team-a": "shown", "team-a-again": "shown", "large": "conflicts", "answers-one": "never",
                "everything": "shown-too"}
        renderer = RenderCache(pool, aqua_server="https://aqua.example")
        rulebook = RuleBook(pool, rules, renderer=renderer,
                            renders={route: built[uses[route]] for route in rules})
        for body in ({"team": "a", "n": 8}, {"team": "a", "n": 7}, {"team": "b", "n": 1}, {"team": "a", "n": 0}):
            event = parse_event(json.dumps(body).encode())
            calls = pool.stats.calls
            decisions = await rulebook.decide(event, list(rules))
            assert pool.stats.calls == calls + 1  # the rules and every render: one round trip

            wanted = {uses[route] for route, decision in decisions.items() if decision is True}
            assert decisions.get("answers-one") in (None, False)
            for name, template in built.items():
                ready = renderer.ready(template, event.id)
                if name not in wanted:
                    assert ready is None, (body, name)
                    continue
                content, error = ready
                try:
                    alone = await render_rego(pool, template, event.body, "https://aqua.example", event.text)
                except TemplateError as exc:
                    assert content is None and str(error) == str(exc), (body, name)
                else:
                    assert error is None and content == alone, (body, name)
            if body["n"] == 8:  # both result rules hold: the template's own error, as alone
                assert "conflict" in str(renderer.ready(built["conflicts"], event.id)[1]).lower()


async def test_routes_take_the_rendered_content_with_no_render_call_of_their_own(tmp_path):
    """Through a whole pipeline: one worker call per event, the webhook gets the content rendering gives,
    and a route whose template fails reports that template's error."""
    outcomes = []
    async with open_http_sink() as sink:
        cfg = f"""
aqua-server: https://aqua.example
routes:
  - name: team-a
    input: input.team == "a"
    actions: [hook]
    template: shown
  - name: team-a-again
    input: input.team == "a"
    actions: [hook]
    template: shown
  - name: large
    input: input.n > 5
    actions: [hook]
    template: conflicts
  - name: nobody
    input: input.team == "zzz"
    actions: [hook]
    template: shown
{templates_and_hook(sink.url, {"shown": SHOWN, "conflicts": CONFLICTS})}"""
        async with running_pipeline(tmp_path, cfg, on_outcome=lambda event, outcome: outcomes.append(
                (event.id, outcome))) as pipeline:
            pool = pipeline.renderer.pool
            calls = pool.stats.calls
            events = [parse_event(json.dumps({"team": team, "n": n}).encode())
                      for team, n in (("a", 8), ("a", 1), ("b", 7), ("b", 0))]
            for event in events:
                await pipeline.router.address.send(event)
            with trio.fail_after(10):
                while len(outcomes) < 4 * len(events) or len(sink.requests) < 5:
                    await trio.sleep(0.01)
            assert pool.stats.calls == calls + len(events)
            library = TemplateLibrary.load()
            shown = await load_template(TemplateSpec("shown", body=SHOWN), library)
            conflicts = await load_template(TemplateSpec("conflicts", body=CONFLICTS), library)
            expected = [(await render_rego(pool, shown, e.body, "https://aqua.example", e.text)).description
                        for e in events[:2]]
            with pytest.raises(TemplateError) as conflict:
                await render_rego(pool, conflicts, events[0].body, "https://aqua.example", events[0].text)
    by_route = {(event_id, outcome.route): outcome for event_id, outcome in outcomes}
    assert by_route[(events[0].id, "large")].dropped == f"error: {conflict.value}"
    assert by_route[(events[2].id, "large")].dropped is None
    assert not by_route[(events[0].id, "nobody")].matched
    bodies = sorted(request.body.decode() for request in sink.requests)
    assert bodies == sorted([expected[0], expected[0], expected[1], expected[1], "small"])
