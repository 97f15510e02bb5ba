"""Run Rego evaluations off the event loop, isolated from engine crashes and hangs.

Both engines are native code with sharp edges: regopy segfaults on some inputs and misuse, regorus
panics when an engine is touched from another thread, and either can run for a very long time on a
pathological rule. The daemon must survive all of that, so by default every evaluation runs in a
supervised worker *process* (trio-parallel): a segfault fails that one evaluation with
`RegoEvalError`, is logged and counted, and trio-parallel starts a fresh worker for the next one; a
hang hits the per-evaluation timeout, which kills the worker (`kill_on_cancel=True`).

What crosses the process boundary is a `QuerySpec` (module texts + query + a content hash) and the
event as JSON text. Each worker keeps compiled queries in a small LRU cache keyed by (backend name,
hash), so a module set compiles once per worker and later calls pay only for the evaluation. Module
texts are a few kilobytes and pickle in microseconds, which is cheaper than a second round trip to ask
the worker whether it already has them. Results and errors come back as plain data (see
`call_in_worker`). Workers are spawned, not forked: a fresh interpreter inherits no engine state.

An in-thread mode (`isolation="thread"`) runs the same code in the pool's own worker threads with
one compiled query per thread (neither engine is thread-safe). It starts instantly, which suits the
CLI and tests, but offers no crash isolation and cannot stop a hung evaluation (its caller gets the
timeout error; the thread runs on, abandoned).

An inline mode (`isolation="inline"`) evaluates on the event loop itself, one evaluation at a time:
no thread and no process runs outside Trio's virtual clock, so a simulation of a whole deployment
is deterministic (the groundwork of issue #13). It blocks the loop for each evaluation and has no
timeout or crash isolation: for simulation and tests only, never the daemon.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar

import attrs
import trio
import trio_parallel

from postee.rego.backends import get_backend
from postee.rego.engine import CompiledQuery, RegoBackend, RegoCompileError, RegoEvalError, RegoWorkerError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_EVALUATION_TIMEOUT = 30.0
"""Seconds one evaluation may take, including starting a worker and compiling on a cache miss."""

WORKER_CACHE_SIZE = 128
"""Compiled queries kept per worker (one per route rule and per template is typical)."""

WORKER_IDLE_TIMEOUT = math.inf
"""Idle workers are kept: a retired worker would lose its compiled queries."""

WORKER_GRACE_PERIOD = 5.0
"""Seconds given to workers to exit when the pool closes before they are killed."""

Isolation = Literal["process", "thread", "inline"]


@attrs.frozen
class QuerySpec:
    """A query over a fixed module set: everything a worker needs to compile it.

    `key` is a content hash of modules and query, so equal specs share a compiled query in a worker
    whoever built them.
    """

    modules: tuple[tuple[str, str], ...]
    query: str
    key: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "key", _content_key(self.modules, (self.query,)))

    @classmethod
    def build(cls, modules: Mapping[str, str], query: str) -> QuerySpec:
        """Make a spec from a filename -> source mapping (order does not matter)."""
        return cls(tuple(sorted(modules.items())), query)

    @property
    def module_map(self) -> dict[str, str]:
        return dict(self.modules)


@attrs.frozen
class RuleSetSpec:
    """Several rules (paths such as `data.rule_0.postee.allow`) over one module set, each answered apart
    on one input: the rule book's query (`postee.rego.rules.combine_rules`). `key` as for `QuerySpec`."""

    modules: tuple[tuple[str, str], ...]
    rules: tuple[str, ...]
    key: str = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "key", "rules:" + _content_key(self.modules, self.rules))

    @property
    def module_map(self) -> dict[str, str]:
        return dict(self.modules)


