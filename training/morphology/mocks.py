"""Mock CANDELS / CLASH galaxies: one stamp per real label row, drawn to match the row's vote fractions.

What the mocks are: for every real label row, a stamp whose morphology is a mixture of templates weighted by
that row's vote fractions -- a Sérsic n~2-4.5 spheroid (smooth), an exponential disk with logarithmic spiral arms
and star-forming knots (features), a few bright off-centre clumps on an asymmetric diffuse body (irregular), a
point source (point source) -- convolved with the filter's PSF (Moffat with diffraction spikes), on sky with
correlated Gaussian noise; the unclassifiable fraction lowers the S/N and, with that probability, adds an artefact
(mosaic edge, bright star, satellite trail, or nothing at all). The dominant class therefore dominates the picture
and the minor fractions are visible as minor components, so the fractions can be regressed. Every light profile
is drawn by GalSim through `training.mock_galaxies`, the project's one mock-galaxy renderer.

What they are not: real galaxies. Colours, the morphology-redshift mix, lensing arcs, cluster light, real PSFs
and drizzle artefacts are absent, so scores on mocks say the pipeline works, not how well the real morphologies
would be recovered. The files (FITS layout, headers, the writers) are `training.morphology.mock_files`.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Approximate cluster centres (deg, J2000; good to about an arcminute), used only to place mock stamps.
CLASH_CLUSTERS: dict[str, tuple[float, float]] = {
    "a209": (22.969, -13.611), "a383": (42.014, -3.529), "a611": (120.2367, 36.0566), "a1423": (179.322, 33.611),
    "a2261": (260.613, 32.133), "clj1226": (186.713, 33.547), "macs0329": (52.423, -2.196),
    "macs0416": (64.038, -24.067), "macs0429": (67.400, -2.885), "macs0647": (101.953, 70.248),
    "macs0717": (109.398, 37.745), "macs0744": (116.220, 39.457), "macs1115": (168.966, 1.499),
    "macs1149": (177.399, 22.398), "macs1206": (181.551, -8.801), "macs1311": (197.757, -3.178),
    "macs1423": (215.949, 24.078), "macs1720": (260.070, 35.607), "macs1931": (292.957, -26.576),
    "macs2129": (322.359, -7.691), "ms2137": (325.063, -23.661), "rxj1347": (206.878, -11.753),
    "rxj1532": (233.224, 30.350), "rxj2129": (322.417, 0.089), "rxj2248": (342.183, -44.531),
}
GOODS_S_CENTRE = (53.1228, -27.8050)

# Per filter: PSF FWHM (arcsec), relative depth (multiplies the galaxy's S/N: the UV images are shallower; the
# labels already say how often a galaxy was unclassifiable there, which lowers S/N further), pivot wavelength
# (Angstrom, header PHOTPLAM).
FILTER_PROPS: dict[str, tuple[float, float, float]] = {
    "F225W": (0.085, 0.45, 2372.0), "F275W": (0.085, 0.5, 2710.0), "F336W": (0.085, 0.55, 3355.0),
    "F390W": (0.085, 0.75, 3924.0), "F435W": (0.10, 0.8, 4330.0), "F475W": (0.10, 0.9, 4747.0),
    "F606W": (0.10, 1.0, 5922.0), "F625W": (0.10, 0.95, 6311.0), "F775W": (0.105, 0.9, 7693.0),
    "F814W": (0.11, 1.0, 8057.0), "F850LP": (0.115, 0.75, 9033.0), "F105W": (0.14, 0.9, 10552.0),
    "F110W": (0.145, 1.0, 11534.0), "F125W": (0.15, 0.9, 12486.0), "F140W": (0.16, 0.9, 13923.0),
    "F160W": (0.175, 1.0, 15369.0),
}

# Sky level and per-pixel noise of the published a611 F475W stamp (edge median and 1.4826 * MAD).
CLASH_SKY, CLASH_NOISE = 0.050, 0.0154
# HLF mosaics are sky-subtracted; the noise level only sets the units, the asinh recipe divides it out.
CANDELS_SKY, CANDELS_NOISE = 0.0, 0.004


def stamp_seed(*parts: Any) -> int:
    """A 64-bit seed from the mock seed and an ID: each stamp is drawn the same way whatever else is drawn."""
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


@dataclass
class GalaxyShape:
    """Everything about one mock galaxy that does not depend on the filter."""

    size: int                 # stamp side (native pixels) = 4 Petrosian radii
    centre: tuple[float, float]
    pa: float                 # radians
    q_sph: float
    n_sph: float
    q_disk: float
    arm_pitch: float          # radians
    arm_phase: float
    n_arms: int
    knots: np.ndarray         # (k, 4): radius (Rp units), angle offset, sigma (Rp units), arm, in the disk plane
    clumps: np.ndarray        # (m, 4): x, y, sigma (Rp units), weight
    diffuse: tuple[float, float, float, float]  # x, y (Rp units), q, pa of the irregular body
    neighbour: tuple[float, float, float, float, float] | None  # x, y (Rp), r_e (Rp), n, flux ratio
    snr: float                # matched-filter S/N of the galaxy in a depth-1 filter
    sky_offset: float
    ps_offset: tuple[float, float]
    spike_angle: float
    # Light profile scale / the stamp's Petrosian radius. The published a611 stamp (100% smooth) has a
    # half-light radius of 0.19 stamp sides and a concentration 5 log(r80/r20) of 2.6 (sky from the stamp
    # edges); Sérsic n = 3-5 profiles scaled by Petrosian theory alone (r_e = Rp / 1.75) gave 0.09-0.11 and
    # 3.6: the galaxies fill their stamps more than the catalogue radius implies. Scaling every profile by a
    # median 2 (with a spread: one galaxy is all we have to calibrate on) and n = 2-4.5 gives 0.14-0.16 and ~3.1.
    extent: float = 1.0


def draw_shape(rng: np.random.Generator, fractions: np.ndarray, pixel_scale: float,
               detection_fwhm: float) -> GalaxyShape:
    """Filter-independent parameters of one galaxy whose (mean) vote fractions are ``fractions``."""
    point_like = fractions[3] >= max(fractions[:3].max(), 0.5 * fractions.max())
    if point_like:
        # The Petrosian radius of an unresolved source is about the PSF FWHM.
        rp_arcsec = detection_fwhm * rng.uniform(1.0, 1.6)
    else:
        rp_arcsec = float(np.exp(rng.normal(math.log(0.75), 0.4)))
    size = int(np.clip(round(4 * rp_arcsec / pixel_scale), 20, 160))
    k = int(rng.integers(6, 14))
    n_arms = int(rng.choice([2, 2, 2, 3]))
    knots = np.column_stack([rng.uniform(0.15, 0.85, k), rng.normal(0, 0.25, k), rng.uniform(0.04, 0.09, k),
                             rng.integers(0, n_arms, k)])
    m = int(rng.integers(3, 7))
    rad = 0.7 * np.sqrt(rng.uniform(0, 1, m))
    ang = rng.uniform(0, 2 * np.pi, m)
    clumps = np.column_stack([rad * np.cos(ang), rad * np.sin(ang), rng.uniform(0.1, 0.3, m),
                              rng.dirichlet(np.full(m, 0.8))])
    neighbour = None
    if rng.random() < 0.25:
        r, a = rng.uniform(1.3, 1.9), rng.uniform(0, 2 * np.pi)
        neighbour = (r * math.cos(a), r * math.sin(a), rng.uniform(0.1, 0.3), float(rng.choice([1.0, 2.0, 4.0])),
                     rng.uniform(0.05, 0.5))
    return GalaxyShape(
        size=size, centre=tuple(rng.uniform(-0.7, 0.7, 2)), pa=rng.uniform(0, np.pi), q_sph=rng.uniform(0.6, 1.0),
        n_sph=rng.uniform(2.0, 4.5), q_disk=rng.uniform(0.3, 1.0), arm_pitch=math.radians(rng.uniform(12, 30)),
        arm_phase=rng.uniform(0, 2 * np.pi), n_arms=n_arms, knots=knots, clumps=clumps,
        diffuse=(rng.normal(0, 0.15), rng.normal(0, 0.15), rng.uniform(0.35, 0.8), rng.uniform(0, np.pi)),
        neighbour=neighbour, snr=float(np.clip(np.exp(rng.normal(math.log(150), 0.6)), 30, 1500)),
        sky_offset=rng.normal(0, 0.1), ps_offset=tuple(rng.uniform(-0.3, 0.3, 2)),
        spike_angle=rng.uniform(0, np.pi / 2), extent=float(np.clip(np.exp(rng.normal(math.log(2.0), 0.2)), 1.2, 3)))


# Drizzled mosaics have pixel-correlated noise: white noise smoothed by this kernel (its sigma kept).
DRIZZLE_KERNEL = np.array([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]])
PSF_SPIKES = 0.02  # fraction of a point source's light in its four diffraction spikes


def component_weights(fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light shares of the spheroid, disk, irregular and point-source templates: the first four fractions to the
    power 1.5, so the dominant class dominates the light and minor classes stay visible."""
    w = np.asarray(fractions[:4], dtype=np.float64) ** 1.5
    if w.sum() <= 0:  # an all-unclassifiable row: some faint, undefined blob
        w = rng.dirichlet(np.ones(4)) * np.array([1, 1, 1, 0.2])
    return w / w.sum()


