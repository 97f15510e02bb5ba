"""The configuration, as Postee's `cfg.yaml` describes it, modelled with attrs.

Field names are the Python spelling of Postee's YAML keys (`serialize-actions` →
`serialize_actions`). Durations are seconds and sizes bytes, already parsed. Actions are
`ActionSpec`s: the generic part (name, type, enable, runs-on) plus the type's own settings,
which each action type validates itself.
"""

from __future__ import annotations

import attrs

from postee.actions.base import ActionSpec

DEFAULT_DB_VERIFY_INTERVAL_HOURS = 1.0
DEFAULT_RUNNER_DISPATCH_TTL = 3600.0
"""Seconds a controller keeps work for an offline runner before recording it expired (`runner-dispatch-ttl`)."""
ACTION_GENERIC_KEYS = frozenset({"name", "type", "enable", "runs-on"})
"""The keys every action has; all its other keys are its type's settings."""


@attrs.frozen
class Plugins:
    """A route's plugins: aggregation and deduplication (Postee's `plugins:` block)."""

    aggregate_message_number: int = 0
    aggregate_message_timeout: float = 0.0
    unique_message_props: tuple[str, ...] = ()
    unique_message_timeout: float = 0.0
    policy_show_all: bool = False

    @property
    def aggregates(self) -> bool:
        return self.aggregate_message_number > 0 or self.aggregate_message_timeout > 0

    @property
    def deduplicates(self) -> bool:
        return bool(self.unique_message_props)


@attrs.frozen
class RouteConfig:
    name: str
    input: str = ""
    input_files: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    template: str = ""
    serialize_actions: bool = False
    plugins: Plugins = attrs.field(factory=Plugins)
    plan: tuple[tuple[str, str], ...] = ()
    """Every step of the route as (action, runs-on), as a controller's slice tells a runner (`x-postee-plan`,
    for a serialized route across sides); empty: the plan follows from the configuration's own actions."""
    where: str = attrs.field(default="", eq=False)
    """Where the entry is in the config file, as problems name it (`routes[2] (name: r2)`)."""


@attrs.frozen
class TemplateConfig:
    """A template: inline `body`, a `url` fetched at load time, a bundled/user `rego-package`, or one of
    Postee's built-in scan renderers (`legacy-scan-renderer: html | slack | jira`).

    Postee's precedence when several are given is body > url > rego-package > legacy-scan-renderer.
    """

    name: str
    body: str = ""
    url: str = ""
    rego_package: str = ""
    legacy_scan_renderer: str = ""
    where: str = attrs.field(default="", eq=False)
    """Where the entry is in the config file, as problems name it (`routes[2] (name: r2)`)."""

    @property
    def kind(self) -> str:
        if self.body:
            return "body"
        if self.url:
            return "url"
        if self.rego_package or not self.legacy_scan_renderer:
            return "rego-package"
        return "legacy-scan-renderer"


@attrs.frozen
class Config:
    name: str = ""
    aqua_server: str = ""
    max_db_size: int = 0
    """Bytes; 0 means unlimited."""
    db_verify_interval_hours: float = DEFAULT_DB_VERIFY_INTERVAL_HOURS
    delete_old_data_days: int = 0
    ingest_token: str = ""
    """Bearer token required on the webhook when set (new; Postee has no ingest authentication)."""
    routes: tuple[RouteConfig, ...] = ()
    templates: tuple[TemplateConfig, ...] = ()
    actions: tuple[ActionSpec, ...] = ()
    rules: tuple[object, ...] = ()
    source: str = ""
    dispatch_to_runners: bool = False
    """`dispatch-to-runners`: an event that reaches the controller runs the route's `runs-on` actions on
    their runners (new; Postee never does, so it is off by default)."""
    runner_dispatch_ttl: float = DEFAULT_RUNNER_DISPATCH_TTL
    """`runner-dispatch-ttl`: how long work for an offline runner waits before it is recorded expired."""

    def route(self, name: str) -> RouteConfig | None:
        return next((r for r in self.routes if r.name == name), None)

    def template(self, name: str) -> TemplateConfig | None:
        return next((t for t in self.templates if t.name == name), None)

    def action(self, name: str) -> ActionSpec | None:
        return next((a for a in self.actions if a.name == name), None)
