"""All of a config's route rules in one query decide exactly what each rule decides alone (issue #15).

Each rule's modules are moved under a namespace of their own (`combine_rules`), so the test rules
include what could tell them apart: two routes whose filter files define the same helper package
differently, a rule that must not see another route's package, a non-boolean `allow`, an undefined `allow`, a
rule shared by two routes, and a rule that errors on some events. Both engines.
"""

from __future__ import annotations

import importlib.util
import json
import random

import pytest

from postee.pipeline.events import parse_event
from postee.pipeline.rulebook import RuleBook
from postee.rego.engine import RegoError
from postee.rego.pool import open_rego_pool
from postee.rego.rules import build_rule, combine_rules

BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None, reason=f"no {name}"))
    for name in ("regopy", "regorus")
]

FILES = {
    "lib-five.rego": "package lib\n\nlimit = 5\n",
    "lib-seven.rego": "package lib\n\nlimit = 7\n",
    "over-limit.rego": "package postee\n\nimport data.lib\n\nallow { input.n > lib.limit }\n",
    "own-packages.rego": "package postee\n\nallow { not data.helpers.x; data.lib.limit == 5 }\n",
    "helpers.rego": "package helpers\n\nx = 1\n",
    "uses-helpers.rego": "package postee\n\nallow { data.helpers.x == 1; input.n != 0 }\n",
    "conflicts.rego": "package postee\n\nallow = true { input.n > 6 }\n\nallow = false { input.n > 7 }\n",
    "truthy.rego": 'package postee\n\nallow = "yes" { input.n > 0 }\n',
    "undefined-unless-team.rego": 'package postee\n\nallow { input.team == "a" }\n',
}

INLINE = {
    "team-a": 'input.team == "a"',
    "team-a-again": 'input.team == "a"',
    "image-alpine": 'contains(input.image, "alpine")',
    "divides": "input.total / input.parts > 1",
    "critical": "input.vulnerability_summary.critical > 0",
}

ROUTE_FILES = {
    "over-five": ["lib-five.rego", "over-limit.rego"],
    "over-seven": ["lib-seven.rego", "over-limit.rego"],
    "sees-own-data": ["lib-five.rego", "own-packages.rego"],
    "uses-helpers": ["helpers.rego", "uses-helpers.rego"],
    "truthy": ["truthy.rego"],
    "conflicts-on-eight": ["conflicts.rego"],
    "undefined-unless-team": ["undefined-unless-team.rego"],
}


def events() -> list[bytes]:
    rng = random.Random(15)
    out = []
    for _ in range(24):
        body = {
            "n": rng.choice([-1, 0, 5, 6, 7, 8]),
            "team": rng.choice(["a", "b", 7]),
            "image": rng.choice(["alpine:3.18", "debian:12", "quay.io/alpine"]),
            "total": 4,
            "parts": rng.choice([0, 1, 8]),
        }
        if rng.random() < 0.5:
            body["vulnerability_summary"] = {"critical": rng.choice([0, 2])}
        if rng.random() < 0.2:
            del body["n"]
        out.append(json.dumps(body).encode())
    out.append(b'{"data": {"postee": {"allow": true}}, "package": "data.lib"}')
    return out


def rules(base: str) -> dict:
    built = {name: build_rule(name, text) for name, text in INLINE.items()}
    built.update({name: build_rule(name, None, files, base=base) for name, files in ROUTE_FILES.items()})
    return built


def outcome(value) -> str | bool:
    return f"error: {value}" if isinstance(value, RegoError) else value


@pytest.mark.parametrize("engine", BACKENDS)
async def test_combined_rules_decide_as_each_rule_alone(engine, tmp_path):
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    route_rules = rules(str(tmp_path))
    combined = combine_rules(route_rules.values())
    assert combined is not None and combined.keys["team-a"] == combined.keys["team-a-again"]
    async with open_rego_pool(engine, isolation="thread", workers=1) as pool:
        for rule in route_rules.values():
            await rule.check(pool)
        rulebook = RuleBook(pool, route_rules)
        seen: dict[str, set] = {name: set() for name in route_rules}
        for raw in events():
            event = parse_event(raw)
            decisions = await rulebook.decide(event, list(route_rules))
            assert decisions is not None
            for name, rule in route_rules.items():
                try:
                    alone: str | bool = await rule.matches(pool, event.body, event.text)
                except RegoError as exc:  # the same message, as if the rule were alone
                    alone = outcome(exc)
                assert outcome(decisions[name]) == alone, (name, raw)
                seen[name].add(alone if not isinstance(alone, str) else "error")
        assert rulebook.calls == len(events())  # one worker call per event, also when a rule errors
    # every rule was seen both ways, so the comparison could fail
    assert all({True, False} <= seen[name] for name in INLINE), seen
    assert seen["over-five"] == {True, False} and seen["over-seven"] == {True, False}
    assert seen["sees-own-data"] == {True} and seen["truthy"] == {False}
    assert seen["conflicts-on-eight"] == {True, False, "error"}  # errors on some events, and fails alone


async def test_one_rule_is_not_combined():
    assert combine_rules([build_rule("a", "input.x == 1"), build_rule("b", "input.x == 1"),
                          build_rule("c", None)]) is None
