"""SDSS spin mock sets: GalSim bulge + disc galaxies as colour stamps, with a documented mock lambda_R.

Mocks (`write_mock_spin_set`): bulge (de Vaucouleurs) + disc (exponential, intrinsic thickness q0) galaxies in
g, r, i with redder bulges and bluer discs, a Gaussian PSF and sky noise, combined with astropy's Lupton asinh
RGB and saved as JPEG (or PNG). Stamps span 8.48 R_e like sdss_CNN's. The mock lambda_R is a made-up function
of what the image shows -- NOT a dynamical model:

    lambda_int = 0.08 + 0.62 * (1 - B/T) ** 1.3          (disc-dominated rotate, spheroids do not)
    lambda_R   = lambda_int * (0.2 + 0.8 * sin i) + N(0, 0.03), clipped to [0.01, 0.85]

so flattened, inclined, disc-dominated (bluer) galaxies get high lambda_R and round bulge-dominated (redder) ones
low, with scatter. It exercises formats and the pipeline; accuracy on it says nothing about MaNGA.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import StampflowError
from training.spin.data import CATALOGUE_NAME

# Names the code that wrote a mock set, in its mock_description.json.
GENERATOR = "training.spin.mocks.write_mock_spin_set (GalSim)"


@dataclass(frozen=True)
class SpinMockParams:
    """Mock SDSS-like stamps (all lengths in units of the galaxy's half-light radius R_e)."""

    size: int = 120                      # pixels across; the stamp spans `extent` R_e like sdss_CNN's cut-outs
    extent: float = 8.48
    psf_fwhm_re: tuple[float, float] = (0.15, 0.6)   # SDSS seeing ~1.4" over R_e of ~2-10"
    disc_q0: float = 0.2                 # intrinsic disc thickness (edge-on axis ratio)
    bulge_hlr_ratio: tuple[float, float] = (0.2, 0.5)  # bulge R_e / disc R_e
    snr: tuple[float, float] = (150.0, 1000.0)   # r-band matched-filter S/N, log-uniform (MaNGA targets are bright)
    bulge_colour: tuple[float, float, float] = (0.45, 1.0, 1.35)  # g, r, i flux relative to r (red)
    disc_colour: tuple[float, float, float] = (0.95, 1.0, 0.95)    # bluer
    slow_rotator_fraction: float = 0.15  # pure spheroids
    lambda_scatter: float = 0.03
    rgb_stretch: float = 0.5             # astropy make_lupton_rgb stretch, in units of the image peak / 10
    rgb_q: float = 8.0
    jpeg_quality: int = 92

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mock_lambda_r(bulge_fraction: float, sin_i: float, rng: np.random.Generator, p: SpinMockParams) -> float:
    """The documented mock mapping from B/T and inclination to lambda_R (module docstring)."""
    lam = (0.08 + 0.62 * (1.0 - bulge_fraction) ** 1.3) * (0.2 + 0.8 * sin_i) + rng.normal(0, p.lambda_scatter)
    return float(np.clip(lam, 0.01, 0.85))


def mock_galaxy(rng: np.random.Generator, p: SpinMockParams = SpinMockParams()) -> dict[str, Any]:
    """A random bulge + disc galaxy, its inclination and its mock lambda_R (JSON-able)."""
    bt = 1.0 if rng.random() < p.slow_rotator_fraction else float(rng.beta(1.2, 2.0))
    cos_i = float(rng.uniform(0, 1))
    sin_i = math.sqrt(1 - cos_i ** 2)
    q = math.sqrt(cos_i ** 2 * (1 - p.disc_q0 ** 2) + p.disc_q0 ** 2)   # projected thin-disc axis ratio
    return {"bulge_fraction": bt, "sin_i": sin_i, "disc_ellipticity": 1 - q,
            "bulge_ellipticity": float(0.3 * (1 - q) + rng.uniform(0, 0.1)),
            "bulge_hlr_ratio": float(rng.uniform(*p.bulge_hlr_ratio)), "position_angle": float(rng.uniform(0, 180)),
            "psf_fwhm_re": float(rng.uniform(*p.psf_fwhm_re)),
            "snr": float(np.exp(rng.uniform(*np.log(p.snr)))),
            "lambda_R": mock_lambda_r(bt, sin_i, rng, p)}


def render_rgb(g: dict[str, Any], rng: np.random.Generator, p: SpinMockParams = SpinMockParams()) -> np.ndarray:
    """The galaxy in g, r, i with PSF and noise, as an SDSS-style (H, W, 3) uint8 colour image (R=i, G=r, B=g)."""
    from astropy.visualization import make_lupton_rgb

    from training import mock_galaxies as mg

    scale = p.extent / p.size  # R_e per pixel; the galaxy's half-light radius is 1 in these units
    psf = mg.make_psf(g["psf_fwhm_re"], "moffat", beta=3.0)
    # the disc's hlr is set so that bulge+disc has R_e ~ 1 whatever B/T (bulges are more compact)
    disc_hlr = 1.0 / (1 - g["bulge_fraction"] * (1 - g["bulge_hlr_ratio"])) if g["bulge_fraction"] < 1 else 1.0
    bulge_hlr = disc_hlr * g["bulge_hlr_ratio"] if g["bulge_fraction"] < 1 else 1.0
    clean = {}
    for k, band in enumerate(("g", "r", "i")):
        fb, fd = p.bulge_colour[k] * g["bulge_fraction"], p.disc_colour[k] * (1 - g["bulge_fraction"])
        total = fb + fd
        prof = mg.bulge_disk(100.0 * total, fb / total, bulge_hlr, disc_hlr, disk_ellipticity=g["disc_ellipticity"],
                             bulge_ellipticity=g["bulge_ellipticity"], position_angle=g["position_angle"])
        clean[band] = mg.draw(prof, p.size, scale, psf)
    # one sky sigma for all bands, set by the r-band S/N
    sigma = mg.noise_sigma_for_snr(clean["r"], g["snr"])
    bands = {band: mg.add_noise(img, rng, sigma=sigma) for band, img in clean.items()}
    peak = max(float(np.percentile(bands["r"], 99.9)), 1e-6)
    rgb = make_lupton_rgb(bands["i"], bands["r"], bands["g"], minimum=0.0, stretch=p.rgb_stretch * peak / 10,
                          Q=p.rgb_q)
    return np.asarray(rgb, dtype=np.uint8)


def write_mock_spin_set(out_dir: str | Path, n: int, seed: int = 0, params: SpinMockParams = SpinMockParams(),
                        image_format: str = "jpg", id_column: str = "filename", progress: bool = False) -> dict:
    """Write ``n`` mock stamps and ``lambda_R.csv`` (columns ``<id_column>,lambda_R``) into ``out_dir``.

    ``id_column`` "filename" writes file names; "plateifu" (or another ID column) writes bare IDs so the reader
    finds ``<id>.<ext>`` itself. Returns the mock description (also written to mock_description.json).
    """
    from PIL import Image
    from tqdm.auto import tqdm

    if image_format not in ("jpg", "png"):
        raise StampflowError(f"image format {image_format}: jpg or png")
    if n < 1:
        raise StampflowError("write at least one mock stamp")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, gals = [], []
    for k in tqdm(range(n), desc="spin mocks", unit="img", disable=not progress):
        gal = mock_galaxy(rng, params)
        rgb = render_rgb(gal, rng, params)
        ident = f"mock-{k:05d}"
        fname = f"images/{ident}.{image_format}"
        im = Image.fromarray(rgb, "RGB")
        if image_format == "jpg":
            im.save(out / fname, quality=params.jpeg_quality)
        else:
            im.save(out / fname)
        rows.append((fname if id_column == "filename" else ident, f"{gal['lambda_R']:.5f}"))
        gals.append(gal)
    with open(out / CATALOGUE_NAME, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([id_column, "lambda_R"])
        w.writerows(rows)
    lam = np.array([g["lambda_R"] for g in gals])
    desc = {"generator": GENERATOR, "seed": int(seed), "n": int(n),
            "image_format": image_format, "id_column": id_column, "params": params.as_dict(),
            "lambda_R_mapping": "lambda_R = (0.08 + 0.62 (1 - B/T)^1.3) (0.2 + 0.8 sin i) + N(0, "
                                f"{params.lambda_scatter}), clipped to [0.01, 0.85]",
            "lambda_R_stats": {"mean": float(lam.mean()), "std": float(lam.std()), "min": float(lam.min()),
                               "max": float(lam.max())}}
    (out / "mock_description.json").write_text(json.dumps(desc, indent=2))
    return desc
