"""The regopy backend (rego-cpp), the default engine, behind the `RegoBackend` interface.

Postee's modules are first rewritten by `regopy_compat` (see there for the quirks), then compiled
into a bundle once per `CompiledQuery`; every evaluation only sets the input and runs the bundle
(`Interpreter.query` would recompile on every call).

regopy needs careful handling, each point measured on 1.5.2:

- one `Interpreter` per compiled query, used by one thread only: two threads on one interpreter
  crash the process, and package names of one template leak into another loaded alongside it;
- `log_level` is set to NONE, otherwise rego-cpp logs to stdout;
- the input is set as JSON text (`set_input_term`); `set_input` with a dict stores strings unescaped;
- a bundle whose build failed crashes when queried, so it raises `RegoCompileError` instead;
- results are read from the output *text*, through the low-level calls: `Output()` raises on error
  output, `ok()` can be true on errors (`(error ... Function not found ...)`), and a bare `false`
  reads as undefined. The query is therefore always a binding, `x = <expr>`, and the text is parsed
  here: `undefined`, an error s-expression, or `{"expressions": [...], "bindings": {...}}`.
"""

from __future__ import annotations

import ctypes
import json
import re
import threading
from collections.abc import Mapping
from typing import Any

import regopy
from regopy import rego_shared

from postee.rego import regopy_compat
from postee.rego.engine import UNDEFINED, RegoCompileError, RegoEvalError

# Postee's route rules are queried as `x = data.postee.allow`; any other query gets this binding.
RESULT_VARIABLE = "postee_result"
_BINDING_QUERY = re.compile(r"^\s*(?P<var>[A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)")

_UNDEFINED_TEXT = "undefined"
_ERROR_PREFIXES = ("(", "<error>")
# `(error 6:m.rego|20|2 (errormsg 16:this is unclosed) ...)`: a length-prefixed file name, then the
# character offset and length of the offending span in that module's (rewritten) source.
_ERROR_LOCATION = re.compile(r"\(error\s+(?P<len>\d+):")
_ERROR_MESSAGE = re.compile(r"\(errormsg\s+(?P<len>\d+):")

_NODE_ERROR_MESSAGE = int(regopy.NodeKind.ErrorMessage)
rego_shared.rego.regoNodeGet.restype = ctypes.c_void_p


def _length_prefixed(text: str, match: re.Match[str]) -> str:
    start = match.end()
    return text[start : start + int(match.group("len"))]


def _parse_error_text(text: str) -> list[tuple[str, str | None, int | None]]:
    """(message, module name, character offset) for each error in a rego-cpp error s-expression."""
    errors: list[tuple[str, str | None, int | None]] = []
    for location in _ERROR_LOCATION.finditer(text):
        name = _length_prefixed(text, location)
        rest = text[location.end() + len(name) :]
        offset = None
        if rest.startswith("|"):
            digits = rest[1:].split("|", 1)[0]
            offset = int(digits) if digits.isdigit() else None
        message_match = _ERROR_MESSAGE.search(text, location.end())
        message = _length_prefixed(text, message_match) if message_match else "syntax error"
        errors.append((message, name, offset))
    if not errors:
        messages = [_length_prefixed(text, m) for m in _ERROR_MESSAGE.finditer(text)]
        errors = [(message, None, None) for message in messages] or [(text.strip(), None, None)]
    return errors


def _node_messages(node: int) -> list[str]:
    """The error messages in a rego-cpp node tree (a failed bundle carries one)."""
    messages: list[str] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if not current:
            continue
        if rego_shared.rego_node_type(current) == _NODE_ERROR_MESSAGE:
            messages.append(rego_shared.rego_node_value(current))
        for index in reversed(range(rego_shared.rego_node_size(current))):
            stack.append(rego_shared.rego.regoNodeGet(current, index))
    return messages


