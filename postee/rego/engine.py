"""The one small interface every Rego backend implements.

A backend compiles a set of modules once into a `CompiledQuery` and evaluates it many times on
different inputs. Everything above this layer (route rules, templates, the worker pool) speaks only
this interface, so the regopy and regorus backends are interchangeable and pass the same tests.

Values crossing this interface are plain JSON-compatible Python values. A query whose result is
undefined evaluates to `UNDEFINED` (not `None`, which is JSON null).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs


class _Undefined:
    """Marker for an undefined Rego result (distinct from JSON null)."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNDEFINED"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "UNDEFINED"


UNDEFINED = _Undefined()


class RegoError(Exception):
    """Base class: something about Rego went wrong; the message says what and where."""


@attrs.define(eq=False)
class RegoCompileError(RegoError):
    """A module does not parse or compile. `file`/`line` point at the user's source when known."""

    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = self.file or "<rego>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


@attrs.define(eq=False)
class RegoEvalError(RegoError):
    """Evaluation failed (runtime error, conflicting outputs, engine crash, timeout)."""

    message: str
    query: str | None = None

    def __str__(self) -> str:
        return self.message if self.query is None else f"{self.query}: {self.message}"


@attrs.define(eq=False)
class RegoWorkerError(RegoEvalError):
    """The evaluation never finished: its worker crashed or it timed out. Not the query's own answer, so
    asking again (alone, or the same queries one by one) would meet the same fate."""


class CompiledQuery(Protocol):
    """A query compiled against a fixed set of modules, reusable for many inputs.

    Not thread-safe: one instance is used by one thread (regopy crashes otherwise, regorus panics).
    """

    def evaluate(self, input_json: str) -> Any:
        """Evaluate with `input` set to the JSON document `input_json` (a str).

        Returns the query's value as a Python JSON value, or `UNDEFINED`.
        Raises `RegoEvalError`.
        """
        ...


class CompiledRules(Protocol):
    """Several rules over one module set, each answered apart on one input (`RegoBackend.compile_rules`).

    The input is set (converted to the engine's values) once for all of them, which is most of what a
    simple rule costs. Not thread-safe, like `CompiledQuery`.
    """

    def evaluate_each(self, input_json: str) -> list[Any]:
        """Each rule's value (a JSON value or `UNDEFINED`), or the `RegoError` it raised, in its place.

        Raises `RegoEvalError` when no rule could be asked (the input was refused)."""
        ...


class RegoBackend(Protocol):
    """A Rego engine: compiles modules (Rego v0 syntax, Postee's dialect) into queries."""

    name: str

    def compile(self, modules: Mapping[str, str], query: str) -> CompiledQuery:
        """Compile `modules` (filename -> source) and prepare `query` (e.g. `data.postee.allow`).

        Raises `RegoCompileError` naming the file and line of the first problem.
        """
        ...

    def compile_rules(self, modules: Mapping[str, str], rules: tuple[str, ...]) -> CompiledRules:
        """Compile `modules` once for asking each of `rules` (rule paths, `data.<package>.<rule>`).

        Raises `RegoCompileError` naming the file and line of the first problem.
        """
        ...
