"""Postee's built-in (non-Rego) scan renderers: `legacy-scan-renderer: html | slack | jira`.

Postee's default `cfg.yaml` uses them for Aqua image scans. This package reproduces their output
byte for byte (see `shared/compat/legacy/SPEC.md` and the goldens under `tests/fixtures/legacy`):

- `godecode`: Go `encoding/json` rules for decoding into fixed structs;
- `scanmodel`: the scan model and how an event is decoded into it;
- `markup`: the html, jira and slack primitives (with Go's JSON string encoder);
- `report`: the content of one event and the aggregation of several;
- `slackbody`: the bodies the Slack action posts for this output.

Everything here is pure and synchronous: the caller owns threads, routes and queues.
"""

from postee.legacy.report import RENDERERS, aggregate_contents, render_content, server_url
from postee.legacy.scanmodel import LegacyRenderError

__all__ = ["RENDERERS", "LegacyRenderError", "aggregate_contents", "render_content", "server_url"]
