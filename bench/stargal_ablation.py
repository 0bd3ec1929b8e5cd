"""Star/galaxy ablation: each step from the 1.0.0 recipe to 2.0.0 and 2.1.0, on real alerts and curated cutouts.

Every variant is trained with ``stampflow train stargal`` (same code path as the bundled model) into a temporary
registry root, then scored two ways:
- curated cutouts: the seeded 80/20 hold-out part (never trained on);
- real alerts (``$STAMPFLOW_DATA/ztf_alerts`` + ``ztf_alerts_eval``) against the confident PS1 reference:
  for variants trained without alerts, ``stampflow evaluate --alerts`` (all alerts are unseen); for variants
  trained with alerts, the object-grouped 5-fold CV the training run reports (no object scored by a model
  that saw it).

Writes bench/results/stargal_ablation.json and prints a Markdown table. Reports only; asserts nothing.
Run: .venv/bin/python bench/stargal_ablation.py [FIRST_ROW [CV_SEEDS]]   (about 9 minutes on 2 cores for all rows)
With FIRST_ROW (0-based) only the rows from there on are re-run; the others are kept from the JSON file. With
CV_SEEDS (e.g. ``5 1,2``) rows FIRST_ROW.. are run again at those CV seeds (``cv_seed_rows``).
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
# 2.1.0's steps (docs/stargal.md): the scratch study's GP setting (nu = 2.5 fixed in the CV folds as in the final
# fit, L-BFGS-B), then each part of the recipe on top.
V21 = ["stamp=template", "size=19", "nn_count=50", "smoothness=2.5", "final_optimizer=lbfgsb"]
VARIANTS += [
    ("2.0.0 recipe, nu = 2.5 fixed in CV and final fit", V21, True),
    ("+ soft symmetrisation (r > 4 px, 5 sigma)", V21 + ["symmetrise=true"], True),
    ("+ hand features, adaptive moments, weight 0.5", V21 + ["symmetrise=true", "hand_features_weight=0.5",
                                                             "hand_size=adaptive"], True),
    ("+ hand features, fixed-weight moments, weight 0.5", V21 + ["symmetrise=true", "hand_features_weight=0.5",
                                                                 "hand_size=fixed"], True),
    ("+ NaN rule + temperature scaling (2.1.0)", V21 + ["symmetrise=true", "hand_features_weight=0.5",
                                                        "hand_size=fixed", "nan_fill=core_max_ring_median",
                                                        "calibrate=temperature"], True),
]


def stampflow(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "stream.cli", *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"stampflow {' '.join(args[:3])} failed: {proc.stderr.strip().splitlines()[-1]}")
    return json.loads(proc.stdout)


def run_variant(i: int, root: str, cutouts: Path, alerts: list[Path], cv_seed: int | None = None) -> dict:
    """Train variant ``i`` into ``root`` and score it (see the module docstring)."""
    name, opts, with_alerts = VARIANTS[i]
    t0 = time.perf_counter()
    sets = COMMON + opts + ([f"alerts={','.join(map(str, alerts))}"] if with_alerts else [])
    sets += [f"cv_seed={cv_seed}"] if cv_seed is not None else []
    args = ["train", "stargal", "--data", str(cutouts), "--out", root, "--version",
            f"0.{cv_seed or 0}.{i}", "--set", "overwrite=true"]
    for s in sets:
        args += ["--set", s]
    res = stampflow(*args)
    hold = res["metrics"]["holdout"]
    if with_alerts:
        a = res["metrics"]["alerts_cv"]
        how = "object-grouped 5-fold CV"
    else:
        a = stampflow("evaluate", str(Path(res["artifact"])), "--alerts", *map(str, alerts), "--set", "out_dir=")
        how = "evaluate --alerts (unseen)"
    row = {"variant": name, "options": sets, "alerts_scored_by": how,
           "alerts": {k: a.get(k) for k in ("n", "recall_star", "recall_galaxy", "balanced_accuracy", "ece",
                                            "ece_uncalibrated", "abstention_rate")},
           "holdout": {"n": hold["n"], "accuracy": hold["accuracy"], "ece": hold.get("ece")},
           "calibration": res.get("calibration"), "seconds": round(time.perf_counter() - t0, 1)}
    if cv_seed is not None:
        row["cv_seed"] = cv_seed
    print(f"{name}{'' if cv_seed is None else f' (cv_seed {cv_seed})'}: done in {row['seconds']} s", file=sys.stderr)
    return row


def main() -> int:
    """``[FIRST_ROW [CV_SEEDS]]``: re-run rows from FIRST_ROW on (others kept from the JSON file); with CV_SEEDS
    (comma-separated) those rows are run again at each CV seed (`--set cv_seed`: other CV folds and GP batches,
    same hold-out part) into ``cv_seed_rows``, which shows how much of a difference is fold luck."""
    data = data_root()
    cutouts = data / "ztf_stargal" / "cutouts"
    alerts = [data / "ztf_alerts", data / "ztf_alerts_eval"]
    first = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    seeds = [int(v) for v in sys.argv[2].split(",")] if len(sys.argv) > 2 else []
    out = REPO / "bench" / "results" / "stargal_ablation.json"
    previous = json.loads(out.read_text()) if out.exists() else {"rows": []}
    kept = {r["variant"]: r for r in previous["rows"]} if first else {}
    rows = [kept[name] for name, _, _ in VARIANTS[:first] if name in kept]
    seed_rows = []
    with tempfile.TemporaryDirectory() as root:
        if seeds:  # the seed-0 rows stay as they are
            rows = [kept.get(name) for name, _, _ in VARIANTS if name in kept]
            seed_rows = [run_variant(i, root, cutouts, alerts, s) for s in seeds for i in range(first, len(VARIANTS))]
        else:
            rows += [run_variant(i, root, cutouts, alerts) for i in range(first, len(VARIANTS))]
    result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    result["cv_seed_rows"] = seed_rows or previous.get("cv_seed_rows", [])
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| variant | cv seed | alerts scored by | alerts n | star recall | galaxy recall | balanced acc. | ECE |"
          " flagged | cutouts hold-out acc. | hold-out ECE |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows + result["cv_seed_rows"]:
        a, h = r["alerts"], r["holdout"]
        print(f"| {r['variant']} | {r.get('cv_seed', 0)} | {r['alerts_scored_by']} | {a['n']} | "
              f"{a['recall_star']:.3f} | {a['recall_galaxy']:.3f} | {a['balanced_accuracy']:.3f} | {a['ece']:.3f} | "
              f"{a['abstention_rate']:.3f} | {h['accuracy']:.3f} | {h['ece']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
