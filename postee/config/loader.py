"""Load and validate `cfg.yaml`, reporting every problem with its path.

Validation never stops at the first problem: `postee check` prints them all, like
`routes[2] (name: r2).actions[0]: unknown action 'slak' (did you mean 'slack'?)` (the index is
exact, the name is what the user looks for). Unknown keys are warnings (Postee silently ignores
them, which hides typos such as `serialise-actions`); references to missing templates or actions
are errors, found at load time rather than when the first event arrives. A template or action that
no route uses cannot stop the daemon: its problems are warnings, and it is not loaded. `$VAR`
secrets are resolved (or left for a runner) as `postee.config.env` says.
"""

from __future__ import annotations

import difflib
import enum
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import yaml

from postee.actions.base import ActionSpec
from postee.actions.settings import checking_elsewhere
from postee.config import yamlio
from postee.config.env import env_keys, resolve_env
from postee.config.model import (
    ACTION_GENERIC_KEYS,
    DEFAULT_DB_VERIFY_INTERVAL_HOURS,
    DEFAULT_RUNNER_DISPATCH_TTL,
    Config,
    Plugins,
    RouteConfig,
    TemplateConfig,
)
from postee.values.durations import parse_duration
from postee.values.sizes import parse_size

TOP_KEYS = frozenset(
    {"name", "aqua-server", "max-db-size", "db-verify-interval", "delete-old-data", "routes", "templates",
     "actions", "rules", "ingest-token", "dispatch-to-runners", "runner-dispatch-ttl"}
)
PLAN_KEY = "x-postee-plan"
"""A route's steps across sides, written by a controller into a runner's slice (`postee.pipeline.plan`)."""
ROUTE_KEYS = frozenset({"name", "input", "input-files", "actions", "template", "serialize-actions", "plugins",
                        PLAN_KEY})
PLUGIN_KEYS = frozenset(
    {"aggregate-message-number", "aggregate-message-timeout", "unique-message-props", "unique-message-timeout",
     "policy-show-all"}
)
LEGACY_RENDERERS = ("html", "slack", "jira")
"""Postee's built-in scan renderers (`legacy-scan-renderer:`), see `postee.legacy`."""
TEMPLATE_KEYS = frozenset({"name", "body", "url", "rego-package", "legacy-scan-renderer"})


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@attrs.frozen
class Problem:
    path: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        prefix = "" if self.severity is Severity.ERROR else "warning: "
        return f"{prefix}{self.path}: {self.message}" if self.path else f"{prefix}{self.message}"


