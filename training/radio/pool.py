"""Every FIRST image we have, as one training pool for ``radio-first`` 2.0.0: Griese ``train`` plus MiraBest
and FR-DEEP FIRST, labels mapped to the Griese classes, duplicates removed, nothing near a ``valid`` image.

Label mapping (written down in docs/radio.md):
- Griese: ``Label_literature`` as is (FRI, FRII, Compact, Bent); ``Label_CDL1`` splits Bent into two groups
  (CDL1 codes 3 and 4; the other classes are identical) and is kept as ``sublabels``.
- MiraBest batches: code 100 (confident standard FRI) -> FRI, 200 (confident standard FRII) -> FRII; the
  batches hold no other code (checked: 351 x 100, 441 x 200; no hybrids, no WAT/head-tail third digits).
  A MiraBest source at the position of a ``FRICat_Capetti_2017_relabeled.csv`` row takes its corrected
  label (FRI -> Bent: Griese's curators moved these bent FRICAT sources to Bent); one at the position of a
  ``galaxy_data_different_labels.csv`` or ``galaxy_data_removed.csv`` row (the literature disagrees, or
  Griese's curators removed it) is dropped.
- FR-DEEP FIRST: FRI -> FRI, FRII -> FRII (no coordinates in the files).

Deduplication (`training.radio.dedup`), in this order:
1. ``valid``: any image whose NCC with a Griese ``valid`` image reaches ``threshold`` is removed (from every
   set, Griese ``train`` included), except, with ``guard="pixels"``, a Griese ``train`` image whose pixels differ
   by >= PIXEL_DISTINCT grey levels from every such ``valid`` image: within Griese (one pipeline, one 8-bit
   scaling) a re-used cutout is the same pixels, while two different compact sources in empty fields reach
   NCC > 0.99 with pixels >= 10 levels apart (docs/radio.md). The full 300x300 field does not help: the noise is
   clipped to 0, so most compact fields are empty and their full-field NCC equals the central one;
2. the carved validation part (a seeded stratified share of Griese ``train``): MiraBest/FR-DEEP images that
   reach ``threshold`` with one of its images are removed from the pool, so the ablation numbers are honest;
3. across sets: exact hash matches, then MiraBest/FR-DEEP images reaching ``threshold`` with a Griese
   ``train`` image (the Griese copy and label are kept), then FR-DEEP images reaching it with a MiraBest image
   (MiraBest has coordinates).
Why ``threshold`` = 0.99 (NCC of square-root-stretched 150x150 fields, best over shifts of up to 3 px): between
MiraBest and FR-DEEP, two sets drawn from the same catalogues, the re-used cutouts sit at >= 0.995 and
distinct sources mostly below 0.97 (histogram in docs/radio.md); 0.99 is the conservative end of that gap.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.base import InputSpec
from models.preprocess import apply_recipe, prepare_images
from schemas.errors import StampflowError
from training.evaluation import stratified_split_fractions
from training.radio.dedup import coordinate_matches, image_hashes, max_ncc, ncc_pairs, pixel_difference
from training.radio.sets import GRIESE_CLASSES, RadioSet

NEAR_DUP_NCC = 0.99
# guard "pixels": a Griese train image that reaches NEAR_DUP_NCC with a Griese valid image is still a duplicate
# unless its pixels differ from that image by >= PIXEL_DISTINCT grey levels (of 255) at every shift (see
# `dedup.pixel_difference`; measured in docs/radio.md: a re-used cutout would be ~0-2 levels; the 136 pairs of
# *different* valid images at NCC >= 0.99 differ by 12-63, so 10, below their minimum, is on the conservative side).
PIXEL_DISTINCT = 10.0
COORD_RADIUS_ARCSEC = 30.0   # the CSVs round positions to 0.001 deg (3.6"); a source's catalogue position can
#                              differ by a beam or two between catalogues
EXTRA_SETS = ("mirabest", "frdeep-first")
CDL1_BENT_GROUPS = (3, 4)


@dataclass
class FirstPool:
    x: np.ndarray              # (N, size, size, 1) prepared (geometry + recipe)
    raw: np.ndarray            # (N, size, size, 1) geometry only: what the serving path receives
    y: np.ndarray              # (N,) Griese class index
    sublabels: np.ndarray      # (N,) CDL1 code (0..4) for Griese, y for the others
    source: np.ndarray         # (N,) griese | mirabest | frdeep-first
    role: np.ndarray           # (N,) fit | carved | valid | dropped:<why>
    ids: list[str]
    counts: dict[str, Any] = field(default_factory=dict)

    def fit_mask(self, extra: bool = True) -> np.ndarray:
        return (self.role == "fit") & (extra | (self.source == "griese"))

    def carved_mask(self) -> np.ndarray:
        return self.role == "carved"

    def valid_mask(self) -> np.ndarray:
        return self.role == "valid"


def griese_cdl1(path: Path, n_expected: int) -> np.ndarray:
    """``Label_CDL1`` of every group, in `load_griese`'s order (numeric group order)."""
    from training.radio.griese import _group_order, _open_griese_bytes

    import h5py

    with _open_griese_bytes(path) as h5:
        names = sorted((k for k in h5.keys() if isinstance(h5[k], h5py.Group)), key=_group_order)
        codes = np.array([int(float(np.asarray(h5[n]["Label_CDL1"][()]))) for n in names])
    if len(codes) != n_expected:
        raise StampflowError(f"{path}: {len(codes)} CDL1 labels for {n_expected} images")
    return codes


