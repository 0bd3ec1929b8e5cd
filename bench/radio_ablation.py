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
    # eighth: distillation. `sqrt` trained on soft targets: alpha x the label + (1 - alpha) x the dihedral average
    # of saved `sqrt` runs (--teachers) on the unaugmented fit images (training.radio.ensemble.distill_targets)
    "distill_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", distill=True),
    # eighth: the field of view. `sqrt` on Griese's whole 300x300 field brought to the 150x150 grid at 3.6"/px
    # (the served `resample` geometry) instead of the central 150x150 at 1.8"/px; `wide`: the central 200x200 at
    # 2.4"/px (same network, same cost)
    "full_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", field=3.6),
    "wide_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", field=2.4),
    # eighth: `sqrt` plus a full-resolution branch on the central 76x76 (training.radio.network.zoom_branch)
    "zoom_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", zoom=True),
    # eighth: label cleaning ("confident learning", Northcutt et al. 2021). 5-fold out-of-fold predictions of `sqrt`
    # over the fit part (`out_of_fold`, cached); fit images whose label the out-of-fold dihedral average gives
    # less than 0.2 while it prefers another class are left out (training.radio.ensemble.suspect_labels), then
    # `sqrt` trains on the rest
    "clean_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", clean=True),
    # eighth: label smoothing 0.1 (a target of 0.925 for the label, 0.025 for each other class), the usual guard
    # against over-confident fits to noisy labels; through the soft-target path with a uniform "teacher"
    "smooth_sqrt": dict(extra=False, augment="rotate", labels="literature", stretch="sqrt", smooth=0.1),
}
CLEAN_FOLDS = 5


def out_of_fold(out: Path, x: np.ndarray, y: np.ndarray, epochs: int, batch: int, lr: float) -> np.ndarray:
    """Each fit image's dihedral-averaged probabilities from the `sqrt` network trained on the other folds
    (CLEAN_FOLDS stratified folds, seed 0, last epoch: the carved part is not looked at), cached in
    ``out/oof_sqrt_e<epochs>.npz``."""
    from training.evaluation import stratified_folds
    from training.radio.ensemble import dihedral_average, train_network

    cache = out / f"oof_sqrt_e{epochs}.npz"
    if cache.exists():
        got = np.load(cache, allow_pickle=False)
        if len(got["y"]) == len(y) and (got["y"] == y).all():
            return got["p"]
    folds = stratified_folds(y, CLEAN_FOLDS, 0)
    p = np.zeros((len(y), 4))
    for k in range(CLEAN_FOLDS):
        held = folds == k
        model, _ = train_network(x[~held], y[~held], None, None, epochs=epochs, batch=batch, lr=lr, seed=100 + k,
                                 augment="rotate", desc=f"radio fold {k + 1}/{CLEAN_FOLDS}")
        p[held] = dihedral_average(model, x[held])
    out.mkdir(parents=True, exist_ok=True)
    np.savez(cache, p=p, y=y, folds=folds)
    return p



def field_images(pool, pixel_scale: float) -> np.ndarray:
    """The pool's geometry-prepared stamps for another field of view: Griese rows re-read from the published
    HDF5 and brought to the 150x150 grid at ``pixel_scale`` arcsec/px by the served ``resample`` geometry
    (zoom by 1.8 / pixel_scale, then the central crop); the other sets' rows stay as they are (the field
    variants train on Griese only)."""
    from models.base import InputSpec
    from models.preprocess import prepare_images
    from stream.config import data_root
    from training.radio.data import load_radio
    from training.radio.network import INPUT_SPEC

    griese = load_radio(data_root() / "radio" / "first_galaxy_dataset" / "galaxy_data_trainvalid_h5.zip",
                        dataset="griese", split="all")
    index = {i: k for k, i in enumerate(griese.ids)}
    rows = np.where(pool.source == "griese")[0]
    spec = InputSpec.from_dict({**INPUT_SPEC, "pixel_scale": pixel_scale, "geometry": "resample"})
    raw = pool.raw.copy()
    raw[rows] = prepare_images(griese.images[[index[pool.ids[r]] for r in rows]], spec, griese.pixel_scale)
    return raw


