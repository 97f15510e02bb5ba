"""`postee render` and `postee route test`: see offline what a template or a config does to an event.

Both run the same code the daemon runs (route rules, templates -> content) but evaluate in threads
(`isolation="thread"`) because a one-shot command gains nothing from worker processes and should start
instantly. Nothing is sent: `route test` shows which routes match and what each would hand its
actions. `--json` gives scripts one JSON object on stdout.

The config module arrives with a later issue; until then `read_route_config` reads just the keys
these commands need (`aqua-server`, `routes`, `templates`), with errors that name their path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import attrs
import trio

from postee.rego.backends import DEFAULT_BACKEND, UnknownBackendError, backend_names
from postee.rego.engine import RegoError
from postee.rego.library import ENV_TEMPLATES, TemplateLibrary, TemplateLibraryError
from postee.rego.pool import open_rego_pool
from postee.rego.render import Content, Evaluator, TemplateSpec, load_template, package_template, render
from postee.rego.rules import build_rule

ENV_ENGINE = "POSTEE_REGO_ENGINE"
EXIT_OK = 0
EXIT_FAILED = 1  # a template or rule failed on this event
EXIT_USAGE = 2  # unreadable input, invalid config, unknown engine

# Order of the content fields in text output; description goes last because it is long.
_TEXT_FIELDS = ("title", "url", "date", "severity", "summary", "category", "subcategory")
_TEXT_FIELDS += ("assignedTo", "assignedGroup", "owners")


class CliError(Exception):
    """A problem with the command's inputs; printed as `postee: <message>`, exit status 2."""


# --- arguments ---------------------------------------------------------------------------------------


def add_rego_options(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """`--rego-templates` and `--rego-engine`, accepted before or after the subcommand.

    On subparsers the defaults are suppressed, so a value given before the subcommand survives.
    """
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--rego-templates",
        metavar="DIR",
        default=default,
        help=f"template library replacing the bundled one (env {ENV_TEMPLATES})",
    )
    parser.add_argument(
        "--rego-engine",
        choices=backend_names(),
        default=default,
        help=f"Rego engine (env {ENV_ENGINE}; default {DEFAULT_BACKEND})",
    )


