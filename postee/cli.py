"""Command line: `postee` runs the daemon; `check`, `apikey`, `render` and `route test` help around it.

Flags and environment variables are Postee's, with the same precedence (the environment wins):
`POSTEE_HTTP` > `AQUAALERT_URL` > `--url`; `POSTEE_HTTPS` > `AQUAALERT_TLS` > `--tls`;
`POSTEE_CFG` > `AQUAALERT_CFG` > `--cfgfile`; `PATH_TO_DB`; `AQUAALERT_CERT_PEM` / `AQUAALERT_KEY_PEM`
(certificate and key files of the HTTPS listener); `POSTEE_DEBUG` (debug logging).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import structlog
import trio

from postee import cli_events, cli_rego, cli_sim

if TYPE_CHECKING:  # the daemon's modules (web server, actions, store) load only when the daemon runs
    from postee.roles.node import NodeOptions

DEFAULT_HTTP = "0.0.0.0:8082"
DEFAULT_HTTPS = "0.0.0.0:8445"
DEFAULT_CFGFILE = "/config/cfg.yaml"

EXIT_CONFIG = 2
EXIT_RUNTIME = 1
EXIT_USAGE = 2
"""Flags that do not go together: argparse's own exit status for a usage error."""


class _Spelled(argparse.Action):
    """Stores the value and remembers which of the flag's names was typed, so an error can name it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        spelled = dict(getattr(namespace, "spelled", None) or {})
        spelled[self.dest] = option_string
        namespace.spelled = spelled


def _positive(convert: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: `convert`ed, and greater than zero (else a usage error naming the value)."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
        return value

    parse.__name__ = convert.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postee", description="Security-event router (Postee-compatible).")
    parser.add_argument("--url", default=DEFAULT_HTTP, help="HTTP listen address (env POSTEE_HTTP, AQUAALERT_URL)")
    parser.add_argument("--tls", default=DEFAULT_HTTPS,
                        help="HTTPS listen address, 'off' to disable (env POSTEE_HTTPS, AQUAALERT_TLS)")
    parser.add_argument("--cfgfile", default=DEFAULT_CFGFILE, help="config file (env POSTEE_CFG, AQUAALERT_CFG)")
    parser.add_argument("--rego-workers", type=int, default=None, help="Rego worker processes (default: CPU count)")
    parser.add_argument("--stop-grace", type=float, default=10.0,
                        help="seconds to drain queued events on shutdown (default 10)")
    edge = parser.add_argument_group("HTTP edge (reading endpoints and /reload need the API key: postee apikey)")
    edge.add_argument("--open-events", action="store_true",
                      help="GET /events as open as the webhook, as in Postee (env POSTEE_OPEN_EVENTS=1)")
    edge.add_argument("--tenant-timeout", type=_positive(float), default=None, metavar="SECONDS",
                      help="how long POST /tenant/{route} waits for its route before answering 504 (default 30)")
    edge.add_argument("--tenant-concurrency", type=_positive(int), default=None, metavar="N",
                      help="POST /tenant/{route} runs at once; more are answered 503 (default 16)")
    edge.add_argument("--recent-events-bytes", type=_positive(int), default=None, metavar="BYTES",
                      help="memory the events kept for GET /events may take (default 67108864: 64 MiB)")
    controller = parser.add_argument_group("controller mode")
    controller.add_argument("--controller-mode", action="store_true", help="run as a controller")
    controller.add_argument("--controller-url", default=None,
                            help="controller: where its nats-server listens (default nats://0.0.0.0:4222); "
                                 "runner: where to reach it")
    controller.add_argument("--controller-ca-root", help="CA root: client certificates are required and verified")
    controller.add_argument("--controller-tls-cert", help="TLS certificate of the controller's nats-server")
    controller.add_argument("--controller-tls-key", help="TLS key of the controller's nats-server")
    controller.add_argument("--controller-seed-file",
                            help="NKeys seed file shared by all runners (Postee's mode; see --controller-runner-keys)")
    controller.add_argument("--controller-runner-keys", default=None,
                            help="file of 'runner-name: PUBLIC_KEY' lines (postee nkey --name RUNNER): each runner's "
                                 "own NKey, allowed to act only as that runner (env POSTEE_RUNNER_KEYS)")
    controller.add_argument("--insecure-bus", action="store_true",
                            help="let the controller's nats-server listen beyond loopback with no authentication")
    controller.add_argument("--nats-url", help="join this NATS server/cluster instead of starting one")
    runner = parser.add_argument_group("runner mode")
    runner.add_argument("--runner-name", help="run as a runner with this name (as in the config's runs-on)")
    runner.add_argument("--runner-ca-root", "--runner-ca-cert", dest="runner_ca_root", action=_Spelled,
                        help="CA root that signed the controller's certificate")
    runner.add_argument("--runner-tls-cert", help="TLS client certificate")
    runner.add_argument("--runner-tls-key", help="TLS client key")
    runner.add_argument("--runner-seed-file", help="NKeys seed file")
    commands = cli_rego.add_subcommands(parser)
    check = commands.add_parser("check", help="validate a config file and print every problem")
    check.add_argument("--cfgfile", dest="check_cfgfile", help="config file (default: as the daemon's)")
    check.add_argument("--controller-mode", dest="check_as_controller", action="store_true",
                       help="check as a controller does: secrets and files of runs-on actions are the runner's")
    check.set_defaults(handler=run_check)
    apikey = commands.add_parser("apikey", help="print the API key (Authorization: Bearer) of /events, /reload, ...")
    apikey.set_defaults(handler=run_apikey)
    seed = commands.add_parser("nkey", aliases=["nkey-seed"],
                               help="write a new NKeys user seed (--runner-seed-file) and print its public key")
    seed.add_argument("file", help="where to write the seed (created with mode 0600; must not exist)")
    seed.add_argument("--name", metavar="RUNNER",
                      help="print the line for the controller's runner keys file: 'RUNNER: PUBLIC_KEY'")
    seed.add_argument("--show", action="store_true", help="do not create: print the public key of an existing seed")
    seed.set_defaults(handler=run_nkey)
    cli_sim.add_sim_command(commands)
    cli_events.add_events_command(commands)
    return parser


def first_env(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = environ.get(name)
        if value:
            return value
    return None


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is now, so logging survives it being swapped (tests, capture)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


ENV_BENCH_REGO_THREADS = "POSTEE_BENCH_REGO_THREADS"


def configure_logging(environ: Mapping[str, str]) -> None:
    debug = bool(environ.get("POSTEE_DEBUG"))
    level = logging.DEBUG if debug else logging.INFO
    logging.basicConfig(level=level, stream=_CurrentStderr(),  # type: ignore[arg-type]
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request's full URL at INFO: a webhook URL's path and userinfo are its secrets.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def cfgfile_of(args: argparse.Namespace, environ: Mapping[str, str], override: str | None = None) -> str:
    return override or first_env(environ, "POSTEE_CFG", "AQUAALERT_CFG") or args.cfgfile


def node_options(args: argparse.Namespace, environ: Mapping[str, str]) -> NodeOptions:
    from postee.roles.node import NodeOptions
    from postee.store.paths import db_path_from_env

    https = first_env(environ, "POSTEE_HTTPS", "AQUAALERT_TLS") or args.tls
    return NodeOptions(
        cfgfile=cfgfile_of(args, environ),
        http_bind=first_env(environ, "POSTEE_HTTP", "AQUAALERT_URL") or args.url,
        https_bind=None if https.lower() in ("off", "none", "") else https,
        certfile=environ.get("AQUAALERT_CERT_PEM") or None,
        keyfile=environ.get("AQUAALERT_KEY_PEM") or None,
        db_path=db_path_from_env(environ),
        rego_engine=cli_rego.engine_name(args),
        rego_templates=getattr(args, "rego_templates", None) or environ.get("POSTEE_REGO_TEMPLATES") or None,
        rego_workers=args.rego_workers,
        stop_grace=args.stop_grace,
        handle_signals=True,
        environ=dict(environ),
        open_events=getattr(args, "open_events", False),
        # a benchmark's comparison switch (bench/pipeline.py), not a mode to run in: "thread" has no
        # crash isolation and cannot stop a hung evaluation
        rego_isolation="thread" if environ.get(ENV_BENCH_REGO_THREADS) == "1" else "process",
        **{name: value for name in ("tenant_timeout", "tenant_concurrency", "recent_events_bytes")
           if (value := getattr(args, name, None)) is not None},
    )


RUNNER_FLAGS = ("runner_ca_root", "runner_tls_cert", "runner_tls_key", "runner_seed_file")
CONTROLLER_FLAGS = ("controller_ca_root", "controller_tls_cert", "controller_tls_key", "controller_seed_file",
                    "nats_url")
COUNTERPARTS = {"runner_ca_root": "controller_ca_root", "runner_tls_cert": "controller_tls_cert",
                "runner_tls_key": "controller_tls_key", "runner_seed_file": "controller_seed_file"}
COUNTERPARTS |= {controller: runner for runner, controller in COUNTERPARTS.items()}


def _flag(args: argparse.Namespace, dest: str) -> str:
    """The flag as the user typed it (`--runner-ca-cert` or `--runner-ca-root`), else its main name."""
    return (getattr(args, "spelled", None) or {}).get(dest) or "--" + dest.replace("_", "-")


def check_role_flags(args: argparse.Namespace) -> None:
    """Refuse role flags that would be ignored or cannot work, naming the flag (`UsageError`).

    Checked before anything starts: a runner flag without `--runner-name` used to start a standalone
    node that silently ignored it, and a certificate without its key failed only once the node was up.
    `--controller-url` belongs to both roles (where the controller listens; where a runner reaches it).
    """
    if args.controller_mode and args.runner_name:
        raise UsageError("--controller-mode and --runner-name exclude each other: a node is one or the other")
    for dest in RUNNER_FLAGS:
        if getattr(args, dest) and not args.runner_name:
            hint = f"; a controller uses {_flag(args, COUNTERPARTS[dest])}" if args.controller_mode else ""
            raise UsageError(f"{_flag(args, dest)} needs --runner-name (and --controller-url){hint}")
    for dest in CONTROLLER_FLAGS:
        if getattr(args, dest) and not args.controller_mode:
            counterpart = COUNTERPARTS.get(dest)
            hint = f"; a runner uses {_flag(args, counterpart)}" if args.runner_name and counterpart else ""
            raise UsageError(f"{_flag(args, dest)} needs --controller-mode{hint}")
    if args.controller_url and not (args.controller_mode or args.runner_name):
        raise UsageError("--controller-url needs --runner-name (a runner) or --controller-mode (a controller)")
    if args.runner_name and not args.controller_url:
        raise UsageError("--runner-name needs --controller-url (nats://HOST:PORT of the controller)")
    role = "controller" if args.controller_mode else "runner"
    cert, key = f"{role}_tls_cert", f"{role}_tls_key"
    if getattr(args, cert) and not getattr(args, key):
        raise UsageError(f"{_flag(args, cert)} needs {_flag(args, key)}")
    if getattr(args, key) and not getattr(args, cert):
        raise UsageError(f"{_flag(args, key)} needs {_flag(args, cert)}")
    # Joining a server with --nats-url, the controller is a client: its CA root verifies that server.
    if args.controller_mode and args.controller_ca_root and not args.controller_tls_cert and not args.nats_url:
        raise UsageError("--controller-ca-root needs --controller-tls-cert and --controller-tls-key: with a CA "
                         "root, clients must present certificates to a server that has none")


def role_main(args: argparse.Namespace, options: NodeOptions) -> Callable[[], Awaitable[None]]:
    """The async entry point of the chosen role: standalone, controller or runner (flags already checked)."""
    from functools import partial

    from postee.roles.node import Node

    if args.controller_mode:
        from postee.roles.launch import LinkOptions, run_controller

        link = LinkOptions(
            url=args.controller_url or "nats://0.0.0.0:4222",
            ca_root=args.controller_ca_root,
            tls_cert=args.controller_tls_cert,
            tls_key=args.controller_tls_key,
            seed_file=args.controller_seed_file,
            nats_url=args.nats_url,
            runner_keys=args.controller_runner_keys or options.environ.get("POSTEE_RUNNER_KEYS") or None,
            insecure_bus=args.insecure_bus,
        )
        return partial(run_controller, options, link)
    if args.runner_name:
        from postee.roles.launch import LinkOptions, run_runner

        link = LinkOptions(
            url=args.controller_url,
            ca_root=args.runner_ca_root,
            tls_cert=args.runner_tls_cert,
            tls_key=args.runner_tls_key,
            seed_file=args.runner_seed_file,
        )
        return partial(run_runner, options, link, args.runner_name)
    return Node(options).run


class UsageError(Exception):
    """Flags that do not go together."""


def run_daemon(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    try:
        check_role_flags(args)  # first: a usage error returns at once, before the daemon's modules load
    except UsageError as exc:
        print(f"postee: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from actors import ActorError, one_error
    from postee.bus.server import NatsServerError
    from postee.config import ConfigError
    from postee.pipeline.build import PipelineError
    from postee.roles.upstream import RunnerFatal
    from postee.store.errors import StoreError

    options = node_options(args, environ)

    async def main() -> None:
        with one_error():
            await role()

    try:
        role = role_main(args, options)
        trio.run(main)
    except RunnerFatal as exc:
        print(f"postee: runner {args.runner_name}: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except NatsServerError as exc:
        print(f"postee: nats-server: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except ActorError as exc:  # a supervisor that gave up says why: the crash is its cause
        cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ is not None else ""
        print(f"postee: {exc}{cause}", file=sys.stderr)
        return EXIT_RUNTIME
    except ConfigError as exc:
        print(f"postee: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except PipelineError as exc:
        print("postee: the configuration cannot run:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except StoreError as exc:
        print(f"postee: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"postee: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


def run_check(args: argparse.Namespace) -> int:
    """`postee check`: every config problem with its path, then Rego compilation of templates and rules."""
    from postee.config import Severity, check_config
    from postee.pipeline.build import PipelineError, build_pipeline, runs_everything
    from postee.rego.library import TemplateLibrary
    from postee.rego.pool import open_rego_pool
    from postee.roles.controller import controller_local

    environ = os.environ
    path = cfgfile_of(args, environ, getattr(args, "check_cfgfile", None))
    as_controller = bool(getattr(args, "check_as_controller", False) or getattr(args, "controller_mode", False))
    config, problems = check_config(path, defer_runs_on_env=as_controller)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    for problem in problems:
        print(problem)
    if config is not None and not errors:

        async def compile_all() -> list[str]:
            library = TemplateLibrary.load(getattr(args, "rego_templates", None))
            async with open_rego_pool(cli_rego.engine_name(args), isolation="thread", workers=1) as pool:
                try:
                    pipeline = await build_pipeline(config, pool=pool, store=None, library=library,
                                                    is_local=controller_local if as_controller else runs_everything)
                except PipelineError as exc:
                    return exc.problems
            for warning in pipeline.warnings:
                print(f"warning: {warning}")
            return []

        rego_problems = trio.run(compile_all)
        for problem in rego_problems:
            print(problem)
        errors.extend(rego_problems)  # type: ignore[arg-type]
    if errors:
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        return 1
    print(f"{path}: OK ({len(config.routes)} routes, {len(config.templates)} templates, "  # type: ignore[union-attr]
          f"{len(config.actions)} actions)")  # type: ignore[union-attr]
    return 0


def run_apikey(args: argparse.Namespace) -> int:
    """`postee apikey`: the `/reload` key (from POSTEE_API_KEY, else the store, created if needed)."""
    from postee.roles.node import ENV_API_KEY
    from postee.store.errors import StoreError
    from postee.store.paths import db_path_from_env
    from postee.store.sqlite import open_store

    if os.environ.get(ENV_API_KEY):
        print(os.environ[ENV_API_KEY])
        return 0

    async def read() -> str:
        async with open_store(db_path_from_env()) as store:
            return await store.api_key()

    try:
        print(trio.run(read))
    except StoreError as exc:
        print(f"postee: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return 0


def run_nkey(args: argparse.Namespace) -> int:
    """`postee nkey FILE [--name RUNNER] [--show]`: a fresh seed, written privately (or, with --show, one
    that exists); prints only its public key, or the runner keys file line for RUNNER. The seed itself
    is never printed."""
    import yaml

    from postee.bus.nkeys_util import NKeyError, new_user_seed, public_key_from_seed, read_seed

    if args.show:
        try:
            seed = read_seed(args.file)
        except NKeyError as exc:
            print(f"postee: {exc}", file=sys.stderr)
            return EXIT_RUNTIME
    else:
        seed = new_user_seed()
        try:
            fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            print(f"postee: cannot create {args.file}: {exc.strerror}", file=sys.stderr)
            return EXIT_RUNTIME
        with os.fdopen(fd, "wb") as fh:
            fh.write(seed + b"\n")
        print(f"wrote {args.file} (mode 0600): the runner's --runner-seed-file; keep it secret", file=sys.stderr)
    public = public_key_from_seed(seed)
    if args.name:
        print(yaml.safe_dump({args.name: public}, default_flow_style=False, allow_unicode=True).strip())
    else:
        print(public)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(os.environ)
    if getattr(args, "handler", None) is not None:  # a subcommand
        return args.handler(args)
    return run_daemon(args, os.environ)
