"""Time to first paint of `stampflow view` with 100,000 results, in Debian's headless Chromium. Reports; never asserts.

Load: the real results of the bundled star/galaxy model on the bundled ZTF alerts and the committed CANDELS mock
packets (`stampflow classify`), repeated to ``--results`` rows with seeded changes to time, uncertainty, label and
id, so sorting and filtering have work to do. Every row points at a real packet, so every thumbnail is a real stamp.

Measured, each ``--repeats`` times in a fresh browser profile (median reported):

* ``load_s``: `stampflow view` start until it prints its URL (reading, decoding and indexing everything);
* ``first_rows_paint_ms``: navigation start until the first page of rows is painted (the page sets
  ``window.__firstRowsPaint`` two animation frames after inserting the rows); ``fcp_ms``: Chromium's first
  contentful paint;
* ``thumbs_ms``: navigation start until the first screen of thumbnails has decoded;
* ``filter_ms``, ``sort_uncertainty_ms``, ``next_page_ms``: a model filter, a sort by uncertainty and the next
  page, each from the change to the rows being replaced.

Writes bench/results/view-<utc>.json. Run: ``.venv/bin/python bench/view_first_paint.py`` (needs /usr/bin/chromium).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.viewer_harness import CHROMIUM, CHROMIUM_ARGS, start_view, wait_until  # noqa: E402
ALERTS = REPO / "tests" / "fixtures" / "alerts"
CANDELS = REPO / "tests" / "fixtures" / "packets" / "candels-mock.avro"




def make_results(out: Path, n: int, seed: int = 0) -> Path:
    base = out / "base.jsonl"
    subprocess.run([sys.executable, "-m", "stream", "classify", str(ALERTS), str(CANDELS), "--models", "stargal",
                    "--out", str(base), "--dead-letters", str(out / "dead"), "--show", "0", "--quiet"], check=True,
                   cwd=REPO, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in base.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    path = out / "results-100k.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            rec = json.loads(json.dumps(records[i % len(records)]))
            rec["objectId"] = f"{rec['objectId']}#{i}"
            if rec.get("alert_time") is not None:
                rec["alert_time"] += rng.uniform(0, 86400 * 30)
            for p in rec["predictions"]:
                p["uncertainty"] = rng.uniform(0.0, 0.5)
                p["label"] = rng.choice(["star", "galaxy"])
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
    return path


def start_viewer(results: Path) -> tuple[subprocess.Popen, str, float]:
    t0 = time.perf_counter()
    proc, url = start_view([str(results), "--inputs", str(ALERTS), str(CANDELS)])
    return proc, url, time.perf_counter() - t0


def rows_replaced(page, action) -> float:
    """ms from ``action`` to the rows table being replaced by the answer."""
    page.evaluate("window.__rowsMark = document.querySelector('tr.result-row')")
    t0 = time.perf_counter()
    action()
    wait_until(page, "document.querySelector('tr.result-row') !== window.__rowsMark && "
                           "document.getElementById('status').textContent === ''")
    return (time.perf_counter() - t0) * 1000


def measure(url: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="stampflow-bench-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                                    headless=True, viewport={"width": 1400, "height": 1000})
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.goto(url)
        wait_until(page, "window.__firstRowsPaint !== undefined", timeout_ms=120_000)
        out = {"first_rows_paint_ms": page.evaluate("window.__firstRowsPaint"),
               "fcp_ms": page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")}
        wait_until(page, """(() => { const imgs = [...document.querySelectorAll('img.thumb')]
            .filter(i => i.getBoundingClientRect().top < innerHeight);
            return imgs.length && imgs.every(i => i.complete && i.naturalWidth > 0); })()""", timeout_ms=120_000)
        out["thumbs_ms"] = page.evaluate("performance.now()")
        wait_until(page, "document.querySelectorAll('#f-model option').length > 1")
        out["filter_ms"] = rows_replaced(page, lambda: page.select_option("#f-model", "stargal"))
        out["sort_uncertainty_ms"] = rows_replaced(page, lambda: page.select_option("#f-sort", "uncertainty"))
        out["next_page_ms"] = rows_replaced(page, lambda: page.click("#next"))
        out["total_rows_reported"] = int(page.inner_text("#page-info").split("·")[1].split()[0])
        ctx.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="stampflow-view-bench-") as tmp:
        results = make_results(Path(tmp), args.results)
        proc, url, load_s = start_viewer(results)
        try:
            runs = [measure(url) for _ in range(args.repeats)]
        finally:
            proc.terminate()
            proc.wait(10)
    keys = [k for k in runs[0] if k != "total_rows_reported"]
    summary = {k: round(statistics.median(r[k] for r in runs), 1) for k in keys}
    report = {"what": "stampflow view time to first paint", "results": args.results, "repeats": args.repeats,
              "load_s": round(load_s, 2), "median": summary, "runs": runs,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    out = REPO / "bench" / "results" / f"view-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