class ConfigError(Exception):
    """The configuration has errors; `problems` lists every one (and the warnings)."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        errors = [p for p in problems if p.severity is Severity.ERROR]
        lines = "\n".join(f"  {p}" for p in errors)
        super().__init__(f"{source}: {len(errors)} configuration error(s):\n{lines}")


@attrs.define
class _Collector:
    problems: list[Problem] = attrs.field(factory=list)

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, Severity.ERROR))

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message, Severity.WARNING))

    def unknown_keys(self, mapping: Mapping[str, Any], known: Iterable[str], path: str) -> None:
        known = list(known)
        for key in mapping:
            if key not in known:
                self.warn(_join(path, str(key)), f"unknown key {key!r} is ignored{_suggest(str(key), known)}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- typed getters that record problems instead of raising ------------------------------------
def _str(c: _Collector, m: Mapping[str, Any], key: str, path: str, default: str = "") -> str:
    value = m.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        c.error(_join(path, key), f"expected a string, got {str(value).lower()} "
                "(YAML reads unquoted on/off/yes/no/true/false as booleans: quote the value)")
        return default
    if isinstance(value, dict | list):
        c.error(_join(path, key), f"expected a string, got {type(value).__name__}")
        return default
    return str(value)


def _bool(c: _Collector, m: Mapping[str, Any], key: str, path: str, default: bool = False) -> bool:
    value = m.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    c.error(_join(path, key), f"expected true or false, got {value!r}")
    return default


def _int(c: _Collector, m: Mapping[str, Any], key: str, path: str, default: int = 0) -> int:
    value = m.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        c.error(_join(path, key), f"expected a whole number, got {value!r}")
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        c.error(_join(path, key), f"expected a whole number, got {value!r}")
        return default
    if number < 0:
        c.error(_join(path, key), f"must not be negative, got {number}")
        return default
    return number


def _duration(c: _Collector, m: Mapping[str, Any], key: str, path: str) -> float:
    value = m.get(key)
    if value is None or value == "":
        return 0.0
    try:
        return parse_duration(value)
    except ValueError as exc:
        c.error(_join(path, key), str(exc))
        return 0.0


def _str_list(c: _Collector, m: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = m.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        c.error(_join(path, key), f"expected a list, got {type(value).__name__}")
        return ()
    out = []
    for i, item in enumerate(value):
        if item is None or isinstance(item, dict | list):
            c.error(f"{_join(path, key)}[{i}]", f"expected a string, got {type(item).__name__}")
        else:
            out.append(str(item))
    return tuple(out)


def _mapping_list(c: _Collector, data: Mapping[str, Any], key: str) -> list[tuple[str, Mapping[str, Any]]]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        c.error(key, f"expected a list, got {type(value).__name__}")
        return []
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            c.error(f"{key}[{i}]", f"expected a mapping, got {type(item).__name__}")
            continue
        out.append((_entry_path(key, i, item), item))
    return out


def _entry_path(section: str, index: int, entry: Mapping[str, Any]) -> str:
    """`actions[9] (name: a-splunk)`: the index is exact, the name is what the user looks for.

    A name that is not a string (`name: 123`, a list, `on`) is left out: it is reported on its own,
    and its Python spelling would not be what the user wrote.
    """
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        return f"{section}[{index}]"
    return f"{section}[{index}] (name: {name if name.isprintable() else repr(name)})"


# -- sections ---------------------------------------------------------------------------------
def _plugins(c: _Collector, m: Any, path: str) -> Plugins:
    if m is None:
        return Plugins()
    if not isinstance(m, dict):
        c.error(path, f"expected a mapping, got {type(m).__name__}")
        return Plugins()
    c.unknown_keys(m, PLUGIN_KEYS, path)
    return Plugins(
        aggregate_message_number=_int(c, m, "aggregate-message-number", path),
        aggregate_message_timeout=_duration(c, m, "aggregate-message-timeout", path),
        unique_message_props=_str_list(c, m, "unique-message-props", path),
        unique_message_timeout=_duration(c, m, "unique-message-timeout", path),
        policy_show_all=_bool(c, m, "policy-show-all", path),
    )


def _route(c: _Collector, m: Mapping[str, Any], path: str) -> RouteConfig:
    c.unknown_keys(m, ROUTE_KEYS, path)
    name = _str(c, m, "name", path)
    if not name and m.get("name") is None:
        c.error(_join(path, "name"), "required")
    return RouteConfig(
        name=name,
        input=_str(c, m, "input", path),
        input_files=_str_list(c, m, "input-files", path),
        actions=_str_list(c, m, "actions", path),
        template=_str(c, m, "template", path),
        serialize_actions=_bool(c, m, "serialize-actions", path),
        plugins=_plugins(c, m.get("plugins"), _join(path, "plugins")),
        plan=_plan(c, m.get(PLAN_KEY), _join(path, PLAN_KEY)),
        where=path,
    )


def _plan(c: _Collector, value: Any, path: str) -> tuple[tuple[str, str], ...]:
    """A slice's `x-postee-plan`: `[{action: name, runs-on: runner-or-empty}, ...]`."""
    if value is None:
        return ()
    if not isinstance(value, list):
        c.error(path, f"expected a list, got {type(value).__name__}")
        return ()
    steps = []
    for i, step in enumerate(value):
        if not isinstance(step, dict) or not isinstance(step.get("action"), str) \
                or not isinstance(step.get("runs-on", ""), str):
            c.error(f"{path}[{i}]", "expected {action: <name>, runs-on: <runner or empty>}")
            return ()
        steps.append((step["action"], step.get("runs-on", "").strip()))
    return tuple(steps)


def _template(c: _Collector, m: Mapping[str, Any], path: str) -> TemplateConfig:
    c.unknown_keys(m, TEMPLATE_KEYS, path)
    name = _str(c, m, "name", path)
    if not name and m.get("name") is None:
        c.error(_join(path, "name"), "required")
    template = TemplateConfig(
        name=name,
        body=_str(c, m, "body", path),
        url=_str(c, m, "url", path),
        rego_package=_str(c, m, "rego-package", path),
        legacy_scan_renderer=_str(c, m, "legacy-scan-renderer", path),
        where=path,
    )
    if template.legacy_scan_renderer and template.legacy_scan_renderer not in LEGACY_RENDERERS:
        # Postee's own words for it (its renderers are html, slack and jira)
        c.error(_join(path, "legacy-scan-renderer"),
                f"unknown layout type {template.legacy_scan_renderer!r} (expected html, slack or jira)")
    if not (template.body or template.url or template.rego_package or template.legacy_scan_renderer):
        c.error(path, "a template needs one of body, url, rego-package or legacy-scan-renderer")
    return template


