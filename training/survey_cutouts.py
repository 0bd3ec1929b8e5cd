"""Cut stamps around sky positions out of a survey image that has a WCS (FIRST/NVSS mosaics, SkyView cutouts).

`cut_stamps(data, wcs, coords, size)` returns one `Stamp` per position that overlaps the image, each with its own
WCS (`astropy.nddata.Cutout2D` keeps it consistent with the slice), and lists the positions it skipped and why.

Centre convention: ``Cutout2D`` puts the requested position in the pixel ``size // 2`` (0-based) of the stamp,
rounding the position to the nearest pixel, so a coordinate at the exact centre of a 300x300 image (pixel
149.5) lands within half a pixel of the centre of an even-sized stamp. ``Stamp.position`` gives the requested
coordinate in the stamp's own pixel frame, so callers can see the sub-pixel offset.

Edges (``mode``):
- ``partial`` (default): a stamp that runs over the image edge keeps the full ``size`` and the missing pixels
  are NaN; ``Stamp.partial`` is True and ``Stamp.filled_fraction`` says how much is real data. The serving
  path fills NaN with the stamp median (`models.preprocess.fill_nan`).
- ``trim``: the stamp is cut to the overlap (smaller than ``size``), flagged partial.
- ``strict``: a position whose stamp does not fit entirely is skipped (or raises, see ``on_missing``).
A position off the image (no overlap at all, or not projectable) is skipped with a reason, or raises
`StampflowError` with ``on_missing="raise"``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from schemas.errors import CutoutError, StampflowError
from schemas.stamps import read_fits_file

MODES = ("partial", "trim", "strict")


@dataclass
class Stamp:
    """One cutout: float32 ``data`` (NaN where the image had no pixels), its WCS and where it came from."""

    index: int                      # position in the input coordinate list
    ra: float                       # requested position (deg, ICRS/FK5 as given)
    dec: float
    data: np.ndarray
    wcs: Any                        # astropy.wcs.WCS of the stamp
    partial: bool                   # the stamp ran over the image edge
    filled_fraction: float          # fraction of stamp pixels that came from the image
    position: tuple[float, float]   # requested (x, y) in the stamp's 0-based pixel frame
    slices_original: tuple[slice, slice]
    pixel_scale: float | None = None  # arcsec/px from the WCS
    name: str | None = None


@dataclass
class StampSet:
    """What `cut_stamps` produced: the stamps, and the skipped positions as (index, ra, dec, reason)."""

    stamps: list[Stamp] = field(default_factory=list)
    skipped: list[tuple[int, float, float, str]] = field(default_factory=list)


def as_skycoord(coords: Any = None, ra: Sequence[float] | float | None = None,
                dec: Sequence[float] | float | None = None):
    """A 1-D `SkyCoord` from a SkyCoord (scalar or array) or from ``ra``/``dec`` in degrees (ICRS)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    if coords is not None:
        if not isinstance(coords, SkyCoord):
            raise StampflowError(f"coordinates must be a SkyCoord or ra/dec arrays, not {type(coords).__name__}")
        return coords.reshape(-1)
    if ra is None or dec is None:
        raise StampflowError("give either a SkyCoord or both ra and dec (degrees)")
    ra_a, dec_a = np.atleast_1d(np.asarray(ra, dtype=float)), np.atleast_1d(np.asarray(dec, dtype=float))
    if ra_a.shape != dec_a.shape or ra_a.ndim != 1:
        raise StampflowError(f"ra and dec must be 1-D and the same length (got {ra_a.shape} and {dec_a.shape})")
    if not (np.all(np.isfinite(ra_a)) and np.all(np.isfinite(dec_a))):
        raise StampflowError("ra/dec contain NaN or infinite values")
    if np.any(np.abs(dec_a) > 90):
        raise StampflowError("dec outside [-90, 90] degrees")
    return SkyCoord(ra=ra_a * u.deg, dec=dec_a * u.deg, frame="icrs")


