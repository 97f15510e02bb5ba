"""3,000 malformed bodies against a real daemon process (issue #12's check for strict intake).

Invalid JSON, non-objects, deep nesting, NaN/Infinity and out-of-range numbers, invalid UTF-8, NUL
bytes, random binary and bodies past the 16 MiB limit (see `malformed.py`), to `POST /` and to
`POST /tenant/<route>`: every one is answered 4xx, the daemon stays up (same process, `/ping`
answers), its resident memory stays flat (measured from /proc after a warm-up that sent each kind
once; the bound is generous, the machines are shared), and valid events sent afterwards all arrive,
each exactly once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
import trio

from tests.daemon.helpers import wait_until_ready, webhook_route
from tests.daemon.malformed import KINDS, malformed_bodies, one_of_each
from tests.helpers.http_sink import open_http_sink

MALFORMED = 3000
VALID_AFTER = 100
CONCURRENCY = 8
RSS_GROWTH_LIMIT = 32 * 1024 * 1024
"""Bytes the daemon's RSS may grow over the 3,000 bodies. A leak of one body's text (or its parse
error, or a task) per request would be several times this; allocator noise stays well under it."""


pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def start_daemon(tmp_path: Path, sink_url: str) -> tuple[subprocess.Popen, str, Path]:
    """The daemon as a process on a free port: (process, its base URL, its log). The log is a file, not
    a pipe: 3,000 warnings would fill a pipe nobody reads and block the daemon."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(webhook_route(f"{sink_url}/hook", serialize=True, rule='contains(input.image, "alpine")'))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTEE_", "AQUAALERT_"))}
    env["PATH_TO_DB"] = str(tmp_path / "db" / "webhooks.db")
    log = tmp_path / "daemon.log"
    address = f"127.0.0.1:{free_port()}"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "postee", "--cfgfile", str(cfg), "--url", address,
             "--tls", "off", "--rego-workers", "1"],
            env=env, cwd=tmp_path, stdout=log_file, stderr=subprocess.STDOUT,
        )
    return proc, f"http://{address}", log


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


ROUND = len(KINDS) - 1
"""Bodies in one round of the kinds (oversize ones come apart, see `malformed_bodies`)."""


async def post_all(client: httpx.AsyncClient, bodies: list[tuple[str, bytes]]) -> Counter[tuple[str, int]]:
    """POST every body (every other round of the kinds to `/tenant/r`, so each kind reaches both paths),
    CONCURRENCY at a time; (kind, status) counts."""
    statuses: Counter[tuple[str, int]] = Counter()
    work_send, work_receive = trio.open_memory_channel[tuple[int, str, bytes]](0)

    async def worker() -> None:
        async for index, kind, body in work_receive:
            path = "/tenant/r" if (index // ROUND) % 2 else "/"
            statuses[kind, (await client.post(path, content=body)).status_code] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(worker)
        async with work_send:
            for index, (kind, body) in enumerate(bodies):
                await work_send.send((index, kind, body))
    return statuses


def refused_as_expected(statuses: Counter[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """(kind, status, count) of every answer that is not the expected refusal: 413 past the limit, else 400."""
    return [(kind, status, n) for (kind, status), n in statuses.items()
            if status != (413 if kind == "oversize" else 400)]


async def test_malformed_bodies_get_4xx_memory_stays_flat_and_valid_events_arrive_once(tmp_path):
    async with open_http_sink() as sink:
        proc, url, log = start_daemon(tmp_path, sink.url)
        try:
            limits = httpx.Limits(max_connections=CONCURRENCY)
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
                await wait_until_ready(proc, client, url, timeout=60, log=lambda: tail(log))
                warmup = one_of_each() * 3
                assert not refused_as_expected(await post_all(client, warmup))
                baseline = rss_bytes(proc.pid)

                statuses = await post_all(client, list(malformed_bodies(MALFORMED)))
                assert sum(statuses.values()) == MALFORMED
                unexpected = refused_as_expected(statuses)
                assert not unexpected, (unexpected, tail(log))
                assert {kind for kind, _ in statuses} >= {"oversize", "deep-nesting", "invalid-utf8", "nul-bytes"}
                assert proc.poll() is None, tail(log)
                assert (await client.get("/ping")).status_code == 200
                growth = rss_bytes(proc.pid) - baseline
                assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"

                for n in range(VALID_AFTER):
                    response = await client.post("/", content=f'{{"image": "alpine", "n": {n}}}'.encode())
                    assert response.status_code == 200, response.text
                # The route is serialized: once the last event has arrived, every earlier delivery
                # (a retried duplicate included) has been made.
                assert (await client.post("/", content=b'{"image": "alpine", "n": "last"}')).status_code == 200
                with trio.fail_after(30):
                    while not any(r.json()["n"] == "last" for r in sink.requests):
                        await trio.sleep(0.05)
                arrived = Counter(r.json()["n"] for r in sink.requests)
                assert arrived == Counter([*range(VALID_AFTER), "last"])
                assert proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