def _line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _binding_query(query: str) -> tuple[str, str]:
    """(query to build, variable to read): a bare expression is bound so `false` stays `false`."""
    match = _BINDING_QUERY.match(query)
    if match is not None:
        return query, match.group("var")
    return f"{RESULT_VARIABLE} = ({query})", RESULT_VARIABLE


def _parse_output(text: str, variable: str, query: str) -> Any:
    if text == _UNDEFINED_TEXT:
        return UNDEFINED
    if text.startswith(_ERROR_PREFIXES):
        messages = [message for message, _, _ in _parse_error_text(text)]
        raise RegoEvalError("; ".join(messages) or "evaluation failed", query)
    try:
        parsed = json.loads(text)
    except ValueError:
        raise RegoEvalError(
            "regopy produced a result that is not valid JSON (a string it computed is not escaped)",
            query,
        ) from None
    rows = parsed if isinstance(parsed, list) else [parsed]
    if not rows:
        return UNDEFINED
    bindings = rows[0].get("bindings") or {}
    if variable in bindings:
        return bindings[variable]
    return UNDEFINED


class RegopyQuery:
    """A query compiled into its own regopy interpreter and bundle. One thread only."""

    def __init__(self, interpreter: regopy.Interpreter, bundle: regopy.Bundle, query: str, variable: str):
        self._interpreter = interpreter
        self._bundle = bundle
        self._query = query
        self._variable = variable
        self._thread = threading.get_ident()

    @property
    def query(self) -> str:
        return self._query

    def evaluate(self, input_json: str) -> Any:
        """Evaluate with `input` = `input_json` (JSON text); a JSON value or `UNDEFINED`."""
        if threading.get_ident() != self._thread:
            # Two threads on one rego-cpp interpreter crash the whole process.
            raise RegoEvalError("a regopy query must be evaluated on the thread that compiled it", self._query)
        try:
            self._interpreter.set_input_term(input_json)
        except regopy.RegoError as exc:
            raise RegoEvalError(f"input is not valid JSON: {exc}", self._query) from None
        impl = self._interpreter._impl
        try:
            output = rego_shared.rego_bundle_query(impl, self._bundle._impl)
        except regopy.RegoError as exc:
            raise RegoEvalError(str(exc) or "evaluation failed", self._query) from None
        try:
            ok = rego_shared.rego_output_ok(output)
            text = rego_shared.rego_output_string(output)
        except UnicodeDecodeError:
            # A builtin working on bytes (regex) cut a multi-byte character.
            raise RegoEvalError("regopy produced a result that is not valid UTF-8", self._query) from None
        finally:
            rego_shared.rego_free_output(output)
        if not ok and not text.startswith(_ERROR_PREFIXES):
            raise RegoEvalError(text or "evaluation failed", self._query)
        value = _parse_output(text, self._variable, self._query)
        if self._query.strip() == "data" and isinstance(value, dict):
            value.pop(regopy_compat.HELPER_PACKAGE, None)  # ours, not the user's
        return value


RULEBOOK_PACKAGE = "postee_rulebook_answers"
"""The package of the module that asks every rule of a rule set at once (regopy has no per-rule call)."""


