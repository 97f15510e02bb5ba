"""The regorus backend: Postee's dialect, `jsonformat`, results, errors, and its one-thread rule."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("regorus")

from postee.rego.backends import get_backend
from postee.rego.engine import UNDEFINED, RegoCompileError, RegoEvalError
from postee.rego.regorus_backend import RegorusBackend

RULE_QUERY = "x = data.postee.allow"


def compile_one(source: str, query: str, filename: str = "policy.rego"):
    return RegorusBackend().compile({filename: source}, query)


def test_selected_by_name() -> None:
    backend = get_backend("regorus")
    assert isinstance(backend, RegorusBackend)
    assert backend.name == "regorus"


def test_postee_dialect_v0_syntax_and_future_keywords() -> None:
    source = """package postee
import future.keywords

default allow = false

allow {
    some v in input.vulns
    v.severity == "critical"
}
"""
    query = compile_one(source, RULE_QUERY)
    assert query.evaluate('{"vulns": [{"severity": "low"}, {"severity": "critical"}]}') is True
    assert query.evaluate('{"vulns": [{"severity": "low"}]}') is False
    assert query.evaluate("{}") is False


def test_the_binding_of_x_is_the_value_of_a_rule_query() -> None:
    query = compile_one("package postee\nallow = input.v\n", RULE_QUERY)
    assert query.evaluate('{"v": "yes"}') == "yes"
    assert query.evaluate("{}") is UNDEFINED


def test_undefined_is_not_null() -> None:
    query = compile_one("package p\nx = input.missing\ny = null\n", "data.p")
    assert query.evaluate("{}") == {"y": None}
    assert compile_one("package p\nx = input.missing\n", "data.p.x").evaluate("{}") is UNDEFINED
    assert compile_one("package p\n", "data.nothing.here").evaluate("{}") is UNDEFINED


def test_a_package_query_returns_all_its_rules() -> None:
    source = 'package postee.t\ntitle := "T"\nresult := sprintf("%s!", [input.name])\n'
    assert compile_one(source, "data.postee.t").evaluate('{"name": "n"}') == {"title": "T", "result": "n!"}


def test_jsonformat_is_go_marshal_indent() -> None:
    source = "package p\nresult := jsonformat(input)\n"
    value = compile_one(source, "data.p.result").evaluate('{"b": [1.0, 2.5, {}], "a": "<&>", "c": []}')
    assert value == '{\n "a": "\\u003c\\u0026\\u003e",\n "b": [\n  1,\n  2.5,\n  {}\n ],\n "c": []\n}'


def test_input_strings_keep_their_escapes() -> None:
    query = compile_one('package p\nr := sprintf("%s|%s", [input.q, input.n])\n', "data.p.r")
    assert query.evaluate('{"q": "say \\"hi\\"\\n", "n": "é"}') == 'say "hi"\n|é'


def test_sets_come_back_as_sorted_lists() -> None:
    assert compile_one('package p\ns := {"b", "a", 1}\n', "data.p.s").evaluate("{}") == [1, "a", "b"]


def test_numbers_beyond_64_bits_survive() -> None:
    # regorus cannot hand these to Python directly; the backend falls back to its JSON output.
    # (regorus itself keeps integers beyond 64 bits only as doubles, unlike OPA.)
    query = compile_one("package p\nn := input.n\nf := input.f\n", "data.p")
    value = query.evaluate('{"n": 123456789012345678901234, "f": 1e300}')
    assert value == {"n": pytest.approx(1.2345678901234568e23), "f": 1e300}


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(RegoCompileError) as caught:
        RegorusBackend().compile(
            {"ok.rego": "package a\nx := 1\n", "broken.rego": "package b\n\nx := {\n  1 +\n}\n"}, "data.b.x"
        )
    assert caught.value.file == "broken.rego"
    assert caught.value.line == 5
    assert "Stack backtrace" not in str(caught.value)
    assert str(caught.value).startswith("broken.rego:5: ")


def test_unsafe_variable_is_reported_when_evaluated_with_its_location() -> None:
    query = compile_one("package p\n\nx := y\n", "data.p.x", filename="unsafe.rego")
    with pytest.raises(RegoEvalError) as caught:
        query.evaluate("{}")
    assert "unsafe.rego:3" in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "package p\nx := 1 / input.zero\n",
        "package p\nx = 1 { true }\nx = 2 { true }\n",
    ],
    ids=["divide-by-zero", "conflict"],
)
def test_evaluation_errors_are_rego_eval_errors(source: str) -> None:
    query = compile_one(source, "data.p.x")
    with pytest.raises(RegoEvalError) as caught:
        query.evaluate('{"zero": 0}')
    assert caught.value.query == "data.p.x"


def test_invalid_input_json_is_an_eval_error() -> None:
    query = compile_one("package p\nx := 1\n", "data.p.x")
    with pytest.raises(RegoEvalError):
        query.evaluate("{not json")
    assert query.evaluate("{}") == 1  # still usable afterwards


def test_use_from_another_thread_is_an_error_not_a_panic() -> None:
    query = compile_one("package p\nx := 1\n", "data.p.x")
    outcome: list[BaseException | object] = []

    def other_thread() -> None:
        try:
            outcome.append(query.evaluate("{}"))
        except BaseException as exc:  # a Rust panic would be a BaseException
            outcome.append(exc)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], RegoEvalError)
    assert query.evaluate("{}") == 1  # the creating thread can still use it


def test_compiled_query_is_reusable_across_many_inputs() -> None:
    query = compile_one("package p\nx := input.n * 2\n", "data.p.x")
    assert [query.evaluate(f'{{"n": {n}}}') for n in range(50)] == [n * 2 for n in range(50)]
