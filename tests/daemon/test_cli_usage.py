"""Role flags that do not go together are a usage error (exit 2, one line) before anything starts.

Each case runs `python -m postee` as a real process with a valid config and a store path: a daemon
that started anyway (the old behaviour: runner or controller flags silently ignored, a standalone
node) creates its store, which the test sees at once and reports as a failed assertion.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from postee.cli import EXIT_USAGE, UsageError, build_parser, check_role_flags
from tests.daemon.helpers import webhook_route

STARTUP_BOUND = 20.0
"""Seconds a usage error may take (interpreter start and imports on a busy machine); it takes ~1 s."""

RUNNER_NEEDS_NAME = "needs --runner-name (and --controller-url)"
CA_WITHOUT_CERT = (
    "postee: --controller-ca-root needs --controller-tls-cert and --controller-tls-key: with a CA root, "
    "clients must present certificates to a server that has none"
)

CASES = [
    # runner flags without --runner-name
    (["--controller-url=nats://127.0.0.1:1", "--runner-tls-cert=cert.pem", "--runner-tls-key=key.pem"],
     f"postee: --runner-tls-cert {RUNNER_NEEDS_NAME}"),
    (["--runner-tls-key=key.pem"], f"postee: --runner-tls-key {RUNNER_NEEDS_NAME}"),
    (["--runner-ca-cert=ca.pem"], f"postee: --runner-ca-cert {RUNNER_NEEDS_NAME}"),
    (["--runner-ca-root=ca.pem"], f"postee: --runner-ca-root {RUNNER_NEEDS_NAME}"),
    (["--runner-seed-file=seed.txt"], f"postee: --runner-seed-file {RUNNER_NEEDS_NAME}"),
    (["--controller-mode", "--runner-tls-cert=cert.pem"],
     f"postee: --runner-tls-cert {RUNNER_NEEDS_NAME}; a controller uses --controller-tls-cert"),
    # controller flags without --controller-mode
    (["--controller-ca-root=ca.pem"], "postee: --controller-ca-root needs --controller-mode"),
    (["--controller-tls-cert=cert.pem", "--controller-tls-key=key.pem"],
     "postee: --controller-tls-cert needs --controller-mode"),
    (["--controller-tls-key=key.pem"], "postee: --controller-tls-key needs --controller-mode"),
    (["--controller-seed-file=seed.txt"], "postee: --controller-seed-file needs --controller-mode"),
    (["--nats-url=nats://127.0.0.1:1"], "postee: --nats-url needs --controller-mode"),
    (["--controller-url=nats://127.0.0.1:1", "--runner-name=r1", "--controller-seed-file=seed.txt"],
     "postee: --controller-seed-file needs --controller-mode; a runner uses --runner-seed-file"),
    # --controller-url is shared by both roles, but with neither it is ignored
    (["--controller-url=nats://127.0.0.1:1"],
     "postee: --controller-url needs --runner-name (a runner) or --controller-mode (a controller)"),
    # certificate and key come in pairs; a CA root needs the server's certificate
    (["--controller-mode", "--controller-ca-root=ca.pem"], CA_WITHOUT_CERT),
    (["--controller-mode", "--controller-tls-cert=cert.pem"],
     "postee: --controller-tls-cert needs --controller-tls-key"),
    (["--controller-mode", "--controller-tls-key=key.pem"],
     "postee: --controller-tls-key needs --controller-tls-cert"),
    (["--controller-mode", "--controller-ca-root=ca.pem", "--controller-tls-cert=cert.pem"],
     "postee: --controller-tls-cert needs --controller-tls-key"),
    (["--controller-url=nats://127.0.0.1:1", "--runner-name=r1", "--runner-tls-cert=cert.pem"],
     "postee: --runner-tls-cert needs --runner-tls-key"),
    (["--controller-url=nats://127.0.0.1:1", "--runner-name=r1", "--runner-tls-key=key.pem"],
     "postee: --runner-tls-key needs --runner-tls-cert"),
]


def start(tmp_path: Path, *flags: str) -> subprocess.Popen:
    for name in ("ca.pem", "cert.pem", "key.pem", "seed.txt"):  # present, so only the combination is wrong
        (tmp_path / name).write_text("placeholder\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(webhook_route("http://127.0.0.1:9/hook"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEE_", "AQUAALERT_"))}
    env["PATH_TO_DB"] = str(tmp_path / "db" / "webhooks.db")
    return subprocess.Popen(
        [sys.executable, "-m", "postee", "--cfgfile", str(cfg), "--url", "127.0.0.1:0", "--tls", "off",
         "--rego-workers", "1", *flags],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize(("flags", "message"), CASES, ids=[" ".join(flags) for flags, _ in CASES])
def test_role_flags_that_do_not_go_together_are_a_usage_error(tmp_path, flags, message):
    proc = start(tmp_path, *flags)
    store_dir = tmp_path / "db"
    deadline = time.monotonic() + STARTUP_BOUND
    try:
        while proc.poll() is None and not store_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        started = store_dir.exists()
        still_running = proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert not started, f"a daemon started (its store exists):\n{stderr[-2000:]}"
    assert not still_running, f"still running after {STARTUP_BOUND} s:\n{stderr[-2000:]}"
    assert proc.returncode == EXIT_USAGE == 2, stderr[-2000:]
    assert stderr.splitlines() == [message]


ACCEPTED = [
    [],
    ["--controller-mode"],
    ["--controller-mode", "--controller-url=nats://127.0.0.1:4222"],
    ["--controller-mode", "--controller-tls-cert=c", "--controller-tls-key=k"],
    ["--controller-mode", "--controller-ca-root=ca", "--controller-tls-cert=c", "--controller-tls-key=k",
     "--controller-seed-file=s"],
    ["--controller-mode", "--nats-url=nats://h:4222", "--controller-ca-root=ca"],  # a client: CA verifies the server
    ["--controller-url=nats://h:4222", "--runner-name=r1"],
    ["--controller-url=nats://h:4222", "--runner-name=r1", "--runner-ca-cert=ca"],
    ["--controller-url=nats://h:4222", "--runner-name=r1", "--runner-ca-root=ca", "--runner-tls-cert=c",
     "--runner-tls-key=k", "--runner-seed-file=s"],
]


@pytest.mark.parametrize("flags", ACCEPTED, ids=[" ".join(flags) or "standalone" for flags in ACCEPTED])
def test_combinations_the_seed_document_allows_are_accepted(flags):
    check_role_flags(build_parser().parse_args(flags))


def test_a_usage_error_is_an_exception_of_its_own():
    with pytest.raises(UsageError, match="^--runner-seed-file needs --runner-name"):
        check_role_flags(build_parser().parse_args(["--runner-seed-file=s"]))