def galaxy_profile(shape: GalaxyShape, w: np.ndarray, pixel_scale: float):
    """The galaxy (before the PSF) as one GalSim profile, lengths in arcsec, total light ~1 plus the neighbour's.

    ``rp`` is the Petrosian radius (a quarter of the stamp), ``gs`` the galaxy's own profile scale (rp x extent).
    Large profiles are truncated at the stamp's corners: the light beyond them is not in the stamp anyway.
    """
    import galsim

    from training import mock_galaxies as mg

    rp = shape.size / 4.0 * pixel_scale
    gs = rp * shape.extent
    cx, cy = shape.centre[0] * pixel_scale, shape.centre[1] * pixel_scale
    pa_deg = math.degrees(shape.pa)
    cos_pa, sin_pa = math.cos(shape.pa), math.sin(shape.pa)
    corner = 2.0 * math.sqrt(2.0) * rp + math.hypot(cx, cy)
    parts = []
    if w[0] > 0:  # spheroid: bigger and rounder the more "smooth" it is, a bulge when minor
        re = gs * (0.22 + 0.35 * w[0])  # along the major axis; GalSim's radius is the circularised one
        parts.append(mg.sersic(round(shape.n_sph * 20) / 20, re * math.sqrt(shape.q_sph), float(w[0]),
                               1.0 - shape.q_sph, pa_deg, (cx, cy), trunc=corner))
    if w[1] > 0:  # disk with log-spiral arms and knots along them, contrast growing with the fraction
        rd = gs / 2.16 / 1.678  # exponential scale length for r_e = Rp / 2.16
        arm_share = 0.5 * (0.35 + 0.6 * w[1])
        knot_share = (0.1 + 0.25 * w[1]) / 0.75  # knots relative to the smooth disk + arms
        total = 1.0 + knot_share
        disk_flux, knot_flux = float(w[1]) / total, float(w[1]) * knot_share / total
        smooth = mg.sersic(1.0, 1.678 * rd * math.sqrt(shape.q_disk), disk_flux * (1 - arm_share),
                           1.0 - shape.q_disk, pa_deg, (cx, cy), trunc=corner)
        # the inner disk is a little fainter than the exponential: where the arms start
        hole = mg.knot(0.36 * rd, -0.065 * disk_flux * (1 - arm_share), (cx, cy))
        arms = mg.spiral_arms(rd, shape.n_arms, shape.arm_pitch, shape.arm_phase, disk_flux * arm_share,
                              shape.q_disk, pa_deg, (cx, cy))
        sizes = shape.knots[:, 2] * gs
        knots = []
        for (kr, dphi, _, arm), ks, kf in zip(shape.knots, sizes, sizes ** 2 / (sizes ** 2).sum()):
            rk = kr * gs
            phi = math.log(max(rk / rd, 1e-6)) / math.tan(shape.arm_pitch) + dphi - shape.arm_phase / shape.n_arms
            phi += (2 * np.pi / shape.n_arms) * arm
            ku, kv = rk * math.cos(phi), rk * math.sin(phi) * shape.q_disk
            knots.append(mg.knot(float(ks), float(kf * knot_flux),
                                 (cx + ku * cos_pa - kv * sin_pa, cy + ku * sin_pa + kv * cos_pa)))
        parts += [smooth, hole, arms, *knots]
    if w[2] > 0:  # irregular: bright clumps on an asymmetric, offset diffuse body
        dx, dy, dq, dpa = shape.diffuse
        body_share = 0.6 - 0.3 * w[2]
        clump_share = 0.4 + 0.3 * w[2]
        scale = body_share + clump_share
        parts.append(mg.sersic(1.0, 1.678 * 0.4 * gs * math.sqrt(dq), float(w[2]) * body_share / scale, 1.0 - dq,
                               math.degrees(dpa), (cx + dx * gs, cy + dy * gs), trunc=corner))
        cw = shape.clumps[:, 3] / shape.clumps[:, 3].sum()
        for (kx, ky, ks, _), f in zip(shape.clumps, cw):
            parts.append(mg.knot(float(ks * gs), float(w[2] * clump_share / scale * f), (cx + kx * gs, cy + ky * gs)))
    if w[3] > 0:  # point source: the PSF does the rest
        parts.append(mg.point_source(float(w[3]), (shape.ps_offset[0] * pixel_scale,
                                                   shape.ps_offset[1] * pixel_scale)))
    if shape.neighbour is not None:
        nx, ny, nre, nn, nflux = shape.neighbour
        parts.append(mg.sersic(nn, nre * rp, float(nflux), 0.0, 0.0, (cx + nx * rp, cy + ny * rp), trunc=corner))
    return galsim.Add(parts, gsparams=mg.GSPARAMS)


