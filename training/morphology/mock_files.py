"""Mock CANDELS / CLASH stamp sets in the published format: the real label CSV copied verbatim, and one FITS
stamp per label row (``stamps/<ID>.fits``) drawn by `training.morphology.mocks` from that row's fractions.

Format: one primary HDU of big-endian float32 with no ``EXTEND`` card (as the real a611 stamp), and the subset of
the real stamp's keywords that a mock can fill honestly; two ``HISTORY`` cards say it is a mock and which label
row it was drawn from. Drawing is seeded per ID: the same call writes byte-identical files.

``python -m training.morphology mock --labels DIR --out DIR`` writes both mock sets; see docs/morphology.md.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from schemas.errors import StampflowError
from training.morphology.dataset import parse_filters
from training.morphology.labels import LABEL_FILES, instrument_for, labels_file, parse_clash_id, read_labels
from training.morphology.mocks import (CANDELS_NOISE, CANDELS_SKY, CLASH_CLUSTERS, CLASH_NOISE, CLASH_SKY,
                                       FILTER_PROPS, GOODS_S_CENTRE, draw_shape, draw_stamp, stamp_seed)
from training.morphology.network import CANDELS_BAND, CLASH_FILTERS, CLASSES
from training.morphology.stamps import CANDELS_PIXEL_SCALE, CLASH_PIXEL_SCALE


def _header_cards(band: str, dataset: str, *, target: str, ra: float, dec: float, size: int, pixel_scale: float,
                  sky: float, exptime: float) -> list[tuple[str, Any, str]]:
    """The keywords of the published CLASH stamp's header that a mock can fill honestly (same names, types and
    order; WFC3 headers name the filter FILTER, ACS ones FILTER1/FILTER2, as in the real archives)."""
    instrument, detector = instrument_for(band)
    cards: list[tuple[str, Any, str]] = [
        ("ORIGIN", "stampflow mock", "FITS file originator"),
        ("TELESCOP", "HST", "telescope used to acquire data"),
        ("INSTRUME", instrument, "identifier for instrument used to acquire data"),
        ("EQUINOX", 2000.0, "equinox of celestial coord. system"),
        ("TARGNAME", target, "proposer's target name"),
        ("RA_TARG", ra, "right ascension of the target (deg) (J2000)"),
        ("DEC_TARG", dec, "declination of the target (deg) (J2000)"),
        ("EXPTIME", exptime, "exposure duration (seconds)--calculated"),
        ("DETECTOR", detector, "detector in use"),
    ]
    if instrument == "ACS":
        cards += [("FILTER1", band, "element selected from filter wheel 1"),
                  ("FILTER2", "CLEAR2L", "element selected from filter wheel 2")]
    else:
        cards += [("FILTER", band, "element selected from filter wheel")]
    deg = pixel_scale / 3600.0
    cards += [
        ("MDRIZSKY", sky, "Sky value computed by MultiDrizzle"),
        ("BUNIT", "ELECTRONS", "brightness units"),
        ("WCSAXES", 2, "number of World Coordinate System axes"),
        ("CRPIX1", size / 2.0, "x-coordinate of reference pixel"),
        ("CRPIX2", size / 2.0, "y-coordinate of reference pixel"),
        ("CRVAL1", ra, "first axis value at reference pixel"),
        ("CRVAL2", dec, "second axis value at reference pixel"),
        ("CTYPE1", "RA---TAN", "the coordinate type for the first axis"),
        ("CTYPE2", "DEC--TAN", "the coordinate type for the second axis"),
        ("CD1_1", -deg, "partial of first axis coordinate w.r.t. x"),
        ("CD1_2", 0.0, "partial of first axis coordinate w.r.t. y"),
        ("CD2_1", 0.0, "partial of second axis coordinate w.r.t. x"),
        ("CD2_2", deg, "partial of second axis coordinate w.r.t. y"),
        ("PHOTPLAM", FILTER_PROPS[band][2], "Pivot wavelength (Angstroms)"),
    ]
    return cards


def write_stamp_fits(path: str | Path, image: np.ndarray, cards: list[tuple[str, Any, str]],
                     history: Sequence[str] = ()) -> Path:
    """One stamp as the published ones are: a single primary HDU of big-endian float32 with the given cards."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(image, dtype=">f4"))
    del hdu.header["EXTEND"]  # the published stamps have no EXTEND card
    for key, value, comment in cards:
        hdu.header[key] = (value, comment)
    for line in history:
        hdu.header["HISTORY"] = line
    path = Path(path)
    hdu.writeto(path, overwrite=True)
    return path