def _action(c: _Collector, m: Mapping[str, Any], path: str, environ: Mapping[str, str],
            defer_runs_on_env: bool) -> ActionSpec | None:
    name = _str(c, m, "name", path)
    if not name and m.get("name") is None:
        c.error(_join(path, "name"), "required")
    action_type = _str(c, m, "type", path)
    if not action_type:
        c.error(_join(path, "type"), "required")
    if "enable" not in m:
        c.warn(_join(path, "enable"), "not set: the action is disabled, as in Postee (add `enable: true`)")
    enable = _bool(c, m, "enable", path, default=False)
    runs_on = _str(c, m, "runs-on", path) or None
    resolve = enable and not (defer_runs_on_env and runs_on and runs_on.strip())
    settings = {
        str(k): resolve_env(v, _join(path, str(k)), environ, c.error) if resolve else v
        for k, v in m.items()
        if k not in ACTION_GENERIC_KEYS
    }
    if not name or not action_type:
        return None
    return ActionSpec(name=name, type=action_type, enable=enable, runs_on=runs_on, settings=settings, where=path)


def _validate_action_settings(c: _Collector, spec: ActionSpec, path: str, unresolved: frozenset[str]) -> None:
    """Ask the action type to check its own settings (`url` required, ...).

    `unresolved` are keys still holding `$VAR` text (resolved later, on a runner): what the type says
    about their value is not known yet, so only the other keys' problems count (a required key that
    is missing is still one).
    """
    from postee.actions.registry import known_types, validate_spec

    if spec.type.lower() not in known_types():
        c.error(_join(path, "type"), f"unknown action type {spec.type!r}{_suggest(spec.type.lower(), known_types())}"
                f"; known types: {', '.join(sorted(known_types()))}")
        return
    if not spec.enable:
        return
    for key, message in validate_spec(spec):
        if key and re.split(r"[.\[]", key, maxsplit=1)[0] in unresolved:
            continue
        c.error(_join(path, key) if key else path, message)


def _unique_names(c: _Collector, items: list[tuple[str, Any]], kind: str) -> None:
    seen: dict[str, str] = {}
    for path, item in items:
        name = getattr(item, "name", "")
        if not name:
            continue
        if name in seen:
            c.error(_join(path, "name"), f"duplicate {kind} name {name!r} (first at {seen[name]})")
        else:
            seen[name] = path


UNUSED_NOTE = "no route uses it: ignored"


def _ignore_unused(c: _Collector, entries: list[str]) -> None:
    """Turn the errors of the `entries` (paths of templates or actions that no route uses) into warnings.

    Postee logs such an entry and runs without it (its own `cfg.yaml` ships a `url:` template with no
    URL); so do we, saying so. The pipeline does not load them (`postee.pipeline.build`); an entry a
    route uses and that cannot work stays an error.
    """
    if not entries:
        return
    for index, problem in enumerate(c.problems):
        if problem.severity is Severity.ERROR and any(_within(problem.path, entry) for entry in entries):
            c.problems[index] = Problem(problem.path, f"{problem.message} ({UNUSED_NOTE})", Severity.WARNING)


def _within(path: str, entry: str) -> bool:
    return path == entry or path.startswith((f"{entry}.", f"{entry}["))


def _name_of(entry: Mapping[str, Any]) -> str:
    """An entry's name as the loader reads it (`_str`), "" when it has none a route could refer to."""
    name = entry.get("name")
    return "" if name is None or isinstance(name, bool | dict | list) else str(name)