def draw_stamp(shape: GalaxyShape, fractions: np.ndarray, band: str, rng: np.random.Generator, *,
               pixel_scale: float, noise: float, sky: float) -> np.ndarray:
    """One mock stamp (shape.size square, float32) for a galaxy seen in ``band`` with these vote fractions."""
    from training import mock_galaxies as mg

    fr = np.clip(np.asarray(fractions, dtype=np.float64), 0, 1)
    n = shape.size
    w = component_weights(fr, rng)
    fwhm, depth, _ = FILTER_PROPS.get(band, FILTER_PROPS["F160W"])
    psf = mg.make_psf(fwhm, "moffat", beta=3.0, spikes=PSF_SPIKES, spike_angle=math.degrees(shape.spike_angle))
    img = mg.draw(galaxy_profile(shape, w, pixel_scale), n, pixel_scale, psf).astype(np.float64)

    # S/N: the galaxy's, the filter's depth, and the unclassifiable vote (the faint, noisy ones).
    p_unc = fr[4]
    snr = shape.snr * depth * max(0.01, 1.0 - 0.95 * p_unc) ** 1.5 * rng.uniform(0.8, 1.25)
    flux = snr * noise / max(float(np.sqrt(np.sum(img ** 2))), 1e-12)
    img = img * flux + sky * (1 + shape.sky_offset) + mg.correlated_noise((n, n), rng, noise, DRIZZLE_KERNEL)

    if rng.random() < p_unc:
        img = _artefact(img, rng, n, noise, flux, pixel_scale, fwhm, sky)
    return img.astype(np.float32)


