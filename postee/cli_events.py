"""`postee events`: what a node received, once (`GET /events`) or live (`--follow`: the `/feed` WebSocket).

    postee events --url http://127.0.0.1:8082 --key K                 # the recent events, once
    postee events --follow --url http://127.0.0.1:8082 --key K [--types execution --status failed] [--json]

With `--follow` it prints one line per feed message (JSON with `--json`, a readable line otherwise),
reconnects with backoff when the connection drops (the node restarting), stops at once when the key is
refused, and exits cleanly (status 0) on Ctrl-C. The key defaults to `POSTEE_API_KEY`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
import urllib.parse
from typing import Any

import trio

__all__ = ["add_events_command", "line_of"]

EXIT_REFUSED = 1
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
CONNECT_TIMEOUT = 10.0
DISCONNECT_TIMEOUT = 2.0
"""Seconds the closing handshake may take on Ctrl-C (trio-websocket waits 60 s by default)."""


def add_events_command(commands: Any) -> None:
    events = commands.add_parser("events", help="print a node's recent events, or follow its live feed (--follow)")
    events.add_argument("--url", dest="events_url", default="http://127.0.0.1:8082",
                        help="the node's HTTP address (default http://127.0.0.1:8082)")
    events.add_argument("--key", dest="events_key", default=None,
                        help="the API key (default: env POSTEE_API_KEY; `postee apikey` prints it)")
    events.add_argument("--follow", "-f", action="store_true", help="follow the live feed until Ctrl-C")
    events.add_argument("--types", default=None, help="with --follow: event,execution,runner (default: all)")
    events.add_argument("--route", default=None, help="with --follow: only this route's events and executions")
    events.add_argument("--runner", default=None, help="with --follow: only what concerns this runner (or node)")
    events.add_argument("--status", choices=("ok", "failed"), default=None, help="with --follow: executions by status")
    events.add_argument("--json", dest="events_json", action="store_true", help="one JSON object per line")
    events.set_defaults(handler=run_events)


def _escape(text: str) -> str:
    """Control and format characters (escape sequences, C1 controls, bidirectional overrides) as visible
    escapes: what a feed message says was written by others, and must not drive the terminal."""
    return "".join(
        (repr(c)[1:-1] if ord(c) < 0x100 else f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        if unicodedata.category(c) in ("Cc", "Cf") else c
        for c in text
    )


def _json_line(message: dict[str, Any]) -> str:
    """JSON keeps non-ASCII text readable, but escapes C1 controls and format characters too (plain
    `json.dumps` escapes only those below 0x20): the line stays valid JSON and inert in a terminal."""
    text = json.dumps(message, ensure_ascii=False)
    # json's own escape, surrogate pairs included beyond U+FFFF (a plain \\uXXXXX would change the text)
    return "".join(json.dumps(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)


def line_of(message: dict[str, Any]) -> str:
    """A feed message as one readable line (control characters escaped)."""
    return _escape(_readable(message))


def _readable(message: dict[str, Any]) -> str:
    kind = message.get("type")
    if kind == "event" and message.get("stage") == "routed":
        routes = ", ".join(message.get("routes") or []) or "no route"
        failed = f"; failed in {', '.join(message['failed'])}" if message.get("failed") else ""
        return f"event     {message.get('id')} matched {routes}{failed}"
    if kind == "event":
        return f"event     {message.get('id')} from {message.get('source')} ({message.get('size')} bytes)"
    if kind == "execution":
        error = f": {message['error']}" if message.get("error") else ""
        return (f"execution {message.get('status', '?'):<6} {message.get('node')} {message.get('route')}/"
                f"{message.get('action')} event {message.get('event_id')}, {message.get('attempts')} attempt(s), "
                f"{float(message.get('duration') or 0):.3f} s{error}")
    if kind == "runner":
        behind = " (behind)" if message.get("config_current") is False else ""
        return (f"runner    {message.get('name')} {message.get('state')}, configuration "
                f"{message.get('config_version') or '?'}{behind}")
    if kind == "dropped":
        return f"dropped   {message.get('count')} message(s): this client was too slow"
    return json.dumps(message)


def _feed_url(args: argparse.Namespace) -> str:
    base = args.events_url.rstrip("/")
    scheme, rest = base.split("://", 1) if "://" in base else ("http", base)
    query = {name: value for name, value in (("types", args.types), ("route", args.route), ("runner", args.runner),
                                             ("status", args.status)) if value}
    url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/feed"
    return url + (f"?{urllib.parse.urlencode(query)}" if query else "")


def _print(message: dict[str, Any], as_json: bool) -> None:
    print(_json_line(message) if as_json else line_of(message), flush=True)


async def follow(args: argparse.Namespace, key: str) -> int:
    """Print the feed until cancelled; reconnect with backoff; EXIT_REFUSED when the key is refused."""
    from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

    url, delay = _feed_url(args), BACKOFF_INITIAL
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    while True:
        try:
            async with open_websocket_url(url, extra_headers=headers, connect_timeout=CONNECT_TIMEOUT,
                                          disconnect_timeout=DISCONNECT_TIMEOUT) as socket:
                delay = BACKOFF_INITIAL
                while True:
                    _print(json.loads(await socket.get_message()), args.events_json)
        except ConnectionRejected as exc:
            if exc.status_code in (401, 403, 404):
                print(f"postee events: {url} refused the connection ({exc.status_code}): "
                      f"{'check --key' if exc.status_code != 404 else 'no live feed there'}", file=sys.stderr)
                return EXIT_REFUSED
            reason = f"refused ({exc.status_code})"
        except (ConnectionClosed, HandshakeError, OSError) as exc:
            reason = _reason(exc)
        print(_escape(f"postee events: connection to {url} lost ({reason}); retrying in {delay:g} s"), file=sys.stderr)
        await trio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in words: trio-websocket's `HandshakeError` says it only in its cause."""
    cause = exc.__cause__
    if not str(exc) and cause is not None:
        exc = cause
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _recent(args: argparse.Namespace, key: str) -> int:
    import httpx

    try:
        answer = httpx.get(args.events_url.rstrip("/") + "/events", timeout=CONNECT_TIMEOUT,
                           headers={"authorization": f"Bearer {key}"} if key else {})
    except httpx.HTTPError as exc:
        print(f"postee events: {args.events_url}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if answer.status_code != 200:
        print(_escape(f"postee events: {args.events_url}/events answered {answer.status_code}: "
                      f"{answer.text.strip()}"), file=sys.stderr)
        return EXIT_REFUSED
    for event in answer.json():
        if args.events_json:
            print(_json_line(event))
        else:
            print(_escape(f"event     {event.get('id')} from {event.get('source')} at {event.get('received_at')}"))
    return 0


def run_events(args: argparse.Namespace) -> int:
    key = args.events_key or os.environ.get("POSTEE_API_KEY", "")
    if not args.follow:
        return _recent(args, key)
    try:
        return trio.run(follow, args, key)
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:  # Ctrl-C landed in one of the connection's own tasks
        interrupted, rest = group.split(KeyboardInterrupt)
        if interrupted is not None and rest is None:
            return 0
        raise
