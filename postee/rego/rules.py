"""Route rules: does this event belong to this route? (Postee 2.x semantics.)

A route's `input:` text is the body of an `allow` rule, wrapped verbatim in a `package postee`
module with `default allow = false`; `input-files:` name whole `package postee` modules under
`REGO_FILTERS_PATH` whose `allow` rules are OR-ed (Rego merges rules of the same name across files).
Files take precedence over inline text; neither means "everything matches". Only the boolean `true`
matches, and only a JSON object can match, exactly as Postee decides.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from postee.rego.engine import RegoCompileError, RegoEvalError
from postee.rego.namespace import move_query_under, move_under
from postee.rego.pool import QuerySpec, RegoPool, RuleSetSpec

ENV_FILTERS_PATH = "REGO_FILTERS_PATH"
DEFAULT_FILTERS_PATH = "./rego-filters"
RULE_QUERY = "data.postee.allow"

_INLINE_HEAD = "package postee\n\ndefault allow = false\n\nallow {\n"
_INLINE_TAIL = "\n}\n"
INLINE_LINE_OFFSET = _INLINE_HEAD.count("\n")
"""Lines the wrapper adds before the user's text: a compile error on module line N is user line
N - INLINE_LINE_OFFSET."""


# Evaluation errors that point into a module read "<file>:<line>: <message>".
_LOCATED_MESSAGE = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):\s*(?P<message>.*)$", re.DOTALL)


def wrap_inline(text: str) -> str:
    """Postee's wrapper around a route's `input:` text (verbatim, so line numbers map back)."""
    return _INLINE_HEAD + text + _INLINE_TAIL


def filters_path() -> str:
    return os.environ.get(ENV_FILTERS_PATH) or DEFAULT_FILTERS_PATH


def resolve_filter_file(name: str, base: str | None = None) -> str:
    """Where Postee looks for an `input-files` entry: joined onto the filters path unless it already
    starts with it (Go's `filepath.Join` cleans the result, so `./rego-filters/x` -> `rego-filters/x`).
    """
    base = base if base is not None else filters_path()
    if name.startswith(base):
        return name
    return os.path.normpath(os.path.join(base, name))


@attrs.frozen
class RouteRule:
    """A route's compiled-on-demand rule; `spec` is None when the route takes every event."""

    route: str
    spec: QuerySpec | None
    inline_name: str | None = None  # module name of the wrapped `input:` text, for error mapping
    inline_lines: int = 0

    @property
    def matches_all(self) -> bool:
        return self.spec is None

    async def check(self, pool: RegoPool) -> None:
        """Load-time validation: compile the rule and evaluate it once on `{}`.

        The trial evaluation matters because some engines (regorus) check rule safety lazily, when
        a query first reaches the rule. Errors name the route, the file and the user's line.
        """
        if self.spec is None:
            return
        try:
            await pool.compile(self.spec)
            await pool.evaluate(self.spec, "{}")
        except RegoCompileError as exc:
            raise self._located(exc) from None
        except RegoEvalError as exc:
            match = _LOCATED_MESSAGE.match(exc.message)
            if match is None:
                raise RegoCompileError(f"route {self.route!r}: {exc.message}") from None
            located = RegoCompileError(match["message"], match["file"], int(match["line"]))
            raise self._located(located) from None

    async def matches(self, pool: RegoPool, event: Any, event_json: str | None = None) -> bool:
        """True when the rule allows `event` (a parsed JSON value; `event_json` its text, if known)."""
        if not isinstance(event, dict):
            return False
        if self.spec is None:
            return True
        if event_json is None:
            event_json = json.dumps(event, ensure_ascii=False)
        try:
            value = await pool.evaluate(self.spec, event_json)
        except RegoCompileError as exc:
            raise self._located(exc) from None
        return value is True

    def decide(self, outcome: Any) -> bool:
        """What `matches` returns for an evaluation's outcome (its value, or the error it raised, which
        is raised here as `matches` would): for a rule evaluated with others (`RegoPool.evaluate_rules`)."""
        if isinstance(outcome, RegoCompileError):
            raise self._located(outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome is True

    def _located(self, exc: RegoCompileError) -> RegoCompileError:
        """Name the route, and map a line in the wrapped inline rule back to the user's `input:`."""
        if self.inline_name is not None and exc.file in (self.inline_name, None):
            line = exc.line
            if line is not None:
                # Errors on the wrapper's closing brace (an unfinished expression) land on the last line.
                line = min(max(1, line - INLINE_LINE_OFFSET), self.inline_lines)
            return RegoCompileError(f"input: {exc.message}", f"route {self.route!r}", line)
        return RegoCompileError(f"route {self.route!r}: {exc.message}", exc.file, exc.line)


def build_rule(
    route: str,
    input_text: str | None = None,
    input_files: Sequence[str] | None = None,
    *,
    base: str | None = None,
) -> RouteRule:
    """Build a route's rule from its `input` / `input-files` (files win, like Postee).

    Reads the filter files now, so a missing file fails at load time with its path.
    """
    if input_files:
        modules: dict[str, str] = {}
        for name in input_files:
            path = resolve_filter_file(name, base)
            try:
                with open(path, encoding="utf-8") as fh:
                    modules[path] = fh.read()
            except OSError as exc:
                raise RegoCompileError(
                    f"route {route!r}: cannot read input-files entry {name!r}: {exc.strerror}", path
                ) from None
        return RouteRule(route, QuerySpec.build(modules, RULE_QUERY))
    if input_text is None or not input_text.strip():
        return RouteRule(route, None)
    inline_name = f"route-{route}.rego"
    spec = QuerySpec.build({inline_name: wrap_inline(input_text)}, RULE_QUERY)
    return RouteRule(route, spec, inline_name, max(1, len(input_text.splitlines())))


@attrs.frozen
class CombinedRules:
    """Several routes' rules compiled together, each asked apart on one input (see `combine_rules`).
    `keys` maps each route to its rule's index in `spec.rules` (its namespace is `rule_<index>`)."""

    spec: RuleSetSpec
    keys: dict[str, int]

    def outcome(self, route: str, outcomes: Sequence[Any]) -> Any:
        """The route's outcome among `outcomes` (`RegoPool.evaluate_rules`), an error's text as the rule
        alone would have said it: its files and references back out of the rule's namespace."""
        index = self.keys[route]
        value = outcomes[index]
        if isinstance(value, RegoEvalError | RegoCompileError):
            return _out_of_namespace(value, f"rule_{index}")
        return value


def _out_of_namespace(error: RegoEvalError | RegoCompileError, namespace: str) -> RegoEvalError | RegoCompileError:
    def back(text: str | None) -> str | None:
        if text is None:
            return None
        return text.replace(f"{namespace}/", "").replace(f"data.{namespace}.", "data.")
    if isinstance(error, RegoCompileError):
        return RegoCompileError(back(error.message) or "", back(error.file), error.line)
    return RegoEvalError(back(error.message) or "", back(error.query))


def combine_rules(rules: Iterable[RouteRule]) -> CombinedRules | None:
    """Every route's rule compiled into one module set, each under a namespace of its own
    (`postee.rego.namespace`), to be asked apart on one input; None for fewer than two distinct rules.

    The event is then handed to the engine, and converted to its input, once for all routes instead of
    once per route: the engine's input conversion is most of a simple rule's cost. Routes with the same
    rule (same modules) share it. Each route's semantics are kept: its modules see only their own
    `data`, as in an engine of their own, and its errors are its own (`CompiledRules`).
    """
    namespaces: dict[tuple[tuple[str, ...], str], int] = {}
    modules: dict[str, str] = {}
    paths: list[str] = []
    keys: dict[str, int] = {}
    for rule in rules:
        if rule.spec is None:
            continue
        same_rule = (tuple(source for _, source in rule.spec.modules), rule.spec.query)  # names aside
        index = namespaces.get(same_rule)
        if index is None:
            index = namespaces[same_rule] = len(paths)
            namespace = f"rule_{index}"
            for name, source in rule.spec.modules:
                modules[f"{namespace}/{name}"] = move_under(source, namespace)
            paths.append(move_query_under(rule.spec.query, namespace))
        keys[rule.route] = index
    if len(paths) < 2:
        return None
    return CombinedRules(RuleSetSpec(tuple(sorted(modules.items())), tuple(paths)), keys)
