"""Route rules: Postee's wrapper for `input:`, `input-files` under REGO_FILTERS_PATH, errors located."""

from __future__ import annotations

import importlib.util
import json

import pytest

from postee.rego.engine import RegoCompileError
from postee.rego.pool import open_rego_pool
from postee.rego.rules import (
    DEFAULT_FILTERS_PATH,
    ENV_FILTERS_PATH,
    RULE_QUERY,
    build_rule,
    resolve_filter_file,
    wrap_inline,
)

TIMEOUT = 30.0


def _available(name: str, module: str) -> bool:
    return (
        importlib.util.find_spec(module) is not None
        and importlib.util.find_spec(f"postee.rego.{name}_backend") is not None
    )


BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(not _available(name, module), reason=f"no {name}"))
    for name, module in (("regopy", "regopy"), ("regorus", "regorus"))
]


@pytest.fixture(params=BACKENDS)
async def pool(request):
    async with open_rego_pool(request.param, workers=2, timeout=TIMEOUT, isolation="thread") as pool:
        yield pool


AQUA_EVENT = {"image": "alpine:3.18", "registry": "Docker Hub", "vulnerability_summary": {"critical": 2}}


def test_inline_wrapper_is_postees():
    assert wrap_inline('contains(input.image, "alpine")') == (
        'package postee\n\ndefault allow = false\n\nallow {\ncontains(input.image, "alpine")\n}\n'
    )
    assert build_rule("r", "input.x == 1").spec.query == RULE_QUERY


async def test_inline_rule_both_outcomes(pool):
    rule = build_rule("alpine", 'contains(input.image, "alpine")\ninput.vulnerability_summary.critical > 0')
    await rule.check(pool)
    assert await rule.matches(pool, AQUA_EVENT)
    assert not await rule.matches(pool, {**AQUA_EVENT, "image": "debian:12"})
    assert not await rule.matches(pool, {"image": "alpine"})  # critical undefined -> default false


@pytest.mark.parametrize("text", [None, "", "  \n  "])
async def test_empty_input_matches_every_object(pool, text):
    rule = build_rule("all", text)
    assert rule.matches_all
    await rule.check(pool)
    assert await rule.matches(pool, {})
    assert await rule.matches(pool, AQUA_EVENT)


@pytest.mark.parametrize("event", [[1, 2], "alpine", 3, None])
async def test_event_must_be_an_object(pool, event):
    for rule in (build_rule("all", ""), build_rule("any", "true")):
        assert not await rule.matches(pool, event)


async def test_only_boolean_true_matches(pool, tmp_path):
    (tmp_path / "truthy.rego").write_text('package postee\n\nallow = "yes"\n')
    rule = build_rule("truthy", None, ["truthy.rego"], base=str(tmp_path))
    await rule.check(pool)
    assert not await rule.matches(pool, AQUA_EVENT)


async def test_event_json_text_is_used_when_given(pool):
    rule = build_rule("x", "input.x == 1")
    assert await rule.matches(pool, {"x": 1}, json.dumps({"x": 1}))


async def test_input_files_are_ored_and_take_precedence(pool, tmp_path):
    base = tmp_path / "rego-filters"
    base.mkdir()
    (base / "alpine.rego").write_text('package postee\n\nallow {\n  contains(input.image, "alpine")\n}\n')
    (base / "critical").write_text(  # no extension, like Postee allows
        "package postee\n\nimport future.keywords.if\n\nallow if input.vulnerability_summary.critical > 5\n"
    )
    # `input` text is ignored when input-files are given.
    rule = build_rule("files", "false", ["alpine.rego", f"{base}/critical"], base=str(base))
    await rule.check(pool)
    assert await rule.matches(pool, AQUA_EVENT)  # alpine
    assert await rule.matches(pool, {"image": "debian", "vulnerability_summary": {"critical": 9}})
    assert not await rule.matches(pool, {"image": "debian", "vulnerability_summary": {"critical": 1}})


def test_filter_file_resolution(monkeypatch):
    monkeypatch.delenv(ENV_FILTERS_PATH, raising=False)
    assert DEFAULT_FILTERS_PATH == "./rego-filters"
    assert resolve_filter_file("a.rego") == "rego-filters/a.rego"
    assert resolve_filter_file("./rego-filters/a.rego") == "./rego-filters/a.rego"
    monkeypatch.setenv(ENV_FILTERS_PATH, "/etc/filters")
    assert resolve_filter_file("a.rego") == "/etc/filters/a.rego"
    assert resolve_filter_file("/etc/filters/sub/a") == "/etc/filters/sub/a"


def test_filters_path_from_environment(monkeypatch, tmp_path):
    (tmp_path / "f.rego").write_text("package postee\n\nallow = true\n")
    monkeypatch.setenv(ENV_FILTERS_PATH, str(tmp_path))
    rule = build_rule("env", None, ["f.rego"])
    assert rule.spec.module_map == {str(tmp_path / "f.rego"): "package postee\n\nallow = true\n"}


def test_missing_filter_file_is_named(tmp_path):
    with pytest.raises(RegoCompileError) as info:
        build_rule("r1", None, ["missing.rego"], base=str(tmp_path))
    assert info.value.file == str(tmp_path / "missing.rego")
    assert "route 'r1'" in str(info.value) and "missing.rego" in str(info.value)


async def test_inline_syntax_error_points_at_users_line(pool):
    rule = build_rule("broken", 'input.image == "a"\ninput.registry == ')
    with pytest.raises(RegoCompileError) as info:
        await rule.check(pool)
    assert info.value.file == "route 'broken'"
    assert info.value.line == 2
    assert str(info.value).startswith("route 'broken':2: input: ")


async def test_inline_unsafe_variable_is_a_load_time_error(pool):
    rule = build_rule("unsafe", "input.image == x")
    if pool.backend_name == "regopy":
        # regopy 1.5.2 does not report unsafe variables; such a rule is simply never true.
        await rule.check(pool)
        assert not await rule.matches(pool, {"image": "x"})
        return
    with pytest.raises(RegoCompileError) as info:
        await rule.check(pool)
    assert info.value.file == "route 'unsafe'" and info.value.line == 1


async def test_filter_file_error_names_file_and_line(pool, tmp_path):
    (tmp_path / "good.rego").write_text("package postee\n\nallow = true\n")
    (tmp_path / "bad.rego").write_text("package postee\n\nallow {\n  input.x ==\n}\n")
    rule = build_rule("files", None, ["good.rego", "bad.rego"], base=str(tmp_path))
    with pytest.raises(RegoCompileError) as info:
        await rule.check(pool)
    assert info.value.file == str(tmp_path / "bad.rego")
    assert info.value.line in (3, 4, 5)  # engines point at the rule or the unfinished expression
    assert "route 'files'" in str(info.value)