def add_subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """Add `render` and `route test` to the main parser (`args.handler` runs the command).

    Returns the subcommand group, so the main CLI can add its own commands to it.
    """
    add_rego_options(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    render_parser = commands.add_parser("render", help="render an event through one template")
    render_parser.add_argument(
        "--template", required=True,
        help="template package name, a .rego file (loaded like `body:`), or legacy:html|slack|jira "
             "(Postee's built-in scan renderers, `legacy-scan-renderer:`)",
    )
    render_parser.add_argument("--aqua-server", default="", help="the config's aqua-server (links in the content)")
    render_parser.add_argument("--event", required=True, help="event JSON file ('-' for stdin)")
    render_parser.add_argument("--json", action="store_true", help="print the content as one JSON object")
    add_rego_options(render_parser, suppress=True)
    render_parser.set_defaults(handler=run_render)

    route_parser = commands.add_parser("route", help="inspect routes")
    route_commands = route_parser.add_subparsers(dest="route_command", metavar="COMMAND", required=True)
    test_parser = route_commands.add_parser(
        "test", help="show which routes match an event and what each would send (no action runs)"
    )
    test_parser.add_argument("--cfgfile", dest="route_cfgfile", help="config file (default: as postee's)")
    test_parser.add_argument("--event", required=True, help="event JSON file ('-' for stdin)")
    test_parser.add_argument("--json", action="store_true", help='print {"routes": [...]} as JSON')
    add_rego_options(test_parser, suppress=True)
    test_parser.set_defaults(handler=run_route_test)
    return commands


def engine_name(args: argparse.Namespace) -> str:
    return getattr(args, "rego_engine", None) or os.environ.get(ENV_ENGINE) or DEFAULT_BACKEND


def load_library(args: argparse.Namespace) -> TemplateLibrary:
    try:
        return TemplateLibrary.load(getattr(args, "rego_templates", None))
    except TemplateLibraryError as exc:
        raise CliError(str(exc)) from None


def read_event(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read event {path}: {exc.strerror}") from None
    from postee.pipeline.events import InvalidEvent, parse_event  # the daemon's own strict reading

    try:
        return parse_event(text).body
    except InvalidEvent as exc:
        raise CliError(f"event {path} is not an event the daemon would accept: {exc}") from None


# --- the config subset -------------------------------------------------------------------------------


@attrs.frozen
class RouteEntry:
    name: str
    input: str | None
    input_files: tuple[str, ...]
    template: str | None
    actions: tuple[str, ...]


@attrs.frozen
class RouteConfig:
    """What `route test` needs from a Postee config file."""

    aqua_server: str
    routes: tuple[RouteEntry, ...]
    templates: Mapping[str, TemplateSpec]


def read_route_config(path: str) -> RouteConfig:
    """The routes and templates of a config file, through the daemon's own loader.

    Problems in the routes or templates (or the file itself) stop the command with their paths;
    problems with actions (undefined, an unset `$SECRET`) do not matter to a dry run that runs no
    action, and are left to `postee check`.
    """
    from postee.config import Severity, check_config

    config, problems = check_config(path)
    blocking = [
        p for p in problems
        if p.severity is Severity.ERROR
        and (not p.path or p.path.startswith(("routes", "templates")))
        and ".actions[" not in p.path
    ]
    if config is None or blocking:
        raise CliError("; ".join(f"{path}: {p}" for p in blocking) or f"{path}: cannot be read")
    templates = {
        t.name: TemplateSpec(t.name, rego_package=t.rego_package or None, body=t.body or None, url=t.url or None,
                             legacy_scan_renderer=t.legacy_scan_renderer or None)
        for t in config.templates
    }
    routes = tuple(
        RouteEntry(r.name, r.input or None, r.input_files, r.template or None, r.actions) for r in config.routes
    )
    return RouteConfig(config.aqua_server, routes, templates)


# --- output ------------------------------------------------------------------------------------------


def print_content(content: Mapping[str, str], out: TextIO, indent: str = "") -> None:
    for key in _TEXT_FIELDS:
        if content.get(key):
            print(f"{indent}{key}: {content[key]}", file=out)
    print(f"{indent}description:", file=out)
    for line in content["description"].splitlines():
        print(f"{indent}  {line}" if line else "", file=out)


# --- commands ----------------------------------------------------------------------------------------


LEGACY_PREFIX = "legacy:"
"""`--template legacy:html`: one of Postee's built-in scan renderers."""


async def _render(engine: str, library: TemplateLibrary, template: str, body: str | None, event: dict,
                  aqua_server: str = "") -> Content:
    from postee.legacy import RENDERERS as LEGACY_RENDERERS

    async with open_rego_pool(engine, workers=1, isolation="thread") as pool:
        loaded: Evaluator
        if template.startswith(LEGACY_PREFIX):
            renderer = template[len(LEGACY_PREFIX):]
            if renderer not in LEGACY_RENDERERS:
                raise CliError(f"--template {template}: unknown layout type {renderer!r} "
                               f"(expected {', '.join(LEGACY_PREFIX + r for r in LEGACY_RENDERERS)})")
            loaded = await load_template(TemplateSpec(template, legacy_scan_renderer=renderer), library)
        elif body is None:
            loaded = package_template(template, library)
        else:
            loaded = await load_template(TemplateSpec(template, body=body), library)
        return await render(pool, loaded, event, aqua_server)


def _template_file(name: str) -> str | None:
    """The source of `--template` when it names a file (loaded like `body:`); None for a package."""
    path = Path(name)
    if not (name.endswith(".rego") or os.path.sep in name or path.is_file()):
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read template {name}: {exc.strerror}") from None


@attrs.define
class RouteOutcome:
    name: str
    matched: bool
    actions: tuple[str, ...]
    content: dict[str, str] | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "name": self.name,
            "matched": self.matched,
            "actions": list(self.actions),
            "content": self.content,
        }
        if self.error is not None:
            result["error"] = self.error
        return result


async def _test_routes(engine: str, config: RouteConfig, library: TemplateLibrary, event: Any) -> list[RouteOutcome]:
    outcomes: list[RouteOutcome] = []
    rendered: dict[str, Content | str] = {}  # template name -> content, or the error text
    event_json = json.dumps(event, ensure_ascii=False)
    async with open_rego_pool(engine, workers=1, isolation="thread") as pool:
        for route in config.routes:
            outcome = RouteOutcome(route.name, False, route.actions)
            outcomes.append(outcome)
            try:
                rule = build_rule(route.name, route.input, route.input_files)
                await rule.check(pool)
                outcome.matched = await rule.matches(pool, event, event_json)
            except RegoError as exc:
                outcome.error = str(exc)
                continue
            if not outcome.matched:
                continue
            if route.template is None:
                outcome.error = f"route {route.name!r} has no template"
                continue
            if route.template not in rendered:  # render once per template, however many routes share it
                try:
                    template = await load_template(config.templates[route.template], library)
                    rendered[route.template] = await render(pool, template, event, config.aqua_server)
                except RegoError as exc:
                    rendered[route.template] = str(exc)
            result = rendered[route.template]
            if isinstance(result, str):
                outcome.error = result
            else:
                outcome.content = result.as_map()
    return outcomes


def _render_command(args: argparse.Namespace, out: TextIO) -> int:
    library = load_library(args)
    event = read_event(args.event)
    if not isinstance(event, dict):
        raise CliError(f"event {args.event} must be a JSON object")
    body = None if args.template.startswith(LEGACY_PREFIX) else _template_file(args.template)
    content = trio.run(_render, engine_name(args), library, args.template, body, event, args.aqua_server)
    if args.json:
        print(json.dumps(content.as_map(), ensure_ascii=False), file=out)
    else:
        print_content(content.as_map(), out)
    return EXIT_OK


def _route_test_command(args: argparse.Namespace, out: TextIO) -> int:
    # An explicit `route test --cfgfile` wins; otherwise the daemon's choice (env, then `--cfgfile`).
    cfgfile = (
        args.route_cfgfile
        or os.environ.get("POSTEE_CFG")
        or os.environ.get("AQUAALERT_CFG")
        or getattr(args, "cfgfile", None)
    )
    if not cfgfile:
        raise CliError("route test needs --cfgfile")
    config = read_route_config(cfgfile)
    library = load_library(args)
    event = read_event(args.event)
    outcomes = trio.run(_test_routes, engine_name(args), config, library, event)
    if args.json:
        print(json.dumps({"routes": [o.as_json() for o in outcomes]}, ensure_ascii=False), file=out)
    else:
        for outcome in outcomes:
            verdict = "matched" if outcome.matched else "not matched"
            actions = ", ".join(outcome.actions) or "none"
            suffix = f" -> actions: {actions}" if outcome.matched else ""
            print(f"route {outcome.name!r}: {verdict}{suffix}", file=out)
            if outcome.error is not None:
                print(f"  error: {outcome.error}", file=out)
            elif outcome.content is not None:
                print_content(outcome.content, out, indent="  ")
    return EXIT_FAILED if any(o.error is not None for o in outcomes) else EXIT_OK


def _run(command: Callable[[argparse.Namespace, TextIO], int], args: argparse.Namespace, out: TextIO | None) -> int:
    """Run a command; input files are read before the Trio run, so no blocking I/O happens on its loop."""
    try:
        return command(args, out or sys.stdout)
    except (CliError, UnknownBackendError) as exc:
        print(f"postee: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RegoError as exc:
        print(f"postee: {exc}", file=sys.stderr)
        return EXIT_FAILED


def run_render(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`postee render`: print the content one template makes of one event."""
    return _run(_render_command, args, out)


def run_route_test(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`postee route test`: which routes match an event, and what each would send."""
    return _run(_route_test_command, args, out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run these subcommands alone (the full CLI is `postee.cli.main`)."""
    parser = argparse.ArgumentParser(prog="postee")
    parser.add_argument("--cfgfile", default=None)
    add_subcommands(parser)
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.error("a command is required")
    return args.handler(args)


__all__ = ["add_subcommands", "main", "read_route_config", "run_render", "run_route_test"]