def _content_key(modules: tuple[tuple[str, str], ...], queries: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for part in (*(text for module in modules for text in module), *queries):
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


# --- worker side: runs in a worker process or a worker thread --------------------------------------

_local = threading.local()


def _cache() -> OrderedDict[tuple[str, str], CompiledQuery]:
    cache = getattr(_local, "compiled", None)
    if cache is None:
        cache = _local.compiled = OrderedDict()
    return cache


def _backend(name: str) -> RegoBackend:
    backends = getattr(_local, "backends", None)
    if backends is None:
        backends = _local.backends = {}
    if name not in backends:
        backends[name] = get_backend(name)
    return backends[name]


def _compiled(backend_name: str, spec: QuerySpec | RuleSetSpec) -> Any:
    cache = _cache()
    cache_key = (backend_name, spec.key)
    compiled = cache.get(cache_key)
    if compiled is None:
        backend = _backend(backend_name)
        if isinstance(spec, RuleSetSpec):
            compiled = backend.compile_rules(spec.module_map, spec.rules)
        else:
            compiled = backend.compile(spec.module_map, spec.query)
        cache[cache_key] = compiled
        while len(cache) > WORKER_CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(cache_key)
    return compiled


def _compile_spec(backend_name: str, spec: QuerySpec | RuleSetSpec) -> None:
    _compiled(backend_name, spec)


def _evaluate_spec(backend_name: str, spec: QuerySpec, input_json: str) -> Any:
    return _compiled(backend_name, spec).evaluate(input_json)


def _evaluate_specs(backend_name: str, specs: tuple[QuerySpec, ...], input_json: str) -> list[tuple[bool, Any]]:
    """Each spec on the same input, in one worker call: each outcome apart (`call_in_worker`'s form),
    so that one failing query fails alone."""
    return [call_in_worker(_evaluate_spec, backend_name, spec, input_json) for spec in specs]


def _evaluate_rule_set(backend_name: str, spec: RuleSetSpec, input_json: str) -> list[tuple[bool, Any]]:
    """Each rule of the set on one input (set once), each outcome apart (`call_in_worker`'s form)."""
    return [_outcome(value) for value in _compiled(backend_name, spec).evaluate_each(input_json)]


def _rules_then_renders(backend_name: str, rules: RuleSetSpec | tuple[QuerySpec, ...], input_json: str,
                        renders: tuple[tuple[QuerySpec, tuple[int, ...] | None], ...], render_json: str,
                        budget: float) -> tuple[list[tuple[bool, Any]], list[tuple[bool, Any] | None]]:
    """The rules on `input_json` (a rule set, or queries each apart), then each template of `renders` on
    `render_json`, but only when one of the rules listed with it answered `true` (listed as None: always;
    None in its place when not asked): one worker call per event for the router's decision and the
    renders it leads to. No render starts once `budget` seconds have passed in the call (those left are
    not asked: their routes render them), so the call never needs more than twice the budget."""
    start = time.monotonic()
    if isinstance(rules, RuleSetSpec):
        outcomes = _evaluate_rule_set(backend_name, rules, input_json)
    else:
        outcomes = _evaluate_specs(backend_name, rules, input_json)
    rendered: list[tuple[bool, Any] | None] = []
    for spec, wanted_by in renders:
        if time.monotonic() - start > budget:
            rendered.append(None)
        elif wanted_by is None or any(outcomes[i][0] and outcomes[i][1] is True for i in wanted_by):  # not 1, 1.0
            rendered.append(call_in_worker(_evaluate_spec, backend_name, spec, render_json))
        else:
            rendered.append(None)
    return outcomes, rendered


def _outcome(value: Any) -> tuple[bool, Any]:
    if isinstance(value, RegoCompileError):
        return False, (RegoCompileError, (value.message, value.file, value.line))
    if isinstance(value, RegoEvalError):
        return False, (RegoEvalError, (value.message, value.query))
    return True, value


def call_in_worker(fn: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    """Run `fn(*args)` in a worker and describe the outcome as plain data.

    Errors travel as (class, constructor args), never as exception objects: an engine's traceback
    frames hold native engine objects (regorus panics when one is dropped on another thread), and
    trio-parallel's traceback pickling loses the fields of our attrs exceptions.
    """
    try:
        return True, fn(*args)
    except RegoCompileError as exc:
        return False, (RegoCompileError, (exc.message, exc.file, exc.line))
    except RegoEvalError as exc:
        return False, (RegoEvalError, (exc.message, exc.query))
    except Exception as exc:
        return False, (RegoEvalError, (f"engine error: {type(exc).__name__}: {exc}", None))


# --- loop side -------------------------------------------------------------------------------------


@attrs.define
class PoolStats:
    """Counters for metrics and logs."""

    evaluations: int = 0
    calls: int = 0
    """Round trips to a worker (several evaluations may share one)."""
    errors: int = 0
    crashes: int = 0
    timeouts: int = 0


@attrs.define(eq=False)
class RegoPool:
    """Evaluates `QuerySpec`s in workers; see the module docstring. Open with `open_rego_pool`."""

    backend_name: str
    timeout: float
    isolation: Isolation
    limiter: trio.CapacityLimiter
    _context: trio_parallel.WorkerContext | None = None
    _threads: ThreadPoolExecutor | None = None
    stats: PoolStats = attrs.Factory(PoolStats)

    async def evaluate(self, spec: QuerySpec, input_json: str) -> Any:
        """The query's value on `input_json` (JSON value or `UNDEFINED`).

        Raises `RegoCompileError` or `RegoEvalError` (`RegoWorkerError` for a crash or timeout).
        """
        self.stats.evaluations += 1
        return await self.run(_evaluate_spec, self.backend_name, spec, input_json)

    def _outcomes(self, outcomes: list[tuple[bool, Any]]) -> list[Any]:
        results: list[Any] = []
        for ok, value in outcomes:
            if ok:
                results.append(value)
            else:
                self.stats.errors += 1
                error_class, error_args = value
                results.append(error_class(*error_args))
        return results

    async def evaluate_rules(
        self, rules: RuleSetSpec | tuple[QuerySpec, ...], input_json: str,
        renders: tuple[tuple[QuerySpec, tuple[int, ...] | None], ...] = (), render_json: str = "",
    ) -> tuple[list[Any], dict[int, Any]]:
        """Each rule's value on `input_json` in one worker call (a rule set: the input set once for all;
        queries: each apart), or its own error in its place, as an exception object; then, in the same
        call, each template of `renders` on `render_json` when one of the rules listed with it (their
        indices in the outcomes; None: always) answered `true`. Returns the rules' outcomes and, by
        position in `renders`, the outcomes of the templates evaluated.

        Raises `RegoCompileError` when a rule set does not compile, `RegoWorkerError` when the call failed
        as a whole (a crash or a timeout: asking again would meet the same fate). Each evaluation keeps the
        pool's timeout: no render starts past it (those left are not in the result), and a call with
        renders may take twice as long as a whole."""
        self.stats.evaluations += 1 if isinstance(rules, RuleSetSpec) else len(rules)
        timeout = 2 * self.timeout if renders else self.timeout
        outcomes, rendered = await self.run_within(timeout, _rules_then_renders, self.backend_name, rules,
                                                   input_json, renders, render_json, self.timeout)
        asked = {position: outcome for position, outcome in enumerate(rendered) if outcome is not None}
        self.stats.evaluations += len(asked)
        values = dict(zip(asked, self._outcomes(list(asked.values())), strict=True))
        return self._outcomes(outcomes), values

    async def compile(self, spec: QuerySpec | RuleSetSpec) -> None:
        """Compile `spec` in a worker to check it at load time; raises `RegoCompileError`."""
        await self.run(_compile_spec, self.backend_name, spec)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a worker with the pool's timeout and crash handling.

        `fn` must be importable by name (a module-level function) in process mode. Raises
        `RegoCompileError`/`RegoEvalError` from the worker, or `RegoWorkerError` for a crash or timeout.
        """
        return await self.run_within(self.timeout, fn, *args)

    async def run_within(self, timeout: float, fn: Callable[..., T], *args: Any) -> T:
        """`run` with a timeout of its own (a call doing several evaluations)."""
        self.stats.calls += 1
        if self.isolation == "inline":  # on the loop: nothing can time out or crash apart, nothing to limit
            ok, value = call_in_worker(fn, *args)
            await trio.lowlevel.checkpoint()
            return self._result(ok, value)
        with trio.move_on_after(timeout):
            try:
                ok, value = await self._call(fn, args)
            except trio_parallel.BrokenWorkerError as exc:
                self.stats.crashes += 1
                log.error("Rego worker crashed (%s); it will be replaced", exc)
                raise RegoWorkerError(f"Rego worker crashed: {exc}") from None
            return self._result(ok, value)
        self.stats.timeouts += 1
        fate = "worker killed" if self.isolation == "process" else "thread abandoned"
        log.error("Rego evaluation timed out after %gs; %s", timeout, fate)
        raise RegoWorkerError(f"timed out after {timeout:g}s")

    def _result(self, ok: bool, value: Any) -> Any:
        if ok:
            return value
        self.stats.errors += 1
        error_class, error_args = value
        raise error_class(*error_args)

    async def _call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
        if self._context is not None:
            return await self._context.run_sync(call_in_worker, fn, *args, kill_on_cancel=True, limiter=self.limiter)
        assert self._threads is not None
        async with self.limiter:
            return await _await_future(self._threads.submit(call_in_worker, fn, *args))


async def _await_future(future: Future[T]) -> T:
    """Wait for a `concurrent.futures` future without a thread; on cancel, abandon it."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: Future[T]) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:  # we were cancelled and the run ended: nobody is waiting
            pass

    future.add_done_callback(wake)
    try:
        await done.wait()
    finally:
        future.cancel()  # a no-op once running; drops it if still queued
    return future.result()


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@asynccontextmanager
async def open_rego_pool(
    backend_name: str,
    *,
    workers: int | None = None,
    timeout: float = DEFAULT_EVALUATION_TIMEOUT,
    isolation: Isolation = "process",
) -> AsyncIterator[RegoPool]:
    """Open a pool of `workers` (default: CPU count) evaluating with the named backend.

    The backend is resolved here, so an unknown or missing engine fails at startup, not at the first
    event. On exit, process workers are shut down (killed after `WORKER_GRACE_PERIOD`).
    """
    get_backend(backend_name)  # fail fast: UnknownBackendError
    if isolation not in ("process", "thread", "inline"):
        raise ValueError(f"isolation must be 'process', 'thread' or 'inline', not {isolation!r}")
    workers = workers or default_workers()
    limiter = trio.CapacityLimiter(workers)
    if isolation == "inline":  # the event loop's own thread: one evaluation at a time
        yield RegoPool(backend_name, timeout, isolation, trio.CapacityLimiter(1))
        return
    if isolation == "thread":
        # Our own (non-daemon) threads: when the pool closes they exit normally, so each drops its
        # compiled queries on its own thread (regorus panics if an engine is dropped elsewhere).
        threads = ThreadPoolExecutor(workers, thread_name_prefix="rego")
        try:
            yield RegoPool(backend_name, timeout, isolation, limiter, threads=threads)
        finally:
            threads.shutdown(wait=False, cancel_futures=True)
        return
    closing = False
    try:
        async with trio_parallel.open_worker_context(
            idle_timeout=WORKER_IDLE_TIMEOUT, grace_period=WORKER_GRACE_PERIOD
        ) as context:
            yield RegoPool(backend_name, timeout, isolation, limiter, context=context)
            closing = True
    except trio_parallel.BrokenWorkerError as exc:
        if not closing:
            raise
        # The workers were gone before the close: SIGTERM sent to the whole process group (GNU
        # `timeout`, systemd's KillMode=control-group) reaches them too. The node's stop is orderly.
        log.warning("Rego workers had already exited when the pool closed: %s", exc)


__all__ = [
    "DEFAULT_EVALUATION_TIMEOUT",
    "PoolStats",
    "QuerySpec",
    "RuleSetSpec",
    "RegoCompileError",
    "RegoPool",
    "RegoWorkerError",
    "call_in_worker",
    "open_rego_pool",
]