def celestial_image(data: np.ndarray, wcs) -> tuple[np.ndarray, Any]:
    """Drop degenerate axes (radio FITS often carry FREQ and STOKES of length 1) -> (2-D float32, celestial WCS)."""
    arr = np.asarray(data)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise StampflowError(f"survey image must be 2-D after dropping length-1 axes (shape {np.shape(data)})")
    cel = wcs.celestial
    if cel.naxis != 2 or not cel.has_celestial:
        raise StampflowError("the image WCS has no celestial (RA/Dec) axes")
    return arr.astype(np.float32, copy=False), cel


def pixel_scale_arcsec(wcs) -> float | None:
    from astropy.wcs.utils import proj_plane_pixel_scales

    try:
        scales = proj_plane_pixel_scales(wcs.celestial) * 3600.0
    except Exception:  # noqa: BLE001 - an odd WCS only loses the scale, not the stamp
        return None
    return float(np.mean(scales)) if np.all(np.isfinite(scales)) else None


def cut_stamps(data: np.ndarray, wcs, coords: Any = None, size: int = 150, *, ra=None, dec=None,
               mode: str = "partial", on_missing: str = "skip", names: Sequence[str] | None = None) -> StampSet:
    """Stamps of ``size`` x ``size`` pixels centred on each coordinate (see the module docstring for edges).

    ``coords``: a SkyCoord (or ``ra``/``dec`` arrays in degrees). ``on_missing``: ``skip`` records positions off
    the image (and, in ``strict`` mode, positions whose stamp does not fit) in ``StampSet.skipped``; ``raise``
    raises `StampflowError` for the first one.
    """
    from astropy.nddata import Cutout2D, NoOverlapError, PartialOverlapError

    if mode not in MODES:
        raise StampflowError(f"unknown cutout mode '{mode}' (choose from {', '.join(MODES)})")
    if on_missing not in ("skip", "raise"):
        raise StampflowError(f"on_missing must be 'skip' or 'raise', not '{on_missing}'")
    if int(size) <= 0:
        raise StampflowError(f"stamp size must be positive, got {size}")
    image, cel = celestial_image(data, wcs)
    sky = as_skycoord(coords, ra, dec)
    if names is not None and len(names) != len(sky):
        raise StampflowError(f"{len(names)} names for {len(sky)} coordinates")
    scale = pixel_scale_arcsec(cel)
    ny, nx = image.shape
    out = StampSet()
    # Cutout2D's own NoOverlapError check uses the rounded position; project once here so positions that do
    # not project at all (the far side of a TAN plane) are caught too.
    xs, ys = cel.world_to_pixel(sky)
    for i, (c, x, y) in enumerate(zip(sky, np.atleast_1d(xs), np.atleast_1d(ys))):
        ra_i, dec_i = float(c.icrs.ra.deg), float(c.icrs.dec.deg)
        reason = None
        if not (np.isfinite(x) and np.isfinite(y)):
            reason = "does not project onto the image"
        stamp = None
        if reason is None:
            try:
                cut = Cutout2D(image, (float(x), float(y)), (int(size), int(size)), wcs=cel,
                               mode=mode, fill_value=np.nan, copy=True)
            except NoOverlapError:
                reason = f"off the image (pixel {x:.1f}, {y:.1f} of {nx}x{ny})"
            except PartialOverlapError:
                reason = f"stamp of {size} px runs over the image edge (strict mode)"
            else:
                sl_c = cut.slices_cutout
                real = (sl_c[0].stop - sl_c[0].start) * (sl_c[1].stop - sl_c[1].start)
                partial = real < size * size
                px, py = cut.wcs.world_to_pixel(c)
                stamp = Stamp(index=i, ra=ra_i, dec=dec_i, data=np.asarray(cut.data, dtype=np.float32),
                              wcs=cut.wcs, partial=bool(partial), filled_fraction=real / float(size * size),
                              position=(float(px), float(py)), slices_original=cut.slices_original,
                              pixel_scale=scale, name=names[i] if names is not None else None)
        if stamp is None:
            if on_missing == "raise":
                raise StampflowError(f"coordinate {i} (ra {ra_i:.5f}, dec {dec_i:.5f}) {reason}")
            out.skipped.append((i, ra_i, dec_i, reason))
        else:
            out.stamps.append(stamp)
    return out


