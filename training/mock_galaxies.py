"""GalSim drawing helpers for mock galaxy cutouts (used where the real images are not available here).

Stable API (other families import it; keep signatures backward compatible):

* `galsim_seed(rng) -> int`: a GalSim seed drawn from a numpy ``Generator``, so one numpy seed fixes a whole mock
  set (GalSim's own deviates are then seeded from it);
* `make_psf(fwhm, kind="gaussian", beta=3.0) -> galsim.GSObject`: Gaussian or Moffat PSF, FWHM in arcsec;
* `sersic(n, half_light_radius, flux=1, ellipticity=0, position_angle=0, offset=(0, 0))`: one Sérsic profile;
* `bulge_disk(flux, bulge_fraction, bulge_hlr, disk_hlr, ...)`: de Vaucouleurs-like bulge + exponential disk;
* `tidal_tail(...)`: a curved chain of faint elongated knots (a tidal tail or stream), and `shell(...)`: a thin
  arc segment at a given radius, both built from GalSim profiles so they are PSF-convolved like the galaxy;
* `draw(profile, size, pixel_scale, psf=None) -> float32 (size, size)`: noiseless image in flux per pixel,
  centred on the stamp centre (odd and even sizes);
* `add_noise(image, rng, sigma=None, snr=None, sky=0.0) -> float32`: Gaussian sky noise, either a given
  per-pixel sigma or the sigma that gives the requested signal-to-noise ratio;
* `draw_sersic(...)`: the common one-liner (Sérsic + PSF + optional noise) returning float32 (H, W).

Conventions: lengths are in arcsec, angles in degrees counter-clockwise from the +x axis (the image columns),
``ellipticity`` is ``1 - b/a`` (0 = round, 0.9 = very flat), ``offset`` is (dx, dy) in arcsec from the stamp
centre, ``flux`` is the total flux (sum over all pixels of an untruncated stamp). The SNR definition is
GalSim's (``addNoiseSNR``): ``snr = sqrt(sum(I_i^2)) / sigma``, i.e. the optimal (matched-filter) S/N of
the whole object.

Speed: GalSim builds (and caches) a lookup table per Sérsic index, so a mock set drawing thousands of galaxies
should put ``n`` on a coarse grid (e.g. multiples of 0.05): about 3x faster than a new continuous n each time.
"""
from __future__ import annotations

import math
from typing import Sequence

import galsim
import numpy as np

# Sérsic indices outside this range are refused by GalSim's Sersic class.
SERSIC_N_RANGE = (0.3, 6.2)

# Large-n Sérsic profiles convolved with a small PSF can ask for huge FFTs; these stamps are small (< ~150 px),
# so cap the FFT and fold the profile a little earlier instead of failing.
GSPARAMS = galsim.GSParams(maximum_fft_size=8192, folding_threshold=5e-3)


def galsim_seed(rng: np.random.Generator) -> int:
    """A positive 31-bit seed for ``galsim.BaseDeviate`` drawn from ``rng`` (0 would mean 'seed from time')."""
    return int(rng.integers(1, 2**31 - 1))


def make_psf(fwhm: float, kind: str = "gaussian", beta: float = 3.0) -> galsim.GSObject:
    """A PSF of the given FWHM (arcsec): ``gaussian`` or ``moffat`` (with index ``beta``; 2.5-4.5 is typical)."""
    if fwhm <= 0:
        raise ValueError(f"PSF FWHM must be positive, got {fwhm}")
    if kind == "gaussian":
        return galsim.Gaussian(fwhm=fwhm, gsparams=GSPARAMS)
    if kind == "moffat":
        return galsim.Moffat(beta=beta, fwhm=fwhm, gsparams=GSPARAMS)
    raise ValueError(f"unknown PSF kind '{kind}' (gaussian or moffat)")


def _shape(profile: galsim.GSObject, ellipticity: float, position_angle: float) -> galsim.GSObject:
    if not 0.0 <= ellipticity < 1.0:
        raise ValueError(f"ellipticity (1 - b/a) must be in [0, 1), got {ellipticity}")
    if ellipticity > 0:
        profile = profile.shear(q=1.0 - ellipticity, beta=position_angle * galsim.degrees)
    return profile