class RegopyRules:
    """Rules asked in ONE query, a generated partial object of their answers, on an input set once.

    A rule that errors makes that query fail as a whole; the rules are then asked each in its own
    bundle (built on the same interpreter, the first time one is needed), so the error is its rule's
    alone. One thread only, like `RegopyQuery`."""

    def __init__(self, interpreter: regopy.Interpreter, together: RegopyQuery, rules: tuple[str, ...]) -> None:
        self._interpreter = interpreter
        self._together = together
        self._rules = rules
        self._alone: dict[str, RegopyQuery] = {}

    def evaluate_each(self, input_json: str) -> list[Any]:
        try:
            answers = self._together.evaluate(input_json)
        except RegoEvalError:
            return [self._ask_alone(rule, input_json) for rule in self._rules]
        answers = answers if isinstance(answers, dict) else {}
        return [answers.get(str(index), UNDEFINED) for index in range(len(self._rules))]

    def _ask_alone(self, rule: str, input_json: str) -> Any:
        try:
            query = self._alone.get(rule)
            if query is None:
                built, variable = _binding_query(rule)
                bundle = self._interpreter.build(built)
                if not bundle.ok():
                    messages = _node_messages(rego_shared.rego_bundle_node(bundle._impl))
                    return RegoEvalError("; ".join(dict.fromkeys(messages)) or "bundle build failed", rule)
                query = self._alone[rule] = RegopyQuery(self._interpreter, bundle, rule, variable)
            return query.evaluate(input_json)
        except regopy.RegoError as exc:
            return RegoEvalError(str(exc) or "evaluation failed", rule)
        except RegoEvalError as exc:
            return exc


class RegopyBackend:
    """Compiles Postee-dialect modules with regopy through the compatibility rewrites."""

    name = "regopy"

    def compile(self, modules: Mapping[str, str], query: str) -> RegopyQuery:
        """Rewrite and add `modules`, build one bundle for `query`.

        Raises `RegoCompileError` naming the user's file and line when it is known.
        """
        for filename, source in modules.items():
            for call in regopy_compat.unsupported_calls(source):
                raise RegoCompileError(
                    f"builtin {call.name} is not available in the regopy engine (use --rego-engine regorus)",
                    filename,
                    call.line,
                )
        interpreter = regopy.Interpreter()
        interpreter.log_level = regopy.LogLevel.NONE
        rewritten = {name: regopy_compat.rewrite_module(source) for name, source in modules.items()}
        interpreter.add_module(regopy_compat.HELPER_MODULE_NAME, regopy_compat.HELPER_SOURCE)
        for filename, source in rewritten.items():
            try:
                interpreter.add_module(filename, source)
            except regopy.RegoError as exc:
                raise self._compile_error(str(exc), rewritten, filename) from None
        known = set().union(*(regopy_compat.local_names(source) for source in modules.values()))
        for filename, source in modules.items():
            for call in regopy_compat.unresolved_calls(source, known, interpreter.is_builtin):
                raise RegoCompileError(f"unknown function {call.name}", filename, call.line)
        built_query, variable = _binding_query(query)
        try:
            bundle = interpreter.build(built_query)
        except regopy.RegoError as exc:
            raise self._compile_error(str(exc), rewritten, None, query) from None
        if not bundle.ok():
            messages = _node_messages(rego_shared.rego_bundle_node(bundle._impl))
            only = next(iter(modules)) if len(modules) == 1 else None
            raise RegoCompileError("; ".join(dict.fromkeys(messages)) or "bundle build failed", only)
        return RegopyQuery(interpreter, bundle, query, variable)

    def compile_rules(self, modules: Mapping[str, str], rules: tuple[str, ...]) -> RegopyRules:
        """`modules` and a generated module collecting every rule's answer, for asking them at once."""
        answers = "".join(f'answers["{index}"] = value {{ value := {rule} }}\n' for index, rule in enumerate(rules))
        together = self.compile({**modules, f"{RULEBOOK_PACKAGE}.rego": f"package {RULEBOOK_PACKAGE}\n\n{answers}"},
                                f"x = data.{RULEBOOK_PACKAGE}.answers")
        return RegopyRules(together._interpreter, together, rules)

    @staticmethod
    def _compile_error(
        text: str, rewritten: Mapping[str, str], default_file: str | None, query: str | None = None
    ) -> RegoCompileError:
        message, name, offset = _parse_error_text(text)[0]
        if name in rewritten and offset is not None:
            return RegoCompileError(message, name, _line_of(rewritten[name], offset))
        if query is not None:
            message = f"in query {query!r}: {message}"
        return RegoCompileError(message, name if name in rewritten else default_file)
