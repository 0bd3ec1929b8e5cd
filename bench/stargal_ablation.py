"""Star/galaxy ablation: each step from the 1.0.0 recipe to 2.0.0, measured on real alerts and curated cutouts.

Every variant is trained with ``stampflow train stargal`` (same code path as the bundled model) into a temporary
registry root, then scored two ways:
- curated cutouts: the seeded 80/20 hold-out part (never trained on);
- real alerts (``$STAMPFLOW_DATA/ztf_alerts`` + ``ztf_alerts_eval``) against the confident PS1 reference:
  for variants trained without alerts, ``stampflow evaluate --alerts`` (all alerts are unseen); for variants
  trained with alerts, the object-grouped 5-fold CV the training run reports (no object scored by a model
  that saw it).

Writes bench/results/stargal_ablation.json and prints a Markdown table. Reports only; asserts nothing.
Run: .venv/bin/python bench/stargal_ablation.py   (about 5 minutes on 2 cores)
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream.config import data_root  # noqa: E402

COMMON = ["normalisations=zscore", "pca_dims=16", "plots=false", "quiet=true"]
VARIANTS = [
    ("1.0.0 recipe: science 20x20, curated only, k=30", ["stamp=science", "size=20", "nn_count=30"], False),
    ("centred 19x19 crop", ["stamp=science", "size=19", "nn_count=30"], False),
    ("template stamp instead of science", ["stamp=template", "size=19", "nn_count=30"], False),
    ("science + PS1-labelled alerts", ["stamp=science", "size=19", "nn_count=30"], True),
    ("template + PS1-labelled alerts", ["stamp=template", "size=19", "nn_count=30"], True),
    ("template + alerts, k=50 (2.0.0)", ["stamp=template", "size=19", "nn_count=50"], True),
]


def stampflow(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"stampflow {' '.join(args[:3])} failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout)


def main() -> int:
    data = data_root()
    cutouts = data / "ztf_stargal" / "cutouts"
    alerts = [data / "ztf_alerts", data / "ztf_alerts_eval"]
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for i, (name, opts, with_alerts) in enumerate(VARIANTS):
            t0 = time.perf_counter()
            sets = COMMON + opts + ([f"alerts={','.join(map(str, alerts))}"] if with_alerts else [])
            args = ["train", "stargal", "--data", str(cutouts), "--out", root, "--version", f"0.0.{i}"]
            for s in sets:
                args += ["--set", s]
            res = stampflow(*args)
            hold = res["metrics"]["holdout"]
            if with_alerts:
                a = res["metrics"]["alerts_cv"]
                how = "object-grouped 5-fold CV"
            else:
                a = stampflow("evaluate", str(Path(res["artifact"])), "--alerts", *map(str, alerts),
                              "--set", "out_dir=")
                how = "evaluate --alerts (unseen)"
            rows.append({"variant": name, "options": sets, "alerts_scored_by": how,
                         "alerts": {k: a.get(k) for k in ("n", "recall_star", "recall_galaxy", "balanced_accuracy",
                                                          "ece", "abstention_rate")},
                         "holdout": {"n": hold["n"], "accuracy": hold["accuracy"], "ece": hold.get("ece")},
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{name}: done in {rows[-1]['seconds']} s", file=sys.stderr)
    out = REPO / "bench" / "results" / "stargal_ablation.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows},
                              indent=2) + "\n")
    print("| variant | alerts scored by | alerts n | star recall | galaxy recall | balanced acc. | ECE | flagged |"
          " cutouts hold-out acc. | hold-out ECE |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, h = r["alerts"], r["holdout"]
        print(f"| {r['variant']} | {r['alerts_scored_by']} | {a['n']} | {a['recall_star']:.3f} | "
              f"{a['recall_galaxy']:.3f} | {a['balanced_accuracy']:.3f} | {a['ece']:.3f} | "
              f"{a['abstention_rate']:.3f} | {h['accuracy']:.3f} | {h['ece']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