def sersic(n: float, half_light_radius: float, flux: float = 1.0, ellipticity: float = 0.0,
           position_angle: float = 0.0, offset: Sequence[float] = (0.0, 0.0)) -> galsim.GSObject:
    """One Sérsic profile. ``n`` is clipped to GalSim's supported range [0.3, 6.2]."""
    if half_light_radius <= 0:
        raise ValueError(f"half-light radius must be positive, got {half_light_radius}")
    n = float(np.clip(n, *SERSIC_N_RANGE))
    prof = galsim.Sersic(n=n, half_light_radius=half_light_radius, flux=flux, gsparams=GSPARAMS)
    prof = _shape(prof, ellipticity, position_angle)
    dx, dy = offset
    return prof.shift(dx, dy) if (dx or dy) else prof


def bulge_disk(flux: float, bulge_fraction: float, bulge_hlr: float, disk_hlr: float,
               disk_ellipticity: float = 0.0, bulge_ellipticity: float = 0.0, position_angle: float = 0.0,
               offset: Sequence[float] = (0.0, 0.0), bulge_n: float = 4.0, disk_n: float = 1.0) -> galsim.GSObject:
    """Bulge (Sérsic ``bulge_n``, default de Vaucouleurs) + disk (``disk_n``, default exponential), same centre
    and position angle; ``bulge_fraction`` is B/T in [0, 1]."""
    if not 0.0 <= bulge_fraction <= 1.0:
        raise ValueError(f"bulge fraction must be in [0, 1], got {bulge_fraction}")
    parts = []
    if bulge_fraction > 0:
        parts.append(sersic(bulge_n, bulge_hlr, flux * bulge_fraction, bulge_ellipticity, position_angle))
    if bulge_fraction < 1:
        parts.append(sersic(disk_n, disk_hlr, flux * (1.0 - bulge_fraction), disk_ellipticity, position_angle))
    prof = parts[0] if len(parts) == 1 else galsim.Add(parts, gsparams=GSPARAMS)
    dx, dy = offset
    return prof.shift(dx, dy) if (dx or dy) else prof


def tidal_tail(start: Sequence[float], direction_deg: float, length: float, curvature_deg: float, flux: float,
               width: float = 0.15, knots: int = 10, fade: float = 0.7) -> galsim.GSObject:
    """A curved tail starting at ``start`` (arcsec from the centre) heading along ``direction_deg``.

    The tail is ``knots`` elongated Gaussians along a circular arc of total turning angle ``curvature_deg`` and
    arc length ``length`` (arcsec). Knot fluxes fall geometrically (``fade`` = brightness of the last knot
    relative to the first) and sum to ``flux``; each knot is stretched along the local direction so the chain
    reads as a continuous stream once convolved with the PSF.
    """
    if knots < 1 or length <= 0 or width <= 0:
        raise ValueError("a tail needs knots >= 1, length > 0 and width > 0")
    step = length / knots
    weights = fade ** (np.arange(knots) / max(knots - 1, 1))
    weights = weights / weights.sum() * flux
    x, y = float(start[0]), float(start[1])
    heading = math.radians(direction_deg)
    turn = math.radians(curvature_deg) / knots
    parts = []
    for w in weights:
        heading += turn
        x += step * math.cos(heading)
        y += step * math.sin(heading)
        stretch = max(step * 1.2, width * 1.01)
        blob = galsim.Gaussian(sigma=width, flux=float(w), gsparams=GSPARAMS)
        blob = blob.shear(q=min(width / stretch, 0.99), beta=heading * galsim.radians)
        parts.append(blob.shift(x, y))
    return parts[0] if len(parts) == 1 else galsim.Add(parts, gsparams=GSPARAMS)