def _artefact(img: np.ndarray, rng: np.random.Generator, n: int, noise: float, flux: float, pixel_scale: float,
              fwhm: float, sky: float) -> np.ndarray:
    """What makes a stamp unclassifiable besides faintness: the mosaic edge, a bright star, a satellite trail."""
    from training import mock_galaxies as mg

    kind = rng.choice(["edge", "star", "trail", "empty"], p=[0.35, 0.25, 0.2, 0.2])
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    if kind == "edge":  # outside the drizzled footprint the mosaic is exactly zero
        ang = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(-0.1, 0.3) * n
        img = np.where(xx * math.cos(ang) + yy * math.sin(ang) > d, 0.0, img)
    elif kind == "star":  # centred on a pixel, somewhere between the galaxy and the edge
        r, a = rng.uniform(0.15, 0.45) * n, rng.uniform(0, 2 * np.pi)
        ix, iy = (int(np.clip(n / 2 + r * f(a), 0, n - 1)) - (n - 1) / 2.0 for f in (math.cos, math.sin))
        psf = mg.make_psf(fwhm, "moffat", beta=3.0, spikes=0.06, spike_angle=math.degrees(rng.uniform(0, np.pi / 2)))
        star = mg.point_source(flux * rng.uniform(3, 20), (ix * pixel_scale, iy * pixel_scale))
        img = img + mg.draw(star, n, pixel_scale, psf)
    elif kind == "trail":
        ang, off = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3) * n
        dist = np.abs(xx * math.sin(ang) - yy * math.cos(ang) - off)
        img = img + noise * rng.uniform(5, 30) * np.exp(-0.5 * (dist / rng.uniform(0.6, 1.5)) ** 2)
    else:  # nothing there: the detection was noise or the galaxy is below the surface-brightness limit
        img = sky + noise * rng.normal(0, 1, (n, n)) + (img - sky) * 0.1
    return img