def parse_config(data: Any, *, source: str = "<config>", environ: Mapping[str, str] | None = None,
                 defer_runs_on_env: bool = False) -> tuple[Config, list[Problem]]:
    """Build a `Config` from parsed YAML, collecting every problem (errors and warnings).

    `defer_runs_on_env` (the controller): actions with `runs-on` keep their `$VAR` values as written,
    to be resolved on their runner (see `postee.config.env`); their shape is still checked.
    """
    environ = os.environ if environ is None else environ
    c = _Collector()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        c.error("", f"the configuration must be a mapping, got {type(data).__name__}")
        return Config(source=source), c.problems
    c.unknown_keys(data, TOP_KEYS, "")

    routes = [(p, _route(c, m, p)) for p, m in _mapping_list(c, data, "routes")]
    templates = [(p, _template(c, m, p)) for p, m in _mapping_list(c, data, "templates")]
    action_entries = _mapping_list(c, data, "actions")
    actions = [(p, a) for p, m in action_entries if (a := _action(c, m, p, environ, defer_runs_on_env)) is not None]
    _unique_names(c, routes, "route")
    _unique_names(c, templates, "template")
    _unique_names(c, actions, "action")
    for path, spec in actions:
        deferred = defer_runs_on_env and bool((spec.runs_on or "").strip())
        if deferred:  # the runner's action: its shape here, its files and secrets on the runner
            with checking_elsewhere():
                _validate_action_settings(c, spec, path, env_keys(spec.settings))
        else:
            _validate_action_settings(c, spec, path, frozenset())

    template_names = [t.name for _, t in templates]
    action_names = [a.name for _, a in actions]
    for path, route in routes:
        if route.template and route.template not in template_names:
            c.error(_join(path, "template"),
                    f"unknown template {route.template!r}{_suggest(route.template, template_names)}")
        elif not route.template and route.actions:
            c.error(_join(path, "template"), "required: the route has actions but no template to render with")
        for i, action in enumerate(route.actions):
            if action not in action_names:
                c.error(f"{_join(path, 'actions')}[{i}]", f"unknown action {action!r}{_suggest(action, action_names)}")
    used_templates = {route.template for _, route in routes if route.template}
    used_actions = {action for _, route in routes for action in route.actions if action}
    _ignore_unused(c, [path for path, template in templates if template.name not in used_templates])
    _ignore_unused(c, [path for path, m in action_entries if _name_of(m) not in used_actions])

    max_db_size = 0
    if data.get("max-db-size") not in (None, "", 0):
        try:
            max_db_size = parse_size(data["max-db-size"])
        except ValueError as exc:
            c.error("max-db-size", str(exc))
    interval = data.get("db-verify-interval")
    verify_hours = DEFAULT_DB_VERIFY_INTERVAL_HOURS
    if interval not in (None, "", 0):
        try:
            verify_hours = float(interval)
            if verify_hours <= 0:
                raise ValueError
        except (TypeError, ValueError):
            c.error("db-verify-interval", f"expected a positive number of hours, got {interval!r}")
            verify_hours = DEFAULT_DB_VERIFY_INTERVAL_HOURS
    rules = data.get("rules") or []
    if not isinstance(rules, list):
        c.error("rules", f"expected a list, got {type(rules).__name__}")
        rules = []

    config = Config(
        name=_str(c, data, "name", ""),
        aqua_server=_str(c, data, "aqua-server", ""),
        max_db_size=max_db_size,
        db_verify_interval_hours=verify_hours,
        delete_old_data_days=_int(c, data, "delete-old-data", ""),
        ingest_token=str(resolve_env(_str(c, data, "ingest-token", ""), "ingest-token", environ, c.error)),
        routes=tuple(r for _, r in routes),
        templates=tuple(t for _, t in templates),
        actions=tuple(a for _, a in actions),
        rules=tuple(rules),
        source=source,
        dispatch_to_runners=_bool(c, data, "dispatch-to-runners", ""),
        runner_dispatch_ttl=_dispatch_ttl(c, data),
    )
    return config, c.problems


def _dispatch_ttl(c: _Collector, data: Mapping[str, Any]) -> float:
    if data.get("runner-dispatch-ttl") in (None, ""):
        return DEFAULT_RUNNER_DISPATCH_TTL
    ttl = _duration(c, data, "runner-dispatch-ttl", "")
    if ttl <= 0:
        c.error("runner-dispatch-ttl", "must be a positive duration (e.g. 1h, 30m)")
        return DEFAULT_RUNNER_DISPATCH_TTL
    return ttl


def read_yaml(path: str) -> Any:
    """Parse a YAML file; raises ConfigError with the file, line and column of a syntax error."""
    try:
        with open(path, encoding="utf-8") as fh:
            return yamlio.safe_load(fh)
    except OSError as exc:
        raise ConfigError(path, [Problem("", f"cannot read {path}: {exc.strerror or exc}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [Problem("", f"invalid YAML at {where}{problem}")]) from None


def check_config(path: str, *, environ: Mapping[str, str] | None = None,
                 defer_runs_on_env: bool = False) -> tuple[Config | None, list[Problem]]:
    """Everything `postee check` reports for `path`: the config (when readable) and all problems.

    `defer_runs_on_env`: check it as a controller does (see `parse_config`).
    """
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        return None, exc.problems
    return parse_config(data, source=path, environ=environ, defer_runs_on_env=defer_runs_on_env)


def load_config(path: str, *, environ: Mapping[str, str] | None = None) -> tuple[Config, list[Problem]]:
    """Load `path`; raise ConfigError listing every error, else return the config and its warnings."""
    config, problems = check_config(path, environ=environ)
    if config is None or any(p.severity is Severity.ERROR for p in problems):
        raise ConfigError(path, problems)
    return config, problems
