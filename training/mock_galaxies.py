"""The one mock-galaxy renderer: GalSim drawing helpers for mock cutouts (where the real images are not available
here). The DeepMerge, morphology and spin mock writers all draw through it.

Stable API (other families import it; keep signatures backward compatible):

* `galsim_seed(rng) -> int`: a GalSim seed drawn from a numpy ``Generator``, so one numpy seed fixes a whole mock
  set (GalSim's own deviates are then seeded from it);
* `make_psf(fwhm, kind="gaussian", beta=3.0, spikes=0.0, spike_angle=0.0) -> galsim.GSObject`: Gaussian or
  Moffat PSF, FWHM in arcsec, optionally with four faint diffraction spikes (HST-like);
* `sersic(n, half_light_radius, flux=1, ellipticity=0, position_angle=0, offset=(0, 0), trunc=0)`: one Sérsic
  profile, optionally truncated (the radius and flux then describe the untruncated profile);
* `point_source(flux, offset)` and `knot(sigma, flux, offset, length, angle)`: a delta function and a round or
  elongated Gaussian (star-forming knots, clumps);
* `spiral_arms(scale_radius, n_arms, pitch, phase, flux, ...)`: logarithmic spiral arms on an exponential disk,
  as chains of Gaussian knots in the disk plane, projected like the disk;
* `bulge_disk(flux, bulge_fraction, bulge_hlr, disk_hlr, ...)`: de Vaucouleurs-like bulge + exponential disk;
* `tidal_tail(...)`: a curved chain of faint elongated knots (a tidal tail or stream), and `shell(...)`: a thin
  arc segment at a given radius, both built from GalSim profiles so they are PSF-convolved like the galaxy;
* `draw(profile, size, pixel_scale, psf=None) -> float32 (size, size)`: noiseless image in flux per pixel,
  centred on the stamp centre (odd and even sizes);
* `add_noise(image, rng, sigma=None, snr=None, sky=0.0) -> float32`: Gaussian sky noise, either a given
  per-pixel sigma or the sigma that gives the requested signal-to-noise ratio;
* `correlated_noise(shape, rng, sigma, kernel)`: Gaussian noise smoothed by a small kernel (drizzled mosaics),
  rescaled to per-pixel ``sigma`` (drawn from ``rng`` itself, so a mock's other draws keep their order);
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


def make_psf(fwhm: float, kind: str = "gaussian", beta: float = 3.0, spikes: float = 0.0,
             spike_angle: float = 0.0) -> galsim.GSObject:
    """A PSF of the given FWHM (arcsec): ``gaussian`` or ``moffat`` (with index ``beta``; 2.5-4.5 is typical).

    ``spikes`` > 0 puts that fraction of the light into four diffraction spikes (two crossing elongated Gaussians,
    0.35 FWHM wide and a few FWHM long, at ``spike_angle`` and 90 degrees from it), as the struts of HST's
    secondary mirror make; the total flux stays 1.
    """
    if fwhm <= 0:
        raise ValueError(f"PSF FWHM must be positive, got {fwhm}")
    if not 0.0 <= spikes < 1.0:
        raise ValueError(f"spike fraction must be in [0, 1), got {spikes}")
    if kind == "gaussian":
        core = galsim.Gaussian(fwhm=fwhm, gsparams=GSPARAMS)
    elif kind == "moffat":
        core = galsim.Moffat(beta=beta, fwhm=fwhm, gsparams=GSPARAMS)
    else:
        raise ValueError(f"unknown PSF kind '{kind}' (gaussian or moffat)")
    if not spikes:
        return core
    across, along = 0.35 * fwhm, 2.5 * fwhm
    arms = [galsim.Gaussian(sigma=math.sqrt(across * along), flux=spikes / 2, gsparams=GSPARAMS)
            .shear(q=across / along, beta=(spike_angle + 90.0 * k) * galsim.degrees) for k in (0, 1)]
    return galsim.Add([core.withFlux(1.0 - spikes), *arms], gsparams=GSPARAMS)


def _shape(profile: galsim.GSObject, ellipticity: float, position_angle: float) -> galsim.GSObject:
    if not 0.0 <= ellipticity < 1.0:
        raise ValueError(f"ellipticity (1 - b/a) must be in [0, 1), got {ellipticity}")
    if ellipticity > 0:
        profile = profile.shear(q=1.0 - ellipticity, beta=position_angle * galsim.degrees)
    return profile


def sersic(n: float, half_light_radius: float, flux: float = 1.0, ellipticity: float = 0.0,
           position_angle: float = 0.0, offset: Sequence[float] = (0.0, 0.0), trunc: float = 0.0) -> galsim.GSObject:
    """One Sérsic profile. ``n`` is clipped to GalSim's supported range [0.3, 6.2].

    ``trunc`` > 0 sets the profile to zero beyond that radius (arcsec, before shearing); ``half_light_radius``
    and ``flux`` then describe the untruncated profile, so truncation only removes the far wings. Large-n
    profiles bigger than their stamp need it: their untruncated wings ask for huge FFTs.
    """
    if half_light_radius <= 0:
        raise ValueError(f"half-light radius must be positive, got {half_light_radius}")
    n = float(np.clip(n, *SERSIC_N_RANGE))
    if trunc > 0:
        prof = galsim.Sersic(n=n, half_light_radius=half_light_radius, flux=flux, trunc=trunc,
                             flux_untruncated=True, gsparams=GSPARAMS)
    else:
        prof = galsim.Sersic(n=n, half_light_radius=half_light_radius, flux=flux, gsparams=GSPARAMS)
    prof = _shape(prof, ellipticity, position_angle)
    dx, dy = offset
    return prof.shift(dx, dy) if (dx or dy) else prof


def point_source(flux: float = 1.0, offset: Sequence[float] = (0.0, 0.0)) -> galsim.GSObject:
    """An unresolved source: all its light at one point (the PSF it is convolved with gives its shape)."""
    prof = galsim.DeltaFunction(flux=flux, gsparams=GSPARAMS)
    dx, dy = offset
    return prof.shift(dx, dy) if (dx or dy) else prof


def knot(sigma: float, flux: float = 1.0, offset: Sequence[float] = (0.0, 0.0), length: float = 0.0,
         angle: float = 0.0) -> galsim.GSObject:
    """A Gaussian knot of width ``sigma`` (arcsec); ``length`` > ``sigma`` stretches it to that length along
    ``angle`` (degrees), keeping the width across."""
    if sigma <= 0:
        raise ValueError(f"knot sigma must be positive, got {sigma}")
    if length > sigma:
        blob = galsim.Gaussian(sigma=math.sqrt(sigma * length), flux=flux, gsparams=GSPARAMS)
        blob = blob.shear(q=max(sigma / length, 0.01), beta=angle * galsim.degrees)
    else:
        blob = galsim.Gaussian(sigma=sigma, flux=flux, gsparams=GSPARAMS)
    dx, dy = offset
    return blob.shift(dx, dy) if (dx or dy) else blob


def spiral_arms(scale_radius: float, n_arms: int, pitch: float, phase: float, flux: float,
                axis_ratio: float = 1.0, position_angle: float = 0.0, offset: Sequence[float] = (0.0, 0.0),
                radii: tuple[float, float] = (0.3, 3.0), knots: int = 8, width: float = 0.2) -> galsim.GSObject:
    """Logarithmic spiral arms on an exponential disk of ``scale_radius`` (arcsec), total flux ``flux``.

    Arm ``k`` follows ``theta = ln(r / scale_radius) / tan(pitch) + (2 pi k - phase) / n_arms`` (angles in
    radians, ``pitch`` the pitch angle) in the disk plane, from ``radii[0]`` to ``radii[1]`` scale radii. Each arm
    is ``knots`` Gaussians, log-spaced in radius, each as bright as the disk's light in its annulus
    (``r^2 exp(-r / scale_radius)`` per log radius), ``width`` x r wide and stretched along the arm. The disk plane
    is then projected like the disk (``axis_ratio``: minor / major, ``position_angle`` in degrees) and shifted by
    ``offset``.
    """
    if n_arms < 1 or knots < 2 or scale_radius <= 0 or not 0 < pitch < math.pi / 2:
        raise ValueError("spiral arms need n_arms >= 1, knots >= 2, scale_radius > 0 and 0 < pitch < pi/2")
    r = scale_radius * np.exp(np.linspace(math.log(radii[0]), math.log(radii[1]), knots))
    weight = (r / scale_radius) ** 2 * np.exp(-r / scale_radius)
    weight = weight / (weight.sum() * n_arms) * flux
    step = r * (math.log(radii[1] / radii[0]) / (knots - 1)) / math.sin(pitch)  # arc length between knots
    cos_pa, sin_pa = math.cos(math.radians(position_angle)), math.sin(math.radians(position_angle))
    parts = []
    for k in range(n_arms):
        theta = np.log(r / scale_radius) / math.tan(pitch) + (2 * math.pi * k - phase) / n_arms
        heading = theta + math.pi / 2 - pitch  # the arm's local direction in the disk plane
        for rj, tj, hj, wj, sj in zip(r, theta, heading, weight, step):
            # disk plane -> sky: squash the minor axis by axis_ratio, then rotate by the position angle
            u, v = rj * math.cos(tj), rj * math.sin(tj) * axis_ratio
            du, dv = math.cos(hj), math.sin(hj) * axis_ratio
            x, y = u * cos_pa - v * sin_pa, u * sin_pa + v * cos_pa
            angle = math.degrees(math.atan2(du * sin_pa + dv * cos_pa, du * cos_pa - dv * sin_pa))
            parts.append(knot(width * rj, float(wj), (x + offset[0], y + offset[1]), length=float(sj),
                              angle=angle))
    return galsim.Add(parts, gsparams=GSPARAMS)


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


def correlated_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float,
                     kernel: np.ndarray) -> np.ndarray:
    """White Gaussian noise drawn from ``rng`` itself (one normal deviate per pixel, in order), smoothed by
    ``kernel`` with wrap-around edges and rescaled to per-pixel ``sigma``: the pixel-to-pixel correlation of
    drizzled mosaics. float64 (H, W)."""
    from scipy import ndimage

    kernel = np.asarray(kernel, dtype=np.float64)
    white = rng.normal(0.0, 1.0, shape)
    return sigma * ndimage.convolve(white, kernel, mode="wrap") / math.sqrt(float((kernel ** 2).sum()))


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