@dataclass
class MockReport:
    dataset: str
    out_dir: Path
    stamps: int
    label_rows: int
    per_class: dict[str, int]


def _mock_history(dataset: str, sid: str, fractions: np.ndarray, seed: int) -> list[str]:
    top = CLASSES[int(np.argmax(fractions))]
    return [f"stampflow mock {dataset} stamp (not a real image), seed {seed}",
            f"drawn for {sid}: dominant class {top}, fractions " + ",".join(f"{f:.3f}" for f in fractions)]


def write_mock_candels(labels_csv: str | Path, out_dir: str | Path, *, seed: int = 0, limit: int | None = None,
                       progress: bool = True) -> MockReport:
    """``out_dir/CANDELS_labels.csv`` (the real file, copied verbatim) + ``out_dir/stamps/<ID>.fits`` (F160W)."""
    from tqdm.auto import tqdm

    labels = read_labels(labels_csv, "candels")
    out = Path(out_dir)
    (out / "stamps").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(labels.path, out / LABEL_FILES["candels"])
    n = len(labels) if limit is None else min(limit, len(labels))
    fwhm = FILTER_PROPS[CANDELS_BAND][0]
    counts = {c: 0 for c in CLASSES}
    for k in tqdm(range(n), desc="mock CANDELS", unit="stamp", disable=not progress, file=sys.stderr):
        sid, fr = labels.ids[k], labels.fractions[k]
        rng = np.random.default_rng(stamp_seed(seed, "candels", sid))
        shape = draw_shape(rng, fr, CANDELS_PIXEL_SCALE, fwhm)
        img = draw_stamp(shape, fr, CANDELS_BAND, rng, pixel_scale=CANDELS_PIXEL_SCALE, noise=CANDELS_NOISE,
                         sky=CANDELS_SKY)
        ra = GOODS_S_CENTRE[0] + rng.uniform(-0.08, 0.08) / math.cos(math.radians(GOODS_S_CENTRE[1]))
        dec = GOODS_S_CENTRE[1] + rng.uniform(-0.08, 0.08)
        cards = _header_cards(CANDELS_BAND, "candels", target="GOODS-SOUTH", ra=ra, dec=dec, size=shape.size,
                              pixel_scale=CANDELS_PIXEL_SCALE, sky=CANDELS_SKY, exptime=float(rng.uniform(2e3, 8e4)))
        write_stamp_fits(out / "stamps" / f"{sid}.fits", img, cards, _mock_history("CANDELS", sid, fr, seed))
        counts[CLASSES[int(np.argmax(fr))]] += 1
    return MockReport("candels", out, n, len(labels), counts)


