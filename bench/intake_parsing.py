"""What reading an event costs: strict intake parsing and the legacy scan renderers.

    python bench/intake_parsing.py [--repeat 3]

- **strict parse / json.loads**: `postee.pipeline.events.parse_event` (NaN, Infinity and out-of-range
  numbers refused, duplicate keys and lone surrogates handled as Go does, depth checked) against a bare
  `json.loads` of the same bytes, the floor: Postee's 10 KB Aqua scan and a synthetic 1.4 MB scan.
- **legacy render**: `postee.legacy.render_content` per event, for each renderer, on Postee's Aqua scan
  and on a synthetic scan with 20,000 vulnerabilities.

Best of `--repeat` runs, all in this one run: only the ratios are meant to be compared across machines.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from postee.legacy import RENDERERS, render_content, server_url
from postee.pipeline.events import parse_event

ROOT = Path(__file__).resolve().parents[1]
AQUA = (ROOT / "tests" / "fixtures" / "legacy" / "inputs" / "aqua-input.json").read_bytes()


def big_scan(vulnerabilities: int = 20_000) -> bytes:
    per_resource = 20
    resources = [
        {"resource": {"name": f"pkg-{i}", "version": "1.0"},
         "vulnerabilities": [{"name": f"CVE-2026-{i}-{j}", "aqua_severity": ("high", "low")[j % 2],
                              "fix_version": "2.0"} for j in range(per_resource)]}
        for i in range(vulnerabilities // per_resource)
    ]
    return json.dumps({"image": "big:1", "registry": "r", "resources": resources}).encode()


def per_call(fn: Callable[[], object], budget: float, repeat: int) -> float:
    """Seconds per call: best of `repeat` rounds of at least `budget` seconds each."""
    best = float("inf")
    for _ in range(repeat):
        calls, start = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= budget:
                break
        best = min(best, elapsed / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per round")
    args = parser.parse_args()
    big = big_scan()
    print("| body | json.loads | strict parse_event | ratio |")
    print("|---|---|---|---|")
    for name, raw in (("Aqua scan (10 KB)", AQUA), (f"synthetic scan ({len(big) / 1e6:.1f} MB)", big)):
        floor = per_call(lambda raw=raw: json.loads(raw), args.budget, args.repeat)
        strict = per_call(lambda raw=raw: parse_event(raw), args.budget, args.repeat)
        print(f"| {name} | {floor * 1e3:.3f} ms | {strict * 1e3:.3f} ms | {strict / floor:.2f} |")
    print()
    print("| event | " + " | ".join(RENDERERS) + " |")
    print("|---|" + "---|" * len(RENDERERS))
    srv = server_url("https://myserver.com")
    for name, raw in (("Aqua scan", AQUA), ("20,000 vulnerabilities", big)):
        event = json.loads(raw)
        cells = [per_call(lambda r=r, e=event: render_content(e, r, srv), args.budget, args.repeat) for r in RENDERERS]
        print(f"| {name} | " + " | ".join(f"{c * 1e3:.2f} ms" for c in cells) + " |")


if __name__ == "__main__":
    main()