def accuracy(y: np.ndarray, p: np.ndarray) -> float:
    return float((p.argmax(axis=1) == y).mean())


def balanced(y: np.ndarray, p: np.ndarray) -> float:
    """Mean per-class recall: the carved part is ~half FRII, Griese valid is balanced (50 per class)."""
    from training.evaluation import balanced_accuracy

    return balanced_accuracy(y, p.argmax(axis=1))


def teacher_probabilities(out: Path, stems: list[str], x: np.ndarray) -> np.ndarray:
    """The mean over saved runs of their dihedral average (8 transforms) on ``x``."""
    import keras

    from training.radio.ensemble import dihedral_average

    return np.mean([dihedral_average(keras.saving.load_model(out / f"{s}.keras", safe_mode=True), x)
                    for s in stems], axis=0)


def run_variant(cache: Path, out: Path, variant: str, epochs: int, seed: int, batch: int, lr: float,
                select: bool = False, teachers: list[str] | None = None, alpha: float = 0.5) -> dict:
    from training.radio.ensemble import dihedral_average, distill_targets, suspect_labels, train_network
    from models.preprocess import apply_recipe
    from training.radio.pool import load_pool_cache
    from training.radio.train_pool import pool_recipe

    spec = VARIANTS[variant]
    pool = load_pool_cache(cache)
    fit, val = pool.fit_mask(extra=spec["extra"]), pool.carved_mask()
    raw = field_images(pool, spec["field"]) if spec.get("field") else pool.raw
    x = apply_recipe(raw, pool_recipe(spec.get("stretch")))  # the served recipe, stretch included
    t0 = time.perf_counter()
    # the network and its training, shared by the pretraining stage and the Griese stage
    common = dict(batch=batch, lr=lr, seed=seed, augment=spec["augment"], filters=spec.get("filters"),
                  extra_conv=spec.get("extra_conv", 0), stem=spec.get("stem", "conv5s2"),
                  head=spec.get("head", "flatten"), zoom=spec.get("zoom", False))
    init = None
    if spec.get("pretrain_epochs"):
        others = pool.fit_mask(extra=True) & (pool.source != "griese")
        init, _ = train_network(x[others], pool.y[others], None, None, epochs=int(spec["pretrain_epochs"]),
                                desc="radio pretraining", **common)
    if spec.get("clean"):
        rows = np.where(fit)[0]
        drop = suspect_labels(out_of_fold(out, x[rows], pool.y[rows], epochs, batch, lr), pool.y[rows])
        fit = fit.copy()
        fit[rows[drop]] = False
        print(json.dumps({"clean": {"dropped": int(drop.sum()), "by_class": np.bincount(pool.y[rows[drop]],
                                                                                        minlength=4).tolist(),
                                    "ids": [pool.ids[r] for r in rows[drop]]}}))
    soft = None
    if spec.get("smooth"):
        soft = distill_targets(pool.y[fit], np.full((int(fit.sum()), 4), 0.25), 1.0 - spec["smooth"])
    if spec.get("distill"):
        if not teachers:
            raise SystemExit(f"{variant}: name the teacher runs with --teachers")
        soft = distill_targets(pool.y[fit], teacher_probabilities(out, teachers, x[fit]), alpha)
    model, info = train_network(x[fit], pool.y[fit], x[val], pool.y[val], soft=soft,
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
           "history": info["history"], "teachers": teachers if spec.get("distill") else None,
           "alpha": alpha if spec.get("distill") else None}
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{variant}_seed{seed}" + (f"_e{epochs}_sel" if select else "")   # the first session's names unchanged
    stem += f"_a{alpha:g}" if spec.get("distill") else ""
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
    ap.add_argument("--teachers", help="distill_sqrt: comma list of saved run stems (in --out) to distill")
    ap.add_argument("--alpha", type=float, default=0.5, help="distill_sqrt: weight of the label in the target")
    a = ap.parse_args(argv)
    if a.ensemble:
        score_ensemble(a.out, a.ensemble.split(","))
    if a.variant:
        run_variant(a.cache, a.out, a.variant, a.epochs, a.seed, a.batch, a.lr, a.select,
                    a.teachers.split(",") if a.teachers else None, a.alpha)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
