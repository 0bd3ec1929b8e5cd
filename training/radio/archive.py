"""Radio data sets as cutout packets for ``stampflow replay --format griese|frdeep|mirabest|radio-fits``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from models.preprocess import fit_to_spec
from schemas.cutout_packet import Cutout
from schemas.errors import StampflowError
from training.family import say
from training.radio.batches import load_frdeep, load_mirabest
from training.radio.data import detect_dataset
from training.radio.fits import fits_files, parse_mirabest_fits_name
from training.radio.griese import load_griese
from training.radio.sets import BAND, DATASETS, RadioSet, existing_path, int_option


def _cutouts_from_set(rs: RadioSet, instrument: str, truth_source: str, limit: int | None = None) -> Iterator:
    n = len(rs) if limit is None else min(limit, len(rs))
    for i in range(n):
        ra = None if rs.ra is None or not np.isfinite(rs.ra[i]) else float(rs.ra[i])
        dec = None if rs.dec is None or not np.isfinite(rs.dec[i]) else float(rs.dec[i])
        yield Cutout(id=rs.ids[i], survey=rs.survey, bands=[BAND],
                     images={BAND: np.asarray(rs.images[i], dtype=np.float32)}, pixel_scale=rs.pixel_scale,
                     instrument=instrument, ra=ra, dec=dec, truth_label=rs.classes[int(rs.labels[i])],
                     truth_source=truth_source, dataset=rs.dataset, split=str(rs.splits[i]),
                     extra=dict(rs.extra[i]) if rs.extra else {})


def iter_griese_cutouts(path: Path, split: str = "all", labels: str = "literature", limit: Any = None,
                        **_: Any) -> Iterator:
    """Griese HDF5 (zip or not) -> Cutout per image: FIRST, 1.4GHz, 1.8"/px, truth = class name, split."""
    rs = load_griese(path, split=split, labels=labels)
    yield from _cutouts_from_set(rs, "VLA", f"Griese et al. 2023 Label_{labels}", int_option(limit))


def iter_frdeep_cutouts(path: Path, survey: str | None = None, split: str = "all", limit: Any = None,
                        **_: Any) -> Iterator:
    """FR-DEEP FIRST (1.8"/px) or NVSS (15"/px) -> Cutout per image (``survey=FIRST|NVSS``)."""
    rs = load_frdeep(path, survey=survey, split=split)
    yield from _cutouts_from_set(rs, "VLA", "FR-DEEP (Tang et al. 2019; FRICAT/CoNFIG)", int_option(limit))


def iter_mirabest_cutouts(path: Path, split: str = "all", limit: Any = None, **_: Any) -> Iterator:
    """MiraBest batches -> Cutout per image with RA/Dec from the file name."""
    rs = load_mirabest(path, split=split)
    yield from _cutouts_from_set(rs, "VLA", "MiraBest (Miraghaei & Best 2017)", int_option(limit))


