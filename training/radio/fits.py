"""MiraBest FITS cutouts: the class code, RA/Dec, redshift and size in the file name, pixels in Jy/beam."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import StampflowError
from training.family import say
from training.radio.sets import FIRST_PIXEL_SCALE, MIRABEST_FITS_CLASSES, RadioSet, existing_path

_MIRABEST_FITS = re.compile(r"^(\d{3})_(\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.fits?$",
                            re.IGNORECASE)
_MORPHOLOGY = {"0": "standard", "1": "double-double", "2": "wide-angle tail", "3": "diffuse", "4": "head-tail"}


def parse_mirabest_fits_name(name: str) -> dict[str, Any] | None:
    """``200_235.328+051.679_0.1481_0031.15.fits`` -> code, class, confidence, morphology, ra, dec, z, size.

    MiraBest codes (Miraghaei & Best 2017): first digit 1 FRI, 2 FRII, 3 hybrid; second 0 confident, 1
    uncertain; third the morphology (0 standard, 1 double-double, 2 wide-angle tail, 3 diffuse, 4 head-tail).
    ``size`` is the catalogue's largest angular size in arcsec.
    """
    m = _MIRABEST_FITS.match(Path(name).name)
    if not m:
        return None
    code = m.group(1)
    cls = {"1": "FRI", "2": "FRII", "3": "Hybrid"}.get(code[0])
    if cls is None:
        return None
    return {"code": code, "label": cls, "confidence": "confident" if code[1] == "0" else "uncertain",
            "morphology": _MORPHOLOGY.get(code[2], code[2]), "ra": float(m.group(2)), "dec": float(m.group(3)),
            "z": float(m.group(4)), "size_arcsec": float(m.group(5))}


def fits_files(path: Path, pattern: str = "*.fits") -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(f for f in path.glob(pattern) if f.is_file())
    if not files:
        raise StampflowError(f"no {pattern} files in {path}")
    return files


def load_mirabest_fits(path: str | Path, size: int | None = None) -> RadioSet:
    """MiraBest FITS cutouts (a directory or one file); files whose names do not parse are skipped with a note.
    Images stay float32 Jy/beam; ``size`` centre-crops (the pixel grid is FIRST's 1.8"/px)."""
    from models.preprocess import fit_to_spec
    from training.survey_cutouts import pixel_scale_arcsec, read_fits_with_wcs

    p = existing_path(path, "MiraBest FITS")
    imgs, labels, ids, ra, dec, extra, scales = [], [], [], [], [], [], []
    skipped = []
    for f in fits_files(p):
        info = parse_mirabest_fits_name(f.name)
        if info is None:
            skipped.append(f.name)
            continue
        img, wcs, _ = read_fits_with_wcs(f)
        scales.append(pixel_scale_arcsec(wcs))
        imgs.append(fit_to_spec(img, size) if size else img)
        labels.append(MIRABEST_FITS_CLASSES.index(info["label"]))
        ids.append(f.stem)
        ra.append(info["ra"])
        dec.append(info["dec"])
        extra.append({k: str(info[k]) for k in ("code", "confidence", "morphology", "z", "size_arcsec")})
    if skipped:
        say(f"radio: skipped {len(skipped)} FITS files without a MiraBest name: {', '.join(skipped[:5])}")
    if not imgs:
        raise StampflowError(f"no MiraBest-named FITS files in {p}")
    shapes = {i.shape for i in imgs}
    if len(shapes) != 1:
        raise StampflowError(f"{p}: FITS images of different shapes {sorted(shapes)}; pass size=N to crop")
    scale = float(np.nanmedian([s for s in scales if s is not None])) if any(scales) else FIRST_PIXEL_SCALE
    return RadioSet(images=np.stack(imgs).astype(np.float32), labels=np.array(labels, dtype=int),
                    classes=MIRABEST_FITS_CLASSES, splits=np.array(["all"] * len(imgs)), ids=ids, survey="FIRST",
                    pixel_scale=round(scale, 4), dataset="mirabest-fits", source=str(p),
                    ra=np.array(ra), dec=np.array(dec), extra=extra)
