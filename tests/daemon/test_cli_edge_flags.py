"""The HTTP edge switches on the command line: `--open-events` (or `POSTEE_OPEN_EVENTS=1`), the tenant
bounds and the memory of `GET /events` reach the node; nonsense values are usage errors."""

import pytest

from postee.cli import build_parser, node_options
from postee.pipeline.events import RECENT_EVENTS_BYTES
from postee.web.app import DEFAULT_TENANT_CONCURRENCY, DEFAULT_TENANT_TIMEOUT


def options(argv, environ=None):
    return node_options(build_parser().parse_args(argv), environ or {})


def test_defaults_are_closed_and_bounded():
    opts = options([])
    assert opts.events_open is False
    assert (opts.tenant_timeout, opts.tenant_concurrency) == (DEFAULT_TENANT_TIMEOUT, DEFAULT_TENANT_CONCURRENCY)
    assert DEFAULT_TENANT_TIMEOUT <= 60 and opts.recent_events_bytes == RECENT_EVENTS_BYTES


def test_switches_reach_the_node():
    opts = options(["--open-events", "--tenant-timeout", "2.5", "--tenant-concurrency", "3",
                    "--recent-events-bytes", "1048576"])
    assert opts.events_open is True
    assert (opts.tenant_timeout, opts.tenant_concurrency, opts.recent_events_bytes) == (2.5, 3, 1048576)
    assert options([], {"POSTEE_OPEN_EVENTS": "1"}).events_open is True
    assert options([], {"POSTEE_OPEN_EVENTS": "0"}).events_open is False


@pytest.mark.parametrize("argv", [["--tenant-timeout", "0"], ["--tenant-concurrency", "-1"],
                                  ["--recent-events-bytes", "lots"], ["--tenant-concurrency", "1.5"]])
def test_nonsense_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2
    assert argv[0] in capsys.readouterr().err
