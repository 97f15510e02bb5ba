"""The regorus backend: Microsoft's Rust Rego engine (Python wheel `gordon-to-regorus`).

It runs Postee's templates unmodified (Rego v0 syntax, `import future.keywords`) in a few
milliseconds, so it needs no compatibility layer, only Postee's custom builtin `jsonformat`
(registered as a Python extension that encodes exactly like Go's `json.MarshalIndent`).

Two properties of the engine shape this module:

- A `regorus.Engine` is bound to the thread that created it: calling it from another thread raises
  a Rust panic (a `BaseException`, not an `Exception`). A `RegorusQuery` therefore remembers its
  creating thread and refuses, with `RegoEvalError`, to be used from any other one. Compile and
  evaluate on the same thread (the worker pool keeps one compiled query per worker thread/process).
- regorus parses at `add_policy` time but checks rules (unsafe variables, conflicts) lazily, when a
  query first reaches them. So `compile` reports syntax errors as `RegoCompileError`, and semantic
  errors surface from `evaluate` as `RegoEvalError`; both carry the file and line regorus names.

Known differences from OPA (regorus 0.13, found while writing the bundled templates and filters; the
bundled library avoids them, user policies may not):

- a partial-set rule whose head is a reference that is undefined for some bindings
  (`s contains v.fix { some v in xs }` where one `v` has no `fix`) comes out empty, or fails with
  "not an object", instead of skipping those bindings; bind the value in the body instead;
- `some x in <a string or number>` is an error instead of undefined;
- `glob.match` treats `**` as a wildcard only as a whole path segment (`**/x`, not `**x`);
- integers beyond 64 bits are held as doubles, and such numbers cannot be passed to `jsonformat`.

Query results: a query `x = <expr>` (Postee's route rules are `x = data.postee.allow`) yields the
value bound to `x`; any other query yields the value of its expression. No result is `UNDEFINED`;
when a query has several results (iteration in the query itself), the first one is returned.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import Any

from postee.rego import gojson
from postee.rego.engine import UNDEFINED, RegoCompileError, RegoEvalError

try:
    import regorus
except ImportError as exc:  # pragma: no cover - exercised only without the optional extra
    raise ImportError(
        "the regorus backend needs the optional package 'gordon-to-regorus' (pip install 'postee-py[regorus]')"
    ) from exc

JSONFORMAT_BUILTIN = "jsonformat"

# regorus errors look like "\n--> file.rego:5:1\n  |\n5 | }\n  | ^\nerror: expecting expression",
# optionally followed by a Rust backtrace when RUST_BACKTRACE is set.
_LOCATION = re.compile(r"-->\s*(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)")
_ERROR_TEXT = re.compile(r"^error:\s*(?P<message>.*)$", re.MULTILINE)
_BACKTRACE_MARKER = "\nStack backtrace:"
# regorus cannot hand numbers outside i64 (or big floats) to Python; its JSON output can.
_NOT_AN_I64 = "not an i64"


def _jsonformat(value: Any) -> str:
    return gojson.marshal_indent(value)


def _parse_error(exc: BaseException) -> tuple[str, str | None, int | None]:
    """Split a regorus error into (message, file, line); unknown formats keep the whole text."""
    text = str(exc)
    cut = text.find(_BACKTRACE_MARKER)
    if cut >= 0:
        text = text[:cut]
    text = text.strip()
    location = _LOCATION.search(text)
    error = _ERROR_TEXT.search(text)
    message = error.group("message").strip() if error else text
    if location is None:
        return message, None, None
    return message, location.group("file"), int(location.group("line"))


def _plain(value: Any) -> Any:
    """Rego sets come back as Python sets; the interface promises JSON values (OPA writes arrays)."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, set | frozenset):
        return json.loads(gojson.marshal(value))
    return value


def _query_value(results: Mapping[str, Any]) -> Any:
    rows = results.get("result") or []
    if not rows:
        return UNDEFINED
    row = rows[0]
    bindings = row.get("bindings") or {}
    expressions = row.get("expressions") or []
    if len(bindings) == 1 and len(expressions) == 1 and expressions[0].get("value") is True:
        # `x = <expr>`: the answer is what x was bound to, not the (true) unification.
        return _plain(next(iter(bindings.values())))
    if not expressions:
        return UNDEFINED
    return _plain(expressions[0].get("value"))


