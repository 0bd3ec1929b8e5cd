"""Ablation runs for radio-first 2.0.0 on a validation part carved out of Griese ``train`` (never ``valid``).

Reads a pool cache written by ``python -m training.radio pool ... --cache DIR`` (prepared images, labels,
sources, the carved split and the dedup decisions) and trains one variant per call; each run writes
``OUT/<variant>_seed<seed>.json`` (carved-validation accuracy with and without the dihedral test-time average,
its probabilities) and the weights, so ensembles are scored from saved runs without retraining.

    python bench/radio_ablation.py --cache /tmp/radio2/pool --out /tmp/radio2/runs --variant dihedral --epochs 30
    python bench/radio_ablation.py --cache /tmp/radio2/pool --out /tmp/radio2/runs --ensemble a_seed0,a_seed1

All variants of one table use the same epochs, seed, batch and schedule; the Griese ``valid`` part is not read.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# variant -> (extra data?, augmentation, label set, network keyword arguments)
VARIANTS = {
    "baseline": dict(extra=False, augment="rotate", labels="literature"),
    "dihedral": dict(extra=False, augment="dihedral", labels="literature"),
    "extra": dict(extra=True, augment="dihedral", labels="literature"),
    "extra_cdl1": dict(extra=True, augment="dihedral", labels="CDL1"),
    "cdl1": dict(extra=False, augment="dihedral", labels="CDL1"),
    "extra_wide": dict(extra=True, augment="dihedral", labels="literature", filters=(24, 48, 96, 96)),
    "extra_rotate": dict(extra=True, augment="rotate", labels="literature"),
    "extra_unweighted": dict(extra=True, augment="dihedral", labels="literature", weighting="none"),
    # third session (pool with the pixel guard, best epoch by carved balanced accuracy, --select)
    "baseline_sel": dict(extra=False, augment="rotate", labels="literature"),
    "deep": dict(extra=False, augment="rotate", labels="literature", filters=(16, 24, 48, 96), extra_conv=96),
    "deep_sqrt": dict(extra=False, augment="rotate", labels="literature", filters=(16, 24, 48, 96), extra_conv=96,
                      stretch="sqrt"),
    "sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt"),
    # fourth: the 4x4 stride-4 stem (1.7x faster network), with the stretch
    "patch_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", stem="patch4"),
    "deep_sqrt_extra": dict(extra=True, augment="rotate", labels="literature", filters=(16, 24, 48, 96),
                            extra_conv=96, stretch="sqrt"),
    # fifth: capacity after the fast stems (network alone >= ~1,550 images/s, so the serving path stays >= 1,000)
    "patch_deep_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", stem="patch4",
                            filters=(16, 24, 48, 96), extra_conv=96),
    "s2d_deep_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", stem="s2d4",
                          filters=(16, 24, 48, 96), extra_conv=96),
    "s2d_lean_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", stem="s2d4",
                          filters=(16, 16, 32, 96), extra_conv=96),
    "s2d_narrow_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", stem="s2d4",
                            filters=(16, 24, 48, 64)),
    # sixth: a stronger brightness stretch, the fourth root (the literature's "increase of brightness")
    "qroot": dict(extra=False, augment="rotate", labels="literature", stretch="qroot"),
    "patch_qroot": dict(extra=False, augment="rotate", labels="literature", stretch="qroot", stem="patch4"),
    "asinh": dict(extra=False, augment="rotate", labels="literature", stretch="asinh"),
    # seventh: the rotation-invariant ring head (3 annuli of the unpooled 9x9 map) on 1.0.0's widths
    "rings_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", head="rings"),
    # seventh: pretraining on the other FIRST images (MiraBest + FR-DEEP FIRST, FRI/FRII, deduplicated against valid
    # by the pool), then the Griese fit part from those weights; `sqrt` otherwise
    "pretrain_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", pretrain_epochs=20),
}


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float((p.argmax(axis=1) == y).mean())


def balanced(y: np.ndarray, p: np.ndarray) -> float:
    """Mean per-class recall: the carved part is ~half FRII, Griese valid is balanced (50 per class)."""
    from training.evaluation import balanced_accuracy

    return balanced_accuracy(y, p.argmax(axis=1))


def run_variant(cache: Path, out: Path, variant: str, epochs: int, seed: int, batch: int, lr: float,
                select: bool = False) -> dict:
    from training.radio.ensemble import dihedral_average, train_network
    from models.preprocess import apply_recipe
    from training.radio.pool import load_pool_cache
    from training.radio.train_pool import pool_recipe

    spec = VARIANTS[variant]
    pool = load_pool_cache(cache)
    fit, val = pool.fit_mask(extra=spec["extra"]), pool.carved_mask()
    x = apply_recipe(pool.raw, pool_recipe(spec.get("stretch")))  # the served recipe, stretch included
    t0 = time.perf_counter()
    # the network and its training, shared by the pretraining stage and the Griese stage
    common = dict(batch=batch, lr=lr, seed=seed, augment=spec["augment"], filters=spec.get("filters"),
                  extra_conv=spec.get("extra_conv", 0), stem=spec.get("stem", "conv5s2"),
                  head=spec.get("head", "flatten"))
    init = None
    if spec.get("pretrain_epochs"):
        others = pool.fit_mask(extra=True) & (pool.source != "griese")
        init, _ = train_network(x[others], pool.y[others], None, None, epochs=int(spec["pretrain_epochs"]),
                                desc="radio pretraining", **common)
    model, info = train_network(x[fit], pool.y[fit], x[val], pool.y[val],
                                sub=pool.sublabels[fit] if spec["labels"] == "CDL1" else None, epochs=epochs,
                                weighting=spec.get("weighting", "balanced"), select=select, init=init, **common)
    seconds = time.perf_counter() - t0
    p_plain = dihedral_average(model, x[val], transforms=1)
    p_tta = dihedral_average(model, x[val], transforms=8)
    yv = pool.y[val]
    res = {"variant": variant, "seed": seed, "epochs": epochs, "batch": batch, "lr": lr, **spec,
           "n_fit": int(fit.sum()), "n_val": int(val.sum()), "seconds": seconds,
           "train_images_per_s": info["images_per_s"],
           "val_accuracy": accuracy(yv, p_plain), "val_accuracy_tta8": accuracy(yv, p_tta),
           "val_balanced_accuracy": balanced(yv, p_plain), "val_balanced_accuracy_tta8": balanced(yv, p_tta),
           "params": int(model.count_params()), "select": select, "best_epoch": info.get("best_epoch"),
           "history": info["history"]}
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{variant}_seed{seed}" + (f"_e{epochs}_sel" if select else "")   # the first session's names unchanged
    np.savez(out / f"{stem}.npz", p_plain=p_plain, p_tta=p_tta, y=yv)
    model.save(out / f"{stem}.keras")
    res["filters"] = list(res["filters"]) if res.get("filters") else None
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return res


def score_ensemble(out: Path, stems: list[str]) -> dict:
    runs = [np.load(out / f"{s}.npz") for s in stems]
    y = runs[0]["y"]
    res = {"ensemble": stems,
           "val_accuracy": accuracy(y, np.mean([r["p_plain"] for r in runs], axis=0)),
           "val_accuracy_tta8": accuracy(y, np.mean([r["p_tta"] for r in runs], axis=0)),
           "val_balanced_accuracy": balanced(y, np.mean([r["p_plain"] for r in runs], axis=0)),
           "val_balanced_accuracy_tta8": balanced(y, np.mean([r["p_tta"] for r in runs], axis=0)),
           "members": [accuracy(y, r["p_plain"]) for r in runs]}
    print(json.dumps(res))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variant", choices=sorted(VARIANTS))
    ap.add_argument("--ensemble", help="comma list of saved run stems to average")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--select", action="store_true", help="restore the best epoch by carved balanced accuracy")
    a = ap.parse_args(argv)
    if a.ensemble:
        score_ensemble(a.out, a.ensemble.split(","))
    if a.variant:
        run_variant(a.cache, a.out, a.variant, a.epochs, a.seed, a.batch, a.lr, a.select)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