def shell(radius: float, centre_angle_deg: float, opening_deg: float, flux: float, width: float = 0.1,
          knots: int = 12, centre: Sequence[float] = (0.0, 0.0)) -> galsim.GSObject:
    """A thin arc (a tidal shell) of ``radius`` around ``centre`` spanning ``opening_deg`` about
    ``centre_angle_deg``, as ``knots`` Gaussians elongated tangentially; total flux ``flux``."""
    if knots < 1 or radius <= 0 or width <= 0:
        raise ValueError("a shell needs knots >= 1, radius > 0 and width > 0")
    angles = np.radians(centre_angle_deg + np.linspace(-opening_deg / 2, opening_deg / 2, knots))
    arc_step = radius * math.radians(opening_deg) / max(knots - 1, 1)
    stretch = max(arc_step * 1.3, width * 1.01)
    parts = []
    for a in angles:
        blob = galsim.Gaussian(sigma=width, flux=flux / knots, gsparams=GSPARAMS)
        blob = blob.shear(q=min(width / stretch, 0.99), beta=(a + math.pi / 2) * galsim.radians)
        parts.append(blob.shift(centre[0] + radius * math.cos(a), centre[1] + radius * math.sin(a)))
    return parts[0] if len(parts) == 1 else galsim.Add(parts, gsparams=GSPARAMS)


def draw(profile: galsim.GSObject, size: int | tuple[int, int], pixel_scale: float,
         psf: galsim.GSObject | None = None) -> np.ndarray:
    """Noiseless image (flux per pixel, pixel response included) as float32 (H, W).

    The profile's origin is the stamp's true centre (between pixels for even sizes), so a centred galaxy stays
    centred after any centre crop.
    """
    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    if pixel_scale <= 0 or h <= 0 or w <= 0:
        raise ValueError("stamp size and pixel scale must be positive")
    obj = galsim.Convolve([profile, psf], gsparams=GSPARAMS) if psf is not None else profile
    image = galsim.ImageF(int(w), int(h), scale=float(pixel_scale))
    obj.drawImage(image=image, method="auto")
    return np.ascontiguousarray(image.array, dtype=np.float32)


def noise_sigma_for_snr(image: np.ndarray, snr: float) -> float:
    """Per-pixel Gaussian sigma that gives ``image`` the optimal S/N ``snr`` (GalSim's definition)."""
    if snr <= 0:
        raise ValueError(f"SNR must be positive, got {snr}")
    return float(np.sqrt(np.sum(np.asarray(image, dtype=np.float64) ** 2)) / snr)


def add_noise(image: np.ndarray, rng: np.random.Generator, sigma: float | None = None, snr: float | None = None,
              sky: float = 0.0) -> np.ndarray:
    """``image`` + ``sky`` + Gaussian noise (GalSim deviate seeded from ``rng``); exactly one of ``sigma`` (per
    pixel) or ``snr`` (of the noiseless image, see `noise_sigma_for_snr`). Returns a new float32 array."""
    if (sigma is None) == (snr is None):
        raise ValueError("give exactly one of sigma or snr")
    if snr is not None:
        sigma = noise_sigma_for_snr(image, snr)
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    img = galsim.ImageF(np.array(image, dtype=np.float32, copy=True) + np.float32(sky))
    if sigma > 0:
        img.addNoise(galsim.GaussianNoise(galsim.BaseDeviate(galsim_seed(rng)), sigma=float(sigma)))
    return np.ascontiguousarray(img.array, dtype=np.float32)


def draw_sersic(size: int, pixel_scale: float, n: float, half_light_radius: float, flux: float = 1.0,
                ellipticity: float = 0.0, position_angle: float = 0.0, offset: Sequence[float] = (0.0, 0.0),
                psf_fwhm: float | None = None, psf_kind: str = "gaussian", psf_beta: float = 3.0,
                noise_sigma: float | None = None, snr: float | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """One PSF-convolved Sérsic galaxy, optionally with Gaussian noise; float32 (size, size).

    Noise needs ``rng`` (a numpy Generator) so the draw is reproducible.
    """
    prof = sersic(n, half_light_radius, flux, ellipticity, position_angle, offset)
    psf = make_psf(psf_fwhm, psf_kind, psf_beta) if psf_fwhm else None
    img = draw(prof, size, pixel_scale, psf)
    if noise_sigma is not None or snr is not None:
        if rng is None:
            raise ValueError("noise needs a numpy Generator (rng) for reproducibility")
        img = add_noise(img, rng, sigma=noise_sigma, snr=snr)
    return img