class RegorusQuery:
    """A query compiled into its own regorus engine. Use it only from the thread that compiled it."""

    def __init__(self, engine: regorus.Engine, query: str) -> None:
        self._engine = engine
        self._query = query
        self._thread = threading.get_ident()

    @property
    def query(self) -> str:
        return self._query

    def evaluate(self, input_json: str) -> Any:
        """Evaluate with `input` = `input_json`; returns a JSON value or `UNDEFINED`."""
        if threading.get_ident() != self._thread:
            raise RegoEvalError("a regorus query must be evaluated on the thread that compiled it", self._query)
        try:
            self._engine.set_input_json(input_json)
        except Exception as exc:
            raise RegoEvalError(f"input is not valid JSON: {_parse_error(exc)[0]}", self._query) from None
        try:
            return _query_value(self._engine.eval_query(self._query))
        except Exception as exc:
            if _NOT_AN_I64 not in str(exc):
                raise self._eval_error(exc) from None
        try:
            return _query_value(json.loads(self._engine.eval_query_as_json(self._query)))
        except Exception as exc:
            raise self._eval_error(exc) from None

    def _eval_error(self, exc: BaseException) -> RegoEvalError:
        return _eval_error(exc, self._query)


def _eval_error(exc: BaseException, query: str) -> RegoEvalError:
    message, file, line = _parse_error(exc)
    if file is not None:
        message = f"{file}:{line}: {message}"
    return RegoEvalError(message, query)


class RegorusRules:
    """Rules compiled into one regorus engine, asked one by one (`eval_rule`) on an input set once.

    Each rule fails alone: regorus checks a rule when it is first reached, and an error in one rule's
    evaluation does not touch the others. Use it only from the thread that compiled it."""

    def __init__(self, engine: regorus.Engine, rules: tuple[str, ...]) -> None:
        self._engine = engine
        self._rules = rules
        self._thread = threading.get_ident()

    def evaluate_each(self, input_json: str) -> list[Any]:
        if threading.get_ident() != self._thread:
            raise RegoEvalError("regorus rules must be evaluated on the thread that compiled them")
        try:
            self._engine.set_input_json(input_json)
        except Exception as exc:
            raise RegoEvalError(f"input is not valid JSON: {_parse_error(exc)[0]}") from None
        return [self._ask(rule) for rule in self._rules]

    def _ask(self, rule: str) -> Any:
        """The rule's value; `UNDEFINED` for none (regorus says None, which a JSON null also is: only
        `true` matters to a route rule); its error, as a value."""
        try:
            value = self._engine.eval_rule(rule)
        except Exception as exc:
            if _NOT_AN_I64 not in str(exc):
                return _eval_error(exc, rule)
            try:
                value = json.loads(self._engine.eval_rule_as_json(rule))
            except Exception as exc:
                return _eval_error(exc, rule)
        return UNDEFINED if value is None else _plain(value)


class RegorusBackend:
    """Compiles Postee-dialect modules (Rego v0) with regorus, `jsonformat` included."""

    name = "regorus"

    def compile(self, modules: Mapping[str, str], query: str) -> RegorusQuery:
        """Parse `modules` (filename -> source) into a fresh engine and prepare `query`.

        Raises `RegoCompileError` with the file and line of the first syntax error.
        """
        return RegorusQuery(self._engine(modules), query)

    def compile_rules(self, modules: Mapping[str, str], rules: tuple[str, ...]) -> RegorusRules:
        """Parse `modules` into a fresh engine for asking each of `rules`."""
        return RegorusRules(self._engine(modules), rules)

    @staticmethod
    def _engine(modules: Mapping[str, str]) -> regorus.Engine:
        engine = regorus.Engine()
        engine.set_rego_v0(True)
        engine.add_extension(JSONFORMAT_BUILTIN, 1, _jsonformat)
        for filename, source in modules.items():
            try:
                engine.add_policy(filename, source)
            except Exception as exc:
                message, file, line = _parse_error(exc)
                raise RegoCompileError(message, file or filename, line) from None
        return engine