def write_mock_clash(labels_csv: str | Path, out_dir: str | Path, *, seed: int = 0, limit: int | None = None,
                     filters: Sequence[str] | str | None = "all", progress: bool = True) -> MockReport:
    """``out_dir/CLASH_labels.csv`` (verbatim) + ``out_dir/stamps/<cluster>_<filter>_<object>.fits``.

    Every labelled row gets its stamp, drawn from its own fractions (``limit``: the galaxies of the first
    ``limit`` rows, with all their rows). Each labelled galaxy is also drawn in the
    other ``filters`` (all 16 by default: CLASH imaged every cluster in all of them), from the mean fractions
    of the galaxy's labelled rows, so combined-filter models have every channel; those stamps have no label row,
    as in the real survey. One galaxy keeps one shape, size and position across filters; PSF, depth and noise
    follow the filter.
    """
    from tqdm.auto import tqdm

    labels = read_labels(labels_csv, "clash")
    extra = parse_filters(filters) if filters else ()
    out = Path(out_dir)
    (out / "stamps").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(labels.path, out / LABEL_FILES["clash"])
    by_galaxy: dict[str, list[int]] = {}
    for k, sid in enumerate(labels.ids):
        by_galaxy.setdefault(parse_clash_id(sid).galaxy, []).append(k)
    if limit is not None:  # the galaxies of the first `limit` rows, each with all its label rows
        first = {parse_clash_id(labels.ids[k]).galaxy for k in range(min(limit, len(labels)))}
        by_galaxy = {g: ks for g, ks in by_galaxy.items() if g in first}
    rows = [k for ks in by_galaxy.values() for k in ks]
    counts = {c: 0 for c in CLASSES}
    written = 0
    detection_fwhm = FILTER_PROPS["F814W"][0]
    for gal, ks in tqdm(by_galaxy.items(), desc="mock CLASH", unit="galaxy", disable=not progress,
                        file=sys.stderr):
        cid = parse_clash_id(labels.ids[ks[0]])
        mean_fr = labels.fractions[ks].mean(axis=0)
        grng = np.random.default_rng(stamp_seed(seed, "clash", gal))
        shape = draw_shape(grng, mean_fr, CLASH_PIXEL_SCALE, detection_fwhm)
        centre = CLASH_CLUSTERS.get(cid.cluster, (0.0, 0.0))
        ra = centre[0] + grng.uniform(-0.025, 0.025) / math.cos(math.radians(centre[1]))
        dec = centre[1] + grng.uniform(-0.025, 0.025)
        target = ("ABELL" + cid.cluster[1:]) if cid.cluster.startswith("a") else cid.cluster.upper()
        own = {parse_clash_id(labels.ids[k]).filter: k for k in ks}
        for band in sorted(set(own) | set(extra), key=CLASH_FILTERS.index):
            sid = cid.stamp_id(band)
            fr = labels.fractions[own[band]] if band in own else mean_fr
            rng = np.random.default_rng(stamp_seed(seed, "clash", sid))
            img = draw_stamp(shape, fr, band, rng, pixel_scale=CLASH_PIXEL_SCALE, noise=CLASH_NOISE, sky=CLASH_SKY)
            cards = _header_cards(band, "clash", target=target, ra=ra, dec=dec, size=shape.size,
                                  pixel_scale=CLASH_PIXEL_SCALE, sky=CLASH_SKY * (1 + shape.sky_offset),
                                  exptime=float(rng.uniform(2e3, 5e3)))
            history = _mock_history("CLASH", sid, fr, seed)
            if band not in own:
                history.append("no label row for this filter: drawn from the galaxy's mean labelled fractions")
            write_stamp_fits(out / "stamps" / f"{sid}.fits", img, cards, history)
            written += 1
        for k in ks:
            counts[CLASSES[int(np.argmax(labels.fractions[k]))]] += 1
    return MockReport("clash", out, written, len(rows), counts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.morphology",
                                 description="Write mock CANDELS/CLASH stamps for the real label rows.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mock", help="mock stamps in the published format, one per real label row")
    m.add_argument("--labels", required=True, type=Path,
                   help="directory with CANDELS_labels.csv and/or CLASH_labels.csv (or one CSV)")
    m.add_argument("--out", required=True, type=Path, help="writes OUT/CANDELS/ and OUT/CLASH/")
    m.add_argument("--dataset", choices=("candels", "clash", "both"), default="both")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--limit", type=int, default=None, help="only the first N label rows (quick runs)")
    m.add_argument("--filters", default="all",
                   help="CLASH: also draw every labelled galaxy in these filters (default all 16)")
    args = ap.parse_args(argv)
    try:
        todo = ("candels", "clash") if args.dataset == "both" else (args.dataset,)
        for ds in todo:
            csv_path = labels_file(args.labels, ds)
            if ds == "candels":
                rep = write_mock_candels(csv_path, args.out / "CANDELS", seed=args.seed, limit=args.limit)
            else:
                rep = write_mock_clash(csv_path, args.out / "CLASH", seed=args.seed, limit=args.limit,
                                       filters=args.filters)
            print(f"{ds}: {rep.stamps} stamps for {rep.label_rows} label rows in {rep.out_dir} "
                  f"(dominant classes {rep.per_class})")
    except StampflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
