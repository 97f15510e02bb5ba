"""The regopy backend behind the engine interface: results, errors, and the crash guards."""

from __future__ import annotations

import json
import threading

import pytest

from postee.rego.engine import UNDEFINED, RegoCompileError, RegoEvalError
from postee.rego.regopy_backend import RegopyBackend

VALUES = """package t

f := false
n := null
s := "text"
u := 1 {
	false
}
"""


@pytest.fixture
def backend() -> RegopyBackend:
    return RegopyBackend()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("x = data.t.f", False),
        ("data.t.f", False),  # a bare false must not read as undefined
        ("x = data.t.n", None),
        ("data.t.s", "text"),
        ("x = data.t.u", UNDEFINED),
        ("data.t.missing", UNDEFINED),
    ],
)
def test_false_null_and_undefined_are_distinct(backend: RegopyBackend, query: str, expected: object) -> None:
    result = backend.compile({"t.rego": VALUES}, query).evaluate("{}")
    assert result is expected or (result == expected and type(result) is type(expected))


def test_one_bundle_serves_many_inputs(backend: RegopyBackend) -> None:
    query = backend.compile(
        {"p.rego": "package postee\n\ndefault allow = false\n\nallow {\n\tinput.ok\n}\n"}, "x = data.postee.allow"
    )
    assert [query.evaluate(json.dumps({"ok": ok})) for ok in (True, False, True)] == [True, False, True]


def test_parse_error_names_the_users_file_and_line(backend: RegopyBackend) -> None:
    source = "package t # trailing comments are stripped, lines are kept\n\n# a comment\nx := {\n"
    with pytest.raises(RegoCompileError) as caught:
        backend.compile({"templates/broken.rego": source}, "data.t")
    assert caught.value.file == "templates/broken.rego"
    assert caught.value.line == 4


def test_failed_bundle_raises_instead_of_crashing(backend: RegopyBackend) -> None:
    # Iteration inside a call in a rule *head* is not rewritten; regopy cannot build it.
    source = "package t\n\nx := [upper(input.names[_])]\n"
    with pytest.raises(RegoCompileError) as caught:
        backend.compile({"t.rego": source}, "data.t.x")
    assert caught.value.file == "t.rego"


def test_unsupported_builtin_is_a_compile_error_with_line(backend: RegopyBackend) -> None:
    source = 'package t\n\nx := y {\n\ty := http.send({"method": "get", "url": input.u})\n}\n'
    with pytest.raises(RegoCompileError) as caught:
        backend.compile({"t.rego": source}, "data.t.x")
    assert (caught.value.file, caught.value.line) == ("t.rego", 4)
    assert "http.send" in caught.value.message


def test_unknown_function_is_a_compile_error_with_line(backend: RegopyBackend) -> None:
    # regopy itself would report it only when an evaluation reaches the call.
    source = "package t\n\nx := y {\n\ty := no_such_function(1)\n}\n"
    with pytest.raises(RegoCompileError) as caught:
        backend.compile({"t.rego": source}, "data.t.x")
    assert (caught.value.file, caught.value.line) == ("t.rego", 4)
    assert "no_such_function" in caught.value.message


def test_functions_from_other_modules_and_imports_resolve(backend: RegopyBackend) -> None:
    common = "package postee\n\nwith_default(o, p, d) = d {\n\tnot o[p]\n}\n"
    template = (
        "package postee.t\n\nimport data.postee.with_default\nimport data.postee as helpers\n\n"
        'a := with_default(input, "x", 1)\nb := helpers.with_default(input, "x", 2)\n'
        'c := data.postee.with_default(input, "x", 3)\nd := count(upper("ab"))\ne {\n\tprint("seen", a)\n}\n'
    )
    query = backend.compile({"common.rego": common, "t.rego": template}, "data.postee.t")
    assert query.evaluate("{}") == {"a": 1, "b": 2, "c": 3, "d": 2, "e": True}


def test_runtime_error_raises_eval_error(backend: RegopyBackend) -> None:
    # A call through `data.` is not checked at load time; rego-cpp reports it while evaluating,
    # as error text with ok() still true.
    query = backend.compile({"t.rego": "package t\n\nx := data.t.no_such_function(1)\n"}, "data.t.x")
    with pytest.raises(RegoEvalError, match="no_such_function"):
        query.evaluate("{}")


def test_conflicting_values_raise_eval_error(backend: RegopyBackend) -> None:
    source = "package t\n\nx := 1 {\n\tinput.a\n}\n\nx := 2 {\n\tinput.a\n}\n"
    query = backend.compile({"t.rego": source}, "data.t.x")
    with pytest.raises(RegoEvalError):
        query.evaluate('{"a": true}')


def test_invalid_input_json_raises_eval_error(backend: RegopyBackend) -> None:
    query = backend.compile({"t.rego": VALUES}, "data.t.s")
    with pytest.raises(RegoEvalError):
        query.evaluate("{not json")


def test_other_thread_is_refused(backend: RegopyBackend) -> None:
    query = backend.compile({"t.rego": VALUES}, "data.t.s")
    errors: list[BaseException] = []

    def use() -> None:
        try:
            query.evaluate("{}")
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    worker = threading.Thread(target=use)
    worker.start()
    worker.join(timeout=10)
    assert len(errors) == 1 and isinstance(errors[0], RegoEvalError)


def test_strings_with_escapes_round_trip(backend: RegopyBackend) -> None:
    text = 'he said "hi" <b> & \\ back\nslash\ttab é ✓'
    query = backend.compile({"t.rego": "package t\n\nx := input.s\n"}, "data.t.x")
    assert query.evaluate(json.dumps({"s": text}, ensure_ascii=False)) == text


def test_nothing_is_printed_to_stdout(backend: RegopyBackend, capfd: pytest.CaptureFixture[str]) -> None:
    backend.compile({"t.rego": VALUES}, "data.t").evaluate("{}")
    assert capfd.readouterr().out == ""


def test_whole_data_query_hides_the_helper_package(backend: RegopyBackend) -> None:
    # Body templates are evaluated as `data`; the compat helper package must neither break the
    # output nor show up in it.
    source = 'package inline\n\nresult := upper(input.s)\ntitle := "t"\n'
    query = backend.compile({"body.rego": source}, "data")
    assert query.evaluate(json.dumps({"s": "a\\b\nc"})) == {"inline": {"result": "A\\B\nC", "title": "t"}}
