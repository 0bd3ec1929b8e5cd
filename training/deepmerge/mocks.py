"""DeepMerge mock files: GalSim scenes written with the published names, HDU layout, column and dtypes.

Mocks (`write_mock_hlsp`): GalSim scenes (see `MockParams`): non-mergers are one Sérsic galaxy, some with
star-forming clumps and some with an unrelated small companion 1.6-2.6" away; mergers are either pre-mergers
(two Sérsic galaxies 0.25-1.3" apart with tidal tails/bridges) or post-mergers (one disturbed remnant with
tails and/or shells). Every component has its own colour across F814W/F160W/F356W and each filter gets its
own Gaussian PSF; "noisy" adds Gaussian sky noise to the same scenes as "pristine". They exercise the formats
and the pipeline; they are NOT Illustris galaxies, and accuracy on them says nothing about the real task.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from schemas.errors import StampflowError
from training.deepmerge.hlsp import (LABEL_COLUMN, LABEL_EXTNAME, REAL_MERGER_FRACTION, REAL_POST_MERGER_FRACTION,
                                     hlsp_filename, labels_to_int)
from training.deepmerge.network import INPUT_SIZE, PIXEL_SCALE, VARIANTS, filters_for

# Names the code that wrote a mock set, in its mock_description.json and FITS header (MOCKGEN).
GENERATOR = "training.deepmerge.mocks.write_mock_hlsp (GalSim)"


@dataclass(frozen=True)
class MockParams:
    """GalSim mock parameters (lengths in arcsec, fluxes in arbitrary counts; recorded in artifacts).

    Sizes and PSFs follow z~2 HST/JWST imaging loosely: half-light radii of 1-4 kpc are 0.12-0.45" at z=2;
    PSF FWHM ~0.09" (ACS F814W), ~0.18" (WFC3/IR F160W), ~0.14" (NIRCam F356W). At z=2 F814W samples the
    rest-frame UV, so it is fainter and star-forming clumps and tails are relatively bluer (brighter there).
    """

    size: int = INPUT_SIZE
    pixel_scale: float = PIXEL_SCALE
    psf_fwhm: tuple[tuple[str, float], ...] = (("F814W", 0.09), ("F160W", 0.18), ("F356W", 0.14))
    colour: tuple[tuple[str, float], ...] = (("F814W", 0.45), ("F160W", 1.0), ("F356W", 1.5))  # old stars
    young_colour: tuple[tuple[str, float], ...] = (("F814W", 1.1), ("F160W", 1.0), ("F356W", 0.8))  # clumps
    colour_scatter_dex: float = 0.12
    noise_sigma: tuple[tuple[str, float], ...] = (("F814W", 0.02), ("F160W", 0.04), ("F356W", 0.03))
    flux_range: tuple[float, float] = (30.0, 300.0)          # F160W total flux of the primary, log-uniform
    hlr_range: tuple[float, float] = (0.12, 0.45)            # log-uniform
    sersic_n_range: tuple[float, float] = (0.7, 4.0)
    max_ellipticity: float = 0.6
    centre_jitter: float = 0.05
    # non-mergers
    companion_probability: float = 0.35                       # unrelated small galaxy far away
    companion_distance: tuple[float, float] = (1.6, 2.6)
    companion_flux_ratio: tuple[float, float] = (0.05, 0.2)
    clump_probability: float = 0.35                           # 1-3 star-forming clumps in the disc
    clump_flux_fraction: tuple[float, float] = (0.03, 0.12)
    # mergers
    post_merger_fraction: float = REAL_POST_MERGER_FRACTION   # used when no stage metadata is given
    pair_separation: tuple[float, float] = (0.25, 1.3)
    pair_flux_ratio: tuple[float, float] = (0.25, 1.0)
    tail_flux_fraction: tuple[float, float] = (0.03, 0.12)
    shell_probability: float = 0.5                            # post-mergers
    asymmetry_flux_fraction: tuple[float, float] = (0.05, 0.2)  # post-merger off-centre second nucleus/plume

    def lookup(self, table: tuple[tuple[str, float], ...], band: str) -> float:
        return dict(table)[band]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("psf_fwhm", "colour", "young_colour", "noise_sigma"):
            d[k] = dict(d[k])
        return d


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _colour(rng: np.random.Generator, base: tuple[tuple[str, float], ...], scatter: float) -> dict[str, float]:
    return {b: float(v * 10 ** rng.normal(0, scatter)) for b, v in base}


def _galaxy(rng: np.random.Generator, p: MockParams, flux: float, offset=(0.0, 0.0), hlr_scale: float = 1.0,
            n: float | None = None) -> dict[str, Any]:
    # n on a 0.05 grid: GalSim caches its Sérsic tables per n, which makes drawing thousands ~3x faster
    n = n if n is not None else rng.uniform(*p.sersic_n_range)
    return {"kind": "sersic", "n": round(float(n) * 20) / 20,
            "hlr": _loguniform(rng, *p.hlr_range) * hlr_scale, "flux": float(flux),
            "ellipticity": float(rng.uniform(0, p.max_ellipticity)), "pa": float(rng.uniform(0, 180)),
            "offset": [float(offset[0]), float(offset[1])],
            "colour": _colour(rng, p.colour, p.colour_scatter_dex)}


def _tail(rng: np.random.Generator, p: MockParams, flux: float, start, direction: float) -> dict[str, Any]:
    return {"kind": "tail", "start": [float(start[0]), float(start[1])], "direction": float(direction),
            "length": float(rng.uniform(0.8, 2.0)), "curvature": float(rng.choice([-1, 1]) * rng.uniform(30, 110)),
            "width": float(rng.uniform(0.06, 0.14)), "knots": 12, "fade": float(rng.uniform(0.3, 0.8)),
            "flux": float(flux), "colour": _colour(rng, p.young_colour, p.colour_scatter_dex)}


def mock_scene(rng: np.random.Generator, merger: bool, stage: str | None = None,
               p: MockParams = MockParams()) -> dict[str, Any]:
    """One random scene (JSON-able): a non-merger, a pre-merger or a post-merger (``stage`` pre/post/None)."""
    flux = _loguniform(rng, *p.flux_range)
    jitter = rng.normal(0, p.centre_jitter, 2)
    comps: list[dict[str, Any]] = []
    if not merger:
        main = _galaxy(rng, p, flux, jitter)
        comps.append(main)
        if rng.random() < p.clump_probability:
            for _ in range(int(rng.integers(1, 4))):
                r = rng.uniform(0.3, 1.2) * main["hlr"]
                a = rng.uniform(0, 2 * np.pi)
                comps.append({"kind": "sersic", "n": 0.5, "hlr": float(rng.uniform(0.03, 0.06)),
                              "flux": float(flux * rng.uniform(*p.clump_flux_fraction)), "ellipticity": 0.0,
                              "pa": 0.0, "offset": [float(jitter[0] + r * np.cos(a)), float(jitter[1] + r * np.sin(a))],
                              "colour": _colour(rng, p.young_colour, p.colour_scatter_dex)})
        if rng.random() < p.companion_probability:
            d, a = rng.uniform(*p.companion_distance), rng.uniform(0, 2 * np.pi)
            comps.append(_galaxy(rng, p, flux * rng.uniform(*p.companion_flux_ratio), (d * np.cos(a), d * np.sin(a)),
                                 hlr_scale=0.6))
        return {"label": 0, "stage": "none", "components": comps}
    stage = stage or ("post" if rng.random() < p.post_merger_fraction else "pre")
    if stage == "pre":
        sep, a = rng.uniform(*p.pair_separation), rng.uniform(0, 2 * np.pi)
        ratio = rng.uniform(*p.pair_flux_ratio)
        comps.append(_galaxy(rng, p, flux, jitter))
        other = (jitter[0] + sep * np.cos(a), jitter[1] + sep * np.sin(a))
        comps.append(_galaxy(rng, p, flux * ratio, other, hlr_scale=0.8))
        # tidal tails leave both galaxies roughly away from each other, plus sometimes a faint bridge
        for start, direction in ((jitter, np.degrees(a) + 180 + rng.normal(0, 40)),
                                 (other, np.degrees(a) + rng.normal(0, 40))):
            if rng.random() < 0.8:
                comps.append(_tail(rng, p, flux * rng.uniform(*p.tail_flux_fraction), start, direction))
        if rng.random() < 0.4:
            comps.append({**_tail(rng, p, flux * rng.uniform(0.02, 0.05), jitter, np.degrees(a)),
                          "length": float(sep), "curvature": float(rng.normal(0, 15))})
    else:
        comps.append(_galaxy(rng, p, flux, jitter, n=rng.uniform(1.5, 4.0)))
        if rng.random() < 0.6:  # an off-centre second nucleus or plume: the remnant is asymmetric
            r, a = rng.uniform(0.1, 0.35), rng.uniform(0, 2 * np.pi)
            comps.append(_galaxy(rng, p, flux * rng.uniform(*p.asymmetry_flux_fraction),
                                 (jitter[0] + r * np.cos(a), jitter[1] + r * np.sin(a)), hlr_scale=0.5))
        for _ in range(int(rng.integers(1, 3))):
            comps.append(_tail(rng, p, flux * rng.uniform(*p.tail_flux_fraction), jitter, rng.uniform(0, 360)))
        if rng.random() < p.shell_probability:
            base = rng.uniform(0, 360)
            for k in range(int(rng.integers(1, 3))):
                comps.append({"kind": "shell", "radius": float(rng.uniform(0.6, 1.6)),
                              "angle": float(base + 180 * k + rng.normal(0, 20)),
                              "opening": float(rng.uniform(60, 140)), "width": float(rng.uniform(0.05, 0.1)),
                              "centre": [float(jitter[0]), float(jitter[1])],
                              "flux": float(flux * rng.uniform(0.02, 0.06)),
                              "colour": _colour(rng, p.colour, p.colour_scatter_dex)})
    return {"label": 1, "stage": stage, "components": comps}


def _component_profile(c: dict[str, Any], band: str):
    from training import mock_galaxies as mg

    f = c["flux"] * c["colour"][band]
    if c["kind"] == "sersic":
        return mg.sersic(c["n"], c["hlr"], f, c["ellipticity"], c["pa"], tuple(c["offset"]))
    if c["kind"] == "tail":
        return mg.tidal_tail(tuple(c["start"]), c["direction"], c["length"], c["curvature"], f, width=c["width"],
                             knots=c["knots"], fade=c["fade"])
    if c["kind"] == "shell":
        return mg.shell(c["radius"], c["angle"], c["opening"], f, width=c["width"], centre=tuple(c["centre"]))
    raise ValueError(f"unknown component kind {c['kind']!r}")


def render_scene(scene: dict[str, Any], filters: Sequence[str], p: MockParams = MockParams(),
                 noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """A scene in each filter (its own PSF) -> float64 (C, size, size); Gaussian sky noise if ``noise_rng``."""
    import galsim

    from training import mock_galaxies as mg

    out = np.empty((len(filters), p.size, p.size), dtype=np.float64)
    for i, band in enumerate(filters):
        prof = galsim.Add([_component_profile(c, band) for c in scene["components"]], gsparams=mg.GSPARAMS)
        img = mg.draw(prof, p.size, p.pixel_scale, mg.make_psf(p.lookup(p.psf_fwhm, band)))
        if noise_rng is not None:
            img = mg.add_noise(img, noise_rng, sigma=p.lookup(p.noise_sigma, band))
        out[i] = img
    return out


def mock_labels(n: int, rng: np.random.Generator, merger_fraction: float = REAL_MERGER_FRACTION) -> np.ndarray:
    """``n`` labels (float64 0/1) with the real class balance, mergers first as in the HLSP row order."""
    n_merger = int(round(n * merger_fraction))
    return np.concatenate([np.ones(n_merger), np.zeros(n - n_merger)]).astype(np.float64)


def write_mock_hlsp(out_dir: str | Path, labels: np.ndarray | None = None, n: int | None = None,
                    n_filters: int = 2, variants: Sequence[str] = VARIANTS, formats: Sequence[str] = ("fits", "npy"),
                    seed: int = 0, params: MockParams = MockParams(), stages: Sequence[str] | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Write mock HLSP files (same names, HDU layout, column and dtypes as published) into ``out_dir``.

    ``labels``: the label vector to write (e.g. the real one from `real_label_vector`, or a slice of it); else
    ``n`` labels with the real class balance. ``stages`` ("pre"/"post"/"none" per row, e.g. `merger_stages`)
    picks the merger kind per row. Every variant renders the same scenes ("noisy" = "pristine" + sky noise,
    as in the HLSP). Returns the paths written and a description of the mock (parameters, counts, seed).
    """
    from tqdm.auto import tqdm

    from training import mock_galaxies as mg

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if labels is None:
        if not n or n < 2:
            raise StampflowError("give the labels to write or a number of mock images n >= 2")
        labels = mock_labels(int(n), rng)
    labels = np.asarray(labels, dtype=np.float64)
    y = labels_to_int(labels, "mock labels")
    if stages is not None and len(stages) != len(y):
        raise StampflowError(f"{len(stages)} merger stages for {len(y)} labels")
    for v in variants:
        if v not in VARIANTS:
            raise StampflowError(f"unknown variant '{v}' (pristine or noisy)")
    filters = filters_for(n_filters)
    scenes = [mock_scene(rng, bool(y[i]), None if stages is None or stages[i] == "none" else str(stages[i]), params)
              for i in range(len(y))]
    cubes = {v: np.empty((len(y), len(filters), params.size, params.size), dtype=np.float64) for v in variants}
    noise_rng = np.random.default_rng(rng.integers(2**63))
    for i in tqdm(range(len(y)), desc="deepmerge mocks", unit="img", disable=not progress):
        clean = render_scene(scenes[i], filters, params)
        for v in variants:
            if v == "pristine":
                cubes[v][i] = clean
            else:
                for j, band in enumerate(filters):
                    cubes[v][i, j] = mg.add_noise(clean[j], noise_rng, sigma=params.lookup(params.noise_sigma, band))
    written: dict[str, str] = {}
    for v in variants:
        if "fits" in formats:
            written[f"{v}.fits"] = str(_write_fits(out_dir / hlsp_filename(n_filters, v, "fits"), cubes[v], labels, v))
        if "npy" in formats:
            xp = out_dir / hlsp_filename(n_filters, v, "x")
            np.save(xp, cubes[v], allow_pickle=False)
            written[f"{v}-x.npy"] = str(xp)
    if "npy" in formats:
        yp = out_dir / hlsp_filename(n_filters, variants[0], "y")
        np.save(yp, labels, allow_pickle=False)
        written["labels-y.npy"] = str(yp)
    stage_arr = np.array([s["stage"] for s in scenes])
    description = {
        "generator": GENERATOR, "seed": int(seed), "n": int(len(y)),
        "filters": list(filters), "variants": list(variants), "formats": list(formats),
        "counts": {"merger": int(y.sum()), "non-merger": int(len(y) - y.sum()),
                   "pre-merger": int((stage_arr == "pre").sum()), "post-merger": int((stage_arr == "post").sum())},
        "params": params.as_dict(), "files": written,
    }
    (out_dir / "mock_description.json").write_text(json.dumps(description, indent=2))
    return description


def _write_fits(path: Path, images: np.ndarray, labels: np.ndarray, variant: str) -> Path:
    from astropy.io import fits

    primary = fits.PrimaryHDU(np.asarray(images, dtype=np.float64))
    primary.header["MOCK"] = (True, "stampflow mock, not the MAST HLSP images")
    primary.header["MOCKGEN"] = ("training.deepmerge.mocks", "GalSim mocks")
    primary.header["VARIANT"] = (variant, "pristine or noisy")
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name=LABEL_COLUMN, format="D", array=np.asarray(labels, dtype=np.float64))], name=LABEL_EXTNAME)
    table.header["EXTNAME"] = LABEL_EXTNAME  # astropy upper-cases ``name=``; keep the published spelling
    fits.HDUList([primary, table]).writeto(path, overwrite=True)
    return path