def _coords_option(coords: Any):
    """``coords``: a CSV path, ``"ra,dec;ra,dec"`` in degrees, or a SkyCoord -> (SkyCoord, names | None)."""
    from training.survey_cutouts import as_skycoord, read_coordinate_list

    if coords is None:
        return None, None
    if not isinstance(coords, (str, Path)):
        return as_skycoord(coords), None
    text = str(coords)
    if Path(text).is_file():
        ra, dec, names = read_coordinate_list(text)
        return as_skycoord(ra=ra, dec=dec), names
    try:
        pairs = [tuple(float(v) for v in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        raise StampflowError(f"coords must be a CSV file or 'ra,dec;ra,dec' in degrees, not {text!r}") from None
    if not pairs or any(len(pr) != 2 for pr in pairs):
        raise StampflowError(f"coords must be a CSV file or 'ra,dec;ra,dec' in degrees, not {text!r}")
    return as_skycoord(ra=[pr[0] for pr in pairs], dec=[pr[1] for pr in pairs]), None


def iter_radio_fits_cutouts(path: Path, coords: Any = None, size: Any = None, mode: str = "partial",
                            survey: str | None = None, band: str = BAND, pattern: str = "*.fits",
                            on_missing: str = "skip", **_: Any) -> Iterator:
    """FITS images (one file or a directory) -> Cutouts.

    Without ``coords``: each image is one cutout (centre-cropped to ``size`` if given), ra/dec from a MiraBest
    file name or else the WCS position of the image centre, truth label from a MiraBest name. With ``coords``
    (CSV path or ``"ra,dec;..."``): a ``size`` (default 150) stamp around every coordinate that falls on each
    image (`training.survey_cutouts.cut_stamps`, NaN-filled at edges, ``extra['partial']``); positions off an
    image are reported on stderr and skipped (``on_missing=raise`` makes them an error).
    """
    from training.survey_cutouts import cut_stamps, pixel_scale_arcsec, read_fits_with_wcs

    p = existing_path(path, "FITS path")
    files = fits_files(p, pattern)
    sky, names = _coords_option(coords)
    stamp_size = int_option(size)
    for f in files:
        image, wcs, header = read_fits_with_wcs(f)
        scale = pixel_scale_arcsec(wcs)
        srv = (survey or header.get("SURVEY") or header.get("TELESCOP") or "unknown").strip().upper()
        instrument = (header.get("TELESCOP") or "").strip() or None
        info = parse_mirabest_fits_name(f.name)
        base_extra = {"file": f.name}
        if info:
            base_extra.update({k: str(info[k]) for k in ("code", "confidence", "morphology", "z", "size_arcsec")})
        if sky is None:
            if info:
                ra, dec = info["ra"], info["dec"]
            else:
                c = wcs.pixel_to_world((image.shape[1] - 1) / 2.0, (image.shape[0] - 1) / 2.0)
                ra, dec = float(c.icrs.ra.deg), float(c.icrs.dec.deg)
            img = fit_to_spec(image, stamp_size) if stamp_size else image
            yield Cutout(id=f.stem, survey=srv, bands=[band], images={band: np.asarray(img, dtype=np.float32)},
                         pixel_scale=scale, instrument=instrument, ra=ra, dec=dec,
                         truth_label=info["label"] if info else None,
                         truth_source="MiraBest file name code" if info else None,
                         dataset="mirabest-fits" if info else "radio-fits", split=None, extra=base_extra)
            continue
        result = cut_stamps(image, wcs, sky, stamp_size or 150, mode=mode, on_missing="skip", names=names)
        if result.skipped:
            if on_missing == "raise":
                i, ra, dec, why = result.skipped[0]
                raise StampflowError(f"{f.name}: coordinate {i} (ra {ra:.5f}, dec {dec:.5f}) {why}")
            say(f"radio-fits: {f.name}: skipped {len(result.skipped)} of {len(sky)} coordinates not on the image")
        for st in result.stamps:
            label = st.name or f"{st.ra:.5f}{st.dec:+.5f}"
            yield Cutout(id=f"{f.stem}/{label}", survey=srv, bands=[band], images={band: st.data},
                         pixel_scale=st.pixel_scale, instrument=instrument, ra=st.ra, dec=st.dec,
                         truth_label=None, dataset="radio-fits", split=None,
                         extra={**{"file": f.name}, "partial": str(st.partial).lower(),
                                "filled_fraction": f"{st.filled_fraction:.4f}"})


def iter_cutouts(path: Path, dataset: str | None = None, **options: Any) -> Iterator:
    """Any radio format (detected, or ``dataset=``): dispatches to the ``iter_*_cutouts`` readers."""
    ds = (dataset or detect_dataset(path)).lower()
    if ds == "griese":
        return iter_griese_cutouts(path, **options)
    if ds.startswith("frdeep"):
        if "-" in ds:
            options.setdefault("survey", ds.split("-")[1].upper())
        return iter_frdeep_cutouts(path, **options)
    if ds == "mirabest":
        return iter_mirabest_cutouts(path, **options)
    if ds in ("mirabest-fits", "radio-fits"):
        return iter_radio_fits_cutouts(path, **options)
    raise StampflowError(f"unknown radio data set '{ds}' (choose from {', '.join(DATASETS)})")