def read_fits_with_wcs(path: str | Path) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """(2-D float32 image, celestial WCS, a few header values) of a FITS image.

    The pixels come from `schemas.stamps.read_fits_file`, the one FITS reader (first image HDU, length-1 axes
    dropped); only the WCS and the header values are read here, from that same HDU's header.
    """
    p = Path(path)
    if not p.is_file():
        raise StampflowError(f"FITS file {p} does not exist")
    try:
        image = read_fits_file(p)
    except CutoutError as exc:
        raise StampflowError(f"cannot read {p} as a FITS image: {exc}") from None
    header = _image_header(p)
    try:
        cel = _celestial_wcs(header)
    except (ValueError, MemoryError) as exc:  # astropy's WCS errors derive from ValueError
        raise StampflowError(f"cannot read the WCS of {p}: {exc}") from None
    info = {k: header.get(k) for k in ("SURVEY", "TELESCOP", "BUNIT", "OBJECT", "CRVAL1", "CRVAL2")}
    return image, cel, info


def _image_header(path: Path):
    """The header of the HDU `read_fits_file` takes its pixels from: the first image HDU with two or more axes."""
    import warnings

    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="astropy.io.fits")  # see _celestial_wcs
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                if getattr(hdu, "is_image", False) and int(hdu.header.get("NAXIS", 0)) >= 2:
                    return hdu.header
    raise StampflowError(f"{path} has no image HDU")


def _celestial_wcs(header):
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        # SkyView headers carry tab characters in COMMENT cards and old-style keywords: harmless here.
        warnings.simplefilter("ignore", FITSFixedWarning)
        warnings.filterwarnings("ignore", module="astropy.io.fits")
        cel = WCS(header).celestial
    if cel.naxis != 2 or not cel.has_celestial:
        raise StampflowError("the image WCS has no celestial (RA/Dec) axes")
    return cel


def cut_stamps_from_fits(path: str | Path, coords: Any = None, size: int = 150, **kwargs) -> StampSet:
    """`cut_stamps` on a FITS image read with `read_fits_with_wcs`."""
    image, wcs, _ = read_fits_with_wcs(path)
    return cut_stamps(image, wcs, coords, size, **kwargs)


_RA_NAMES = ("ra", "ra_d", "ra_deg", "raj2000", "ra (j2000) degree", "ra in °")
_DEC_NAMES = ("dec", "dec_d", "dec_deg", "dej2000", "decj2000", "dec (j2000) degree", "dec in °")


def read_coordinate_list(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """A CSV of positions in degrees -> (ra, dec, names or None).

    The header names the columns: ``ra``/``dec`` (also ``RA_d``, ``RA in °``, ``RA (J2000) degree`` ... as in the
    Griese/Alhassan CSVs, case-insensitive); an optional ``name`` or ``id`` column names the stamps.
    """
    p = Path(path)
    if not p.is_file():
        raise StampflowError(f"coordinate list {p} does not exist")
    with open(p, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        raise StampflowError(f"coordinate list {p} has no rows")
    header = [h.strip().lower() for h in rows[0]]

    def find(options: Iterable[str]) -> int | None:
        for o in options:
            if o in header:
                return header.index(o)
        return None

    i_ra, i_dec = find(_RA_NAMES), find(_DEC_NAMES)
    if i_ra is None or i_dec is None:
        raise StampflowError(f"coordinate list {p}: no ra/dec columns in header {rows[0]}")
    i_name = find(("name", "id", "source"))
    ra, dec, names = [], [], []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            ra.append(float(row[i_ra]))
            dec.append(float(row[i_dec]))
        except (ValueError, IndexError):
            raise StampflowError(f"coordinate list {p}, line {n}: ra/dec are not numbers: {row}") from None
        if i_name is not None:
            names.append(row[i_name].strip())
    return np.array(ra), np.array(dec), (names if i_name is not None else None)
