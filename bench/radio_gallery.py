"""The Griese ``valid`` sources that no radio variant gets right, as a PNG gallery with the literature label.

Scores every saved ablation network (``RUNS/*.keras`` from bench/radio_ablation.py, plain and with the dihedral
average) and the bundled artifacts named with --models on the ``valid`` part of a pool cache, after all choices
were made (this is the data's ceiling, not a tuning step), and draws the images none of them classifies right:
the centre 150x150 stamp (square-root stretch) titled with the literature label and every variant's most common
wrong answer. Writes OUT/radio_valid_unsolved.png and OUT/radio_valid_unsolved.json.

    python bench/radio_gallery.py --cache /tmp/radio3/pool --runs /tmp/radio2/runs,/tmp/radio3/runs --out docs/img \
        --models radio-first@1.0.0,/tmp/radio3/out/radio-first/2.0.0
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--runs", required=True, help="comma list of directories of bench/radio_ablation.py runs")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default="", help="registry specs scored through the serving path too")
    a = ap.parse_args(argv)

    import keras
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.cnn import KerasCNN
    from models.preprocess import apply_recipe
    from models.registry import Registry
    from training.radio.ensemble import dihedral_average
    from training.radio.pool import load_pool_cache
    from training.radio.sets import GRIESE_CLASSES
    from training.radio.train_pool import pool_recipe

    pool = load_pool_cache(a.cache)
    valid = pool.valid_mask()
    x, raw, y = pool.x[valid], pool.raw[valid], pool.y[valid]
    ids = np.array(pool.ids)[valid]
    preds: dict[str, np.ndarray] = {}
    for path in sorted(p for d in a.runs.split(",") for p in Path(d).glob("*.keras")):
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
        record = path.with_suffix(".json")
        # a run trained on stretched stamps is scored on the same stretch (its recipe's "stretch" step)
        stretch = json.loads(record.read_text()).get("stretch") if record.exists() else None
        xs = apply_recipe(raw, pool_recipe(stretch)) if stretch else x
        preds[path.stem] = dihedral_average(model, xs, 1).argmax(axis=1)
        preds[path.stem + "+tta8"] = dihedral_average(model, xs, 8).argmax(axis=1)
    for spec in filter(None, a.models.split(",")):
        clf = KerasCNN.load(Registry().resolve(spec))
        preds[spec] = np.array([GRIESE_CLASSES.index(lbl) for lbl in clf.predict_batch(raw).labels])
    right = np.stack([p == y for p in preds.values()])
    unsolved = np.flatnonzero(~right.any(axis=0))
    rows = []
    for i in unsolved:
        wrong = collections.Counter(GRIESE_CLASSES[p[i]] for p in preds.values())
        rows.append({"id": str(ids[i]), "literature_label": GRIESE_CLASSES[y[i]],
                     "predicted_by_variants": dict(wrong.most_common())})
    a.out.mkdir(parents=True, exist_ok=True)
    summary = {"variants": list(preds), "n_valid": int(len(y)), "unsolved": rows,
               "accuracy": {k: float((p == y).mean()) for k, p in preds.items()}}
    (a.out / "radio_valid_unsolved.json").write_text(json.dumps(summary, indent=1) + "\n")
    n = len(unsolved)
    if n:
        cols = min(6, n)
        nrows = int(np.ceil(n / cols))
        fig, axes = plt.subplots(nrows, cols, figsize=(2.2 * cols, 2.5 * nrows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, i, row in zip(axes.ravel(), unsolved, rows):
            ax.imshow(np.sqrt(np.clip(x[i, ..., 0], 0, None)), cmap="inferno", origin="lower")
            top = next(iter(row["predicted_by_variants"]))
            ax.set_title(f"{row['id']}\nlit.: {row['literature_label']}; nets: {top}", fontsize=7)
        fig.suptitle(f"Griese valid: {n} of {len(y)} sources no variant ({len(preds)}) gets right", fontsize=9)
        fig.tight_layout()
        fig.savefig(a.out / "radio_valid_unsolved.png", dpi=110)
    print(json.dumps({"unsolved": n, "variants": len(preds)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