def read_positions(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    ra_key = next(k for k in rows[0] if k.lower().startswith("ra"))
    dec_key = next(k for k in rows[0] if k.lower().startswith("dec"))
    return (np.array([float(r[ra_key]) for r in rows]), np.array([float(r[dec_key]) for r in rows]), rows)


def build_pool(griese: RadioSet, extras: dict[str, RadioSet], spec: InputSpec, recipe: dict[str, Any], *,
               griese_path: Path, csv_dir: Path | None, val_fraction: float = 0.15, seed: int = 0,
               threshold: float = NEAR_DUP_NCC, guard: str = "pixels",
               say: Callable[[str], None] = print) -> FirstPool:
    """Assemble, map labels, deduplicate (see the module docstring). ``griese`` holds train and valid.
    ``guard``: "ncc" drops every image within ``threshold`` of a valid image; "pixels" keeps a Griese train
    image whose NCC partners in valid all differ from it by >= PIXEL_DISTINCT grey levels (extra sets: NCC)."""
    sets = [griese, *[extras[k] for k in EXTRA_SETS if k in extras]]
    raw = np.concatenate([prepare_images(s.images, spec, s.pixel_scale) for s in sets])
    x = apply_recipe(raw, recipe)
    y = np.concatenate([s.labels if s is griese else
                        np.array([GRIESE_CLASSES.index(s.classes[i]) for i in s.labels], dtype=int) for s in sets])
    source = np.concatenate([[s.dataset] * len(s) for s in sets]).astype(object)
    ids = [i for s in sets for i in s.ids]
    sub = y.copy()
    ng = len(griese)
    sub[:ng] = griese_cdl1(griese_path, ng)
    role = np.array(["fit"] * len(y), dtype=object)
    role[:ng][griese.splits == "valid"] = "valid"
    counts: dict[str, Any] = {"threshold_ncc": threshold, "input": {s.dataset: len(s) for s in sets}}

    # -- relabel / drop by coordinates (MiraBest is the only extra set with positions)
    if "mirabest" in extras and csv_dir is not None:
        mb = np.flatnonzero(source == "mirabest")
        mset = extras["mirabest"]
        coord = {}
        for name, action in (("FRICat_Capetti_2017_relabeled.csv", "relabel"),
                             ("galaxy_data_different_labels.csv", "drop"), ("galaxy_data_removed.csv", "drop")):
            p = csv_dir / name
            if not p.exists():
                continue
            ra, dec, rows = read_positions(p)
            hits = coordinate_matches(mset.ra, mset.dec, ra, dec, COORD_RADIUS_ARCSEC)
            for i, j, _ in hits:
                if action == "relabel":
                    new = rows[j].get("Corrected Label", "").strip()
                    if new in GRIESE_CLASSES:
                        y[mb[i]] = sub[mb[i]] = GRIESE_CLASSES.index(new)
                elif role[mb[i]] == "fit":
                    role[mb[i]] = f"dropped:{name.split('.')[0]}"
            coord[name] = len({i for i, _, _ in hits})
        counts["mirabest_position_matches"] = coord

    # -- 1. near-duplicates of valid
    stretched = np.sqrt(np.clip(x[..., 0], 0, None))
    valid = np.flatnonzero(role == "valid")
    rest = np.flatnonzero(role != "valid")
    best, _ = max_ncc(stretched[valid], stretched[rest], coarse_min=0.9)
    near_valid = rest[best >= threshold]
    if guard == "pixels":
        near_valid, counts["pixel_guard"] = _pixel_guard(griese.images, stretched, valid, near_valid, source,
                                                          threshold)
    elif guard != "ncc":
        raise ValueError(f"unknown guard {guard!r} (ncc or pixels)")
    role[near_valid] = "dropped:near-valid"
    counts["near_valid"] = _by_source(source, y, near_valid)
    counts["guard"] = guard
    say(f"radio pool: {len(near_valid)} images within NCC {threshold} of a valid image removed")

    # -- 2. the carved validation part, and extra images near it
    gtrain = np.flatnonzero((source == "griese") & (role == "fit"))
    fit_i, val_i = stratified_split_fractions(y[gtrain], [1 - val_fraction, val_fraction], seed)
    role[gtrain[val_i]] = "carved"
    extra_fit = np.flatnonzero((source != "griese") & (role == "fit"))
    carved = gtrain[val_i]
    best, _ = max_ncc(stretched[carved], stretched[extra_fit], coarse_min=0.9)
    near_carved = extra_fit[best >= threshold]
    role[near_carved] = "dropped:near-carved"
    counts["near_carved"] = _by_source(source, y, near_carved)

    # -- 3. across sets: exact hashes, then NCC against Griese train, then FR-DEEP against MiraBest
    hashes = np.array(image_hashes(np.round(raw[..., 0]).astype(np.uint8)))
    seen: dict[str, int] = {}
    exact = []
    for i in np.flatnonzero(role != "valid"):
        if hashes[i] in seen and source[seen[hashes[i]]] != source[i] and role[i] in ("fit",):
            exact.append(i)
        seen.setdefault(hashes[i], i)
    role[exact] = "dropped:exact-duplicate"
    counts["exact_cross_set"] = _by_source(source, y, np.array(exact, dtype=int))
    keep_g = np.flatnonzero((source == "griese") & np.isin(role, ["fit", "carved"]))
    cross = []
    for other in (keep_g, np.flatnonzero((source == "mirabest") & (role == "fit"))):
        cand = np.flatnonzero((source != "griese") & (role == "fit"))
        if other is not keep_g:
            cand = cand[source[cand] == "frdeep-first"]
        if not len(cand) or not len(other):
            continue
        best, _ = max_ncc(stretched[other], stretched[cand], coarse_min=0.9)
        dup = cand[best >= threshold]
        role[dup] = "dropped:cross-set-duplicate"
        cross.extend(dup.tolist())
    counts["near_cross_set"] = _by_source(source, y, np.array(cross, dtype=int))
    counts["roles"] = {f"{s}:{r}": int(((source == s) & (role == r)).sum())
                       for s in dict.fromkeys(source) for r in dict.fromkeys(role)
                       if ((source == s) & (role == r)).any()}
    say("radio pool: " + json.dumps(counts["roles"]))
    return FirstPool(x=x, raw=raw, y=y, sublabels=sub, source=source.astype(str), role=role.astype(str), ids=ids,
                     counts=counts)


def _pixel_guard(images: np.ndarray, stretched: np.ndarray, valid: np.ndarray, near: np.ndarray,
                 source: np.ndarray, threshold: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Split the NCC near-valid images: Griese train images whose every valid partner (NCC >= threshold)
    differs by >= PIXEL_DISTINCT grey levels are kept (returned ``near`` without them); the others stay.
    ``images``: the published 8-bit Griese images, indexed like the pool (Griese comes first in it)."""
    g = near[source[near] == "griese"]
    if not len(g):
        return near, {"checked": 0, "kept": 0}
    pairs = ncc_pairs(stretched[valid], stretched[g], threshold)
    worst = np.full(len(g), np.inf)
    for i, j in pairs:
        worst[j] = min(worst[j], pixel_difference(images[valid[i]], images[g[j]]))
    keep = g[worst >= PIXEL_DISTINCT]
    edges = [0, 2, 5, 10, 20, 50, 256]
    info = {"checked": int(len(g)), "kept": int(len(keep)), "pairs": int(len(pairs)),
            "min_grey_level_difference_histogram": {"edges": edges,
                                                    "counts": np.histogram(worst, edges)[0].tolist()}}
    return np.setdiff1d(near, keep), info


def _by_source(source: np.ndarray, y: np.ndarray, idx: np.ndarray) -> dict[str, dict[str, int]]:
    idx = np.asarray(idx, dtype=int)
    out: dict[str, dict[str, int]] = {}
    for s in dict.fromkeys(source[idx].tolist()):
        sel = idx[source[idx] == s]
        out[s] = {c: int((y[sel] == k).sum()) for k, c in enumerate(GRIESE_CLASSES) if (y[sel] == k).any()}
    return out


def save_pool_cache(pool: FirstPool, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "pool.npz", x=pool.x, raw=pool.raw, y=pool.y, sublabels=pool.sublabels,
             source=pool.source, role=pool.role, ids=np.array(pool.ids))
    (directory / "counts.json").write_text(json.dumps(pool.counts, indent=1))


def load_pool_cache(directory: Path) -> FirstPool:
    with np.load(Path(directory) / "pool.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    counts = json.loads((Path(directory) / "counts.json").read_text())
    return FirstPool(x=arrays["x"], raw=arrays["raw"], y=arrays["y"], sublabels=arrays["sublabels"],
                     source=arrays["source"], role=arrays["role"], ids=arrays["ids"].tolist(), counts=counts)
