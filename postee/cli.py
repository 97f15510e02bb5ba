"""Command line entry point.

Flags and environment overrides follow Postee's so an existing deployment can switch binaries.
The daemon itself arrives with the standalone issue; for now the command validates that the
configuration file is readable YAML and says what it found.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import yaml

DEFAULT_HTTP = "0.0.0.0:8082"
DEFAULT_HTTPS = "0.0.0.0:8445"
DEFAULT_CFGFILE = "/config/cfg.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="postee", description="Security-event router (Postee-compatible).")
    parser.add_argument("--url", default=DEFAULT_HTTP, help="HTTP listen address (env POSTEE_HTTP)")
    parser.add_argument("--tls", default=DEFAULT_HTTPS, help="HTTPS listen address (env POSTEE_HTTPS)")
    parser.add_argument("--cfgfile", default=DEFAULT_CFGFILE, help="config file (env POSTEE_CFG)")
    return parser


def _first_env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfgfile = _first_env("POSTEE_CFG", "AQUAALERT_CFG") or args.cfgfile
    try:
        with open(cfgfile, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh) or {}
    except OSError as exc:
        print(f"postee: cannot read config {cfgfile}: {exc.strerror}", file=sys.stderr)
        return 2
    except yaml.YAMLError as exc:
        print(f"postee: {cfgfile} is not valid YAML: {exc}", file=sys.stderr)
        return 2
    routes = cfg.get("routes") or []
    actions = cfg.get("actions") or []
    print(
        f"postee: {cfgfile}: {len(routes)} routes, {len(actions)} actions; "
        "the daemon itself is not built yet (see the standalone-daemon issue)",
        file=sys.stderr,
    )
    return 0
