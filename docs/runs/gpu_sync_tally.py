#!/usr/bin/env python3
"""Tallies the issue-6 targets over every full gpu_sync pass kept here.

The passes: every full table (all five fractions, Unified Memory included)
or --json object in docs/runs from the eighth session's first run (17:48
UTC, 2026-11-29) on, at the default settings.  Left out: the pool built on
a futex (gpu_sync-futex-*, not kept) and the passes run with
MMSB_POOL_SPIN_US=1000 (the "== spin1000" sections).  Run from anywhere:
    python3 docs/runs/gpu_sync_tally.py [[YYYY-MM-DD-]HHMM [[YYYY-MM-DD-]HHMM]]
Count only the files named from the first time on (default
2026-11-29-1748; a time alone is on 2026-11-29; the twelfth session's
code, b6c45c8: 2238) and before the second.
Files are named ...-YYYY-MM-DD-h200-HHMM...
"""
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FRACS = ("1e-05", "0.0001", "0.001", "0.01", "0.1")


def text_passes(path):
    """The full tables of a text file, skipping spin1000 sections."""
    out, cur, skip = [], {}, False
    for line in open(path):
        if line.startswith("== "):
            skip = "spin1000" in line
        m = re.match(r"\s*1GiB frac=(\S+)\s", line)
        if m and "x_vs_um" in line and not skip:  # whole lines: a log's cut copies are not passes
            if m.group(1) in cur:
                out.append(cur)
                cur = {}
            cur[m.group(1)] = dict(re.findall(r"(\w+)=([0-9.e+-]+)", line))
        d = re.search(r"device diff, 1GiB, nothing changed\s+ms=([0-9.]+)", line)
        if d and cur and not skip:
            cur["diff"] = d.group(1)
    if cur:
        out.append(cur)
    return [p for p in out if "0.1" in p and "um_ms" in p["0.1"]]


def json_pass(path):
    cur = {}
    doc = json.load(open(path))
    if not isinstance(doc, dict):  # a trace (MMSB_TRACE), not gpu_sync --json
        return []
    for x in doc["results"]:
        m = re.match(r"1GiB frac=(\S+)$", x["case"])
        if m:
            cur[m.group(1)] = {k: str(v) for k, v in x.items()}
        if "nothing changed" in x["case"]:
            cur["diff"] = str(x["ms"])
    return [cur] if "0.1" in cur else []


def main():
    since = sys.argv[1] if len(sys.argv) > 1 else "1748"
    until = sys.argv[2] if len(sys.argv) > 2 else "9999-12-31-2359"
    since, until = (t if len(t) > 4 else "2026-11-29-" + t for t in (since, until))
    passes = []
    for f in sorted(glob.glob(os.path.join(HERE, "*h200-[0-9][0-9][0-9][0-9]*"))):
        name = os.path.basename(f)
        m = re.search(r"(\d{4}-\d{2}-\d{2})-h200-(\d{4})", name)
        if name.startswith("gpu_sync-futex") or not m or not since <= f"{m.group(1)}-{m.group(2)}" < until:
            continue
        passes += json_pass(f) if name.endswith(".json") else text_passes(f)

    def x(p, frac, key):
        return float(p[frac][key])

    high = [x(p, f, "x_of_floor") for p in passes for f in FRACS[2:]]
    um = [x(p, "0.0001", "x_vs_um") for p in passes]
    diff = [float(p["diff"]) for p in passes if "diff" in p]
    n = len(passes)
    if not n:
        print(f"no full passes since {since}")
        return
    print(f"{n} full passes at the default settings, {since[:10]} {since[11:13]}:{since[13:]} UTC on"
          + (f", before {until[:10]} {until[11:13]}:{until[13:]}" if len(sys.argv) > 2 else ""))
    print(f"within 2x of the floor at 1e-3, 1e-2, 1e-1: "
          f"{sum(all(x(p, f, 'x_of_floor') <= 2 for f in FRACS[2:]) for p in passes)} of {n} "
          f"({min(high):.2f}-{max(high):.2f}x)")
    print(f"100x faster than Unified Memory at 1e-4: {sum(u >= 100 for u in um)} of {n} "
          f"({min(um):.0f}-{max(um):.0f}x)")
    print(f"device diff of a 1 GiB mirror under 1 ms: {sum(d < 1 for d in diff)} of the {len(diff)} "
          f"passes whose files keep it "
          f"({min(diff):.3f}-{max(diff):.3f} ms)")
    for frac, label in (("1e-05", "1e-5"), ("0.0001", "1e-4")):
        print(f"within 2x of the floor at {label}: "
              f"{sum(x(p, frac, 'x_of_floor') <= 2 for p in passes)} of {n}")
    print(f"20x faster than the full copy at 1e-3: "
          f"{sum(x(p, '0.001', 'x_vs_full_copy') >= 20 for p in passes)} of {n}")


if __name__ == "__main__":
    main()
