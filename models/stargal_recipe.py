"""Stamp recipe of star/galaxy models from 2.1.0 on, shared by training and serving (docs/stargal.md).

2.0.0 z-scored the 19x19 template crop and projected it on PCA components. 2.1.0 adds, all selected by the
artifact's ``metadata.json`` -> ``preprocessing`` block (absent: 2.0.0's behaviour, exactly):

* **NaN rule** (``nan_fill = "core_max_ring_median"``): a NaN inside the central 5x5 is a masked saturated
  core, so it becomes the crop's finite maximum; any other NaN becomes the sky, the median of the finite pixels
  of the outer 2-px ring. The worker fills NaN before the model sees the stamp, so the rule travels in the
  model's input spec (`InputSpec.nan_fill`), which `models.preprocess` reads.
* **Soft point-symmetric neighbour suppression**: the object sits at the centre pixel, and stars and most
  galaxies are close to point-symmetric about it, while a neighbour is not. Outside ``radius`` px a pixel may
  exceed its point-mirrored partner by at most ``k_sigma`` times the ring noise:
  ``x <- min(x, rot180(x) + k * sigma)``. A bright neighbour is cut to the sky level plus k sigma; the core and
  faint asymmetric galaxy structure (below k sigma) are kept. The hard version (k = 0) erased galaxy
  asymmetries and cost galaxy recall in the scratch study.
* **Two hand features** on ``d = max(x - b, 0)`` after suppression (b = ring median): a second-moment size
  (Gaussian-weighted moments: ``fixed`` = one pass with a 2-px weight, ``adaptive`` = the weight iterated six
  times to the measured size) and the concentration ``sum(d, r <= 1.5) / sum(d, r <= 4)``. They say directly
  what PCA on z-scored pixels only implies: how wide the source is against the PSF. Standardised with the
  training mean and std and multiplied by ``scale`` (weight x std of the first principal component), so they
  count in the GP distance like a strong principal component.
* **Gaussian size** (``hand_size = "gauss"``, from 2.3.0): the size column is instead the FWHM of the circular
  Gaussian plus constant that best fits the central 15x15 pixels, over a grid of widths at the core's sub-pixel
  centroid (`gauss_fwhm`). A free centre and a free background make it the least-squares fit itself, where the moments
  above are pulled by the sky estimate, by neighbours and by a centring error; on the templates of the shared
  alerts the fitted width separates PS1 stars from galaxies with AUC 0.99 against 0.94 for the moments.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from models.preprocess import MAD_TO_SIGMA, RING_WIDTH, ring_mask, row_median

#: Gaussian FWHM / sigma.
FWHM_PER_SIGMA = 2.3548
#: Radii (px) of the concentration's inner and outer apertures.
CONCENTRATION_RADII = (1.5, 4.0)
#: Starting (and, for ``fixed``, only) width of the moments' Gaussian weight, px.
MOMENT_WEIGHT_SIGMA = 2.0
MOMENT_ITERATIONS = {"fixed": 1, "adaptive": 6}
#: Size methods of the hand features: the moments' two, and the fitted Gaussian (`gauss_fwhm`).
SIZE_METHODS = (*MOMENT_ITERATIONS, "gauss")
#: The Gaussian fit: central box (px), FWHM grid (px; ratio ~1.11 between steps, refined by a parabola)
GAUSS_BOX = 15
GAUSS_FWHM_GRID = np.geomspace(1.3, 6.5, 16)
CENTROID_ITERATIONS = 2
_GAUSS_START = int(np.argmin(np.abs(GAUSS_FWHM_GRID - 2.8)))   # where the width search starts (FWHM 2.8 px)


def radii_squared(size: int) -> np.ndarray:
    """(size, size) squared distance of each pixel from the centre pixel ((size - 1) / 2)."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[:size, :size]
    return (yy - c) ** 2 + (xx - c) ** 2


def ring_stats(x: np.ndarray, width: int = RING_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """Per stamp of (N, S, S) NaN-free: sky b = ring median and noise sigma = 1.4826 * ring MAD, each (N,)."""
    ring = np.asarray(x, dtype=np.float32)[:, ring_mask(x.shape[1], width)]
    b = row_median(ring)  # (N, 1); equal to np.median, several times faster on short rows
    sigma = np.float32(MAD_TO_SIGMA) * row_median(np.abs(ring - b))
    return b[:, 0], sigma[:, 0]


def soft_symmetrise(x: np.ndarray, radius: float, k_sigma: float) -> np.ndarray:
    """(N, S, S) NaN-free, S odd, object at the centre pixel -> float32: outside ``radius`` px,
    ``min(x, rot180(x) + k_sigma * sigma)`` with sigma the ring noise of each stamp; inside, unchanged."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[1] % 2 == 0:
        raise ValueError(f"symmetrisation needs (N, S, S) stamps with S odd, got shape {x.shape}")
    _, sigma = ring_stats(x)
    outer = radii_squared(x.shape[1]) > radius ** 2
    limit = x[:, ::-1, ::-1] + (np.float32(k_sigma) * sigma)[:, None, None]
    return np.where(outer[None], np.minimum(x, limit), x).astype(np.float32, copy=False)


@lru_cache(maxsize=8)
def _moment_columns(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared radii (P,) and the (P, 4) columns [w, w r^2, inner aperture, outer aperture] of the fixed-weight
    moments and the concentration, so one matrix product gives all four sums for a batch."""
    r2 = radii_squared(size).ravel()
    w = np.exp(-0.5 * r2 / MOMENT_WEIGHT_SIGMA ** 2)
    cols = np.stack([w, w * r2, (r2 <= CONCENTRATION_RADII[0] ** 2).astype(np.float64),
                     (r2 <= CONCENTRATION_RADII[1] ** 2).astype(np.float64)], axis=1)
    cols.setflags(write=False)
    return r2, cols


def _size_from_moment(m2: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """Gaussian width s from ``<r^2>`` under a Gaussian weight of width w: ``<r^2> = 2 s^2 w^2 / (s^2 + w^2)``."""
    s2 = m2 * sig ** 2 / np.maximum(2.0 * sig ** 2 - m2, 1e-3)
    return np.clip(np.sqrt(np.maximum(s2, 0.09)), 0.3, 8.0)


def _core_centroid(d: np.ndarray, half: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Flux-weighted centre (row, column offsets from the box centre, px) of the positive part of the central
    (2 half + 1)^2 pixels of background-subtracted boxes ``d`` (N, B, B); 0 where there is no positive flux."""
    b = d.shape[1]
    c = (b - 1) // 2
    core = np.maximum(d[:, c - half:c + half + 1, c - half:c + half + 1], 0.0)
    u = np.arange(-half, half + 1, dtype=np.float64)
    tot = core.sum(axis=(1, 2))
    safe = np.where(tot > 0, tot, 1.0)
    cy = np.where(tot > 0, (core.sum(axis=2) @ u) / safe, 0.0)
    cx = np.where(tot > 0, (core.sum(axis=1) @ u) / safe, 0.0)
    return cy, cx


#: Sub-pixel step (px) of the centres in the profile table; the centre is searched within +-2 px.
CENTRE_STEP = 0.05
CENTRE_RANGE = 2.0


@lru_cache(maxsize=4)
def _profile_table(box: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D Gaussian profiles of every FWHM in the grid at every tabulated centre, (C, W, box) float32, with their
    sums and sums of squares (C, W) float64: looking a centre up replaces two exponentials per stamp and width."""
    centres = np.arange(-CENTRE_RANGE, CENTRE_RANGE + CENTRE_STEP / 2, CENTRE_STEP)
    u = np.arange(box) - (box - 1) / 2
    sig = GAUSS_FWHM_GRID / FWHM_PER_SIGMA
    g = np.exp(-0.5 * ((u[None, None, :] - centres[:, None, None]) / sig[None, :, None]) ** 2)
    out = (g.astype(np.float32), g.sum(axis=2), (g ** 2).sum(axis=2))
    for a in out:
        a.setflags(write=False)
    return out


def _centre_index(c: np.ndarray) -> np.ndarray:
    """Offsets from the box centre (px) -> rows of `_profile_table` (nearest tabulated centre, clipped)."""
    last = int(round(2 * CENTRE_RANGE / CENTRE_STEP))
    return np.clip(np.rint((np.asarray(c, dtype=np.float64) + CENTRE_RANGE) / CENTRE_STEP), 0, last).astype(np.intp)


def gauss_fwhm(x: np.ndarray, background: np.ndarray | None = None, box: int = GAUSS_BOX) -> np.ndarray:
    """(N, S, S) NaN-free stamps -> (N,) FWHM (px) of the least-squares fit ``a g + b`` (a > 0) of a circular
    Gaussian g, centred on the core's Gaussian-weighted centroid, to the central ``box`` x ``box`` pixels.
    ``background`` (N,) is the sky the centroid is measured above (default: the median of the outer 2-px ring).

    For a fixed template the best amplitude and background are linear, and the residual falls by
    ``(sum (d - mean d) t)^2 / ||t - mean t||^2``: the fit is the width of largest normalised correlation. A
    circular Gaussian is separable, so a width's correlation is ``g_y^T D g_x``, a few small products per stamp
    for the whole grid of widths. The fit is the *local* one a fit started at the core finds: the width climbs
    from FWHM 2.8 px (a typical template PSF) to the nearest maximum, so the wings of a neighbour or of a
    saturated star do not pull it to a broad optimum. The width is refined by a parabola in log width. It
    agrees with a Levenberg-Marquardt fit of the same model, started at the same point with the centre free, to
    ~1% (tests)."""
    x = np.asarray(x, dtype=np.float32)
    n, size = len(x), x.shape[1]
    if n == 0:
        return np.zeros(0)
    if background is None:
        background = row_median(x[:, ring_mask(size)])
    box = min(box, size)
    t = (size - box) // 2
    d = x[:, t:t + box, t:t + box]
    pos = np.maximum(d - np.asarray(background, dtype=np.float32).reshape(n, 1, 1), 0.0)
    d = d - d.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
    cy, cx = _core_centroid(pos)
    u = (np.arange(box) - (box - 1) / 2).astype(np.float32)
    table, s1, s2 = _profile_table(box)
    for _ in range(CENTROID_ITERATIONS):   # Gaussian-weighted centroid: converges on a Gaussian's centre
        iy, ix = _centre_index(cy), _centre_index(cx)
        wy, wx = table[iy, _GAUSS_START], table[ix, _GAUSS_START]           # (N, B) weights of FWHM 2.8 px
        fy = np.matmul(pos, wx[:, :, None])[:, :, 0] * wy                   # (N, B): weighted row sums
        fx = np.matmul(wy[:, None, :], pos)[:, 0, :] * wx                   # (N, B): weighted column sums
        tot = fy.sum(axis=1)
        ok = tot > 0
        safe = np.where(ok, tot, 1.0)
        cy = np.where(ok, (fy @ u) / safe, cy)
        cx = np.where(ok, (fx @ u) / safe, cx)
    iy, ix = _centre_index(cy), _centre_index(cx)
    gy, gx = table[iy], table[ix]                                           # (N, W, B) profiles at the centre
    corr = (np.matmul(gy, d) * gx).sum(axis=2, dtype=np.float64)           # (N, W): g_y^T D g_x
    # ||t - mean t||^2 for t = g_y g_x^T: sum t^2 - (sum t)^2 / box^2, both separable
    norm2 = s2[iy] * s2[ix] - (s1[iy] * s1[ix]) ** 2 / box ** 2
    prof = np.where(corr > 0, corr, 0.0) ** 2 / np.maximum(norm2, 1e-12)   # (N, W)
    k = _climb(prof, _GAUSS_START)
    w, idx = prof.shape[1], np.arange(n)
    kk = np.clip(k, 1, w - 2)
    y0, y1, y2 = (prof[idx, kk + j] for j in (-1, 0, 1))
    den = y0 - 2 * y1 + y2
    off = np.where(den < 0, 0.5 * (y0 - y2) / np.where(den < 0, den, -1.0), 0.0)
    off = np.where(kk == k, np.clip(off, -1.0, 1.0), 0.0)                    # no refinement at the grid's ends
    log_grid = np.log(GAUSS_FWHM_GRID)
    return np.exp(log_grid[k] + off * (log_grid[1] - log_grid[0]))


def _climb(prof: np.ndarray, start: int) -> np.ndarray:
    """Per row of ``prof`` (N, W), the local maximum a hill-climb from column ``start`` reaches: uphill towards
    the larger neighbour (up on a tie) until the next step would not rise."""
    n, w = prof.shape
    rise_up = prof[:, 1:] > prof[:, :-1]                 # (N, W-1): step k -> k+1 rises
    rise_down = prof[:, :-1] > prof[:, 1:]               # step k+1 -> k rises
    go_up = rise_up[:, start] & (prof[:, start + 1] >= prof[:, start - 1])
    go_down = ~go_up & rise_down[:, start - 1]
    # going up: stop at the first k >= start + 1 whose next step does not rise (or the last column)
    stop_up = np.concatenate([~rise_up[:, start + 1:], np.ones((n, 1), bool)], axis=1).argmax(axis=1) + start + 1
    # going down: stop at the first k <= start - 1, walking left, whose next step left does not rise
    left = np.concatenate([np.ones((n, 1), bool), ~rise_down[:, :start - 1]], axis=1)[:, ::-1]
    stop_down = start - 1 - left.argmax(axis=1)
    return np.where(go_up, stop_up, np.where(go_down, stop_down, start))


def hand_features(x: np.ndarray, size_method: Literal["fixed", "adaptive", "gauss"]) -> np.ndarray:
    """(N, S, S) NaN-free stamps -> (N, 2) float64: [size: FWHM (px), concentration].

    On ``d = max(x - b, 0)`` (b: ring median). Moments are Gaussian-weighted about the centre pixel and solved
    for the width of a Gaussian source (`_size_from_moment`). ``fixed``: once, with a 2-px weight (one matrix
    product for the whole batch); ``adaptive``: the weight set to the measured width and repeated (6 passes);
    ``gauss``: the size is `gauss_fwhm` instead (the fitted Gaussian, measured above the same b).
    """
    if size_method not in SIZE_METHODS:
        raise ValueError(f"unknown hand-feature size method {size_method!r} ({', '.join(SIZE_METHODS)})")
    x = np.asarray(x)
    n, size = len(x), x.shape[1]
    ring = np.asarray(x, dtype=np.float32)[:, ring_mask(size)]
    b = row_median(ring).astype(np.float64)
    d = np.maximum(x.reshape(n, -1).astype(np.float64) - b, 0.0)
    r2, cols = _moment_columns(size)
    sums = d @ cols
    conc = sums[:, 2] / (sums[:, 3] + 1e-12)
    if size_method == "gauss":
        return np.stack([gauss_fwhm(x, b), conc], axis=1)
    sig = _size_from_moment(sums[:, 1] / (sums[:, 0] + 1e-12), np.full(n, MOMENT_WEIGHT_SIGMA))
    for _ in range(MOMENT_ITERATIONS[size_method] - 1):
        f = d * np.exp(-0.5 * r2[None, :] / sig[:, None] ** 2)
        sig = _size_from_moment((f @ r2) / (f.sum(axis=1) + 1e-12), sig)
    return np.stack([FWHM_PER_SIGMA * sig, conc], axis=1)


@dataclass(frozen=True)
class StampRecipe:
    """What an artifact's ``preprocessing`` block selects (`from_metadata`); the default is 2.0.0's recipe."""

    nan_fill: str = "median"
    symmetrise: bool = False
    sym_radius: float = 4.0
    sym_k_sigma: float = 5.0
    hand_size: str | None = None           # None: no hand features; "fixed", "adaptive" or "gauss"
    hand_mean: tuple[float, ...] = ()       # training mean of the raw hand features
    hand_std: tuple[float, ...] = ()        # training std
    hand_scale: float = 0.0                 # weight x std of the first principal component

    @classmethod
    def from_metadata(cls, block: dict[str, Any] | None) -> "StampRecipe":
        if not block:
            return cls()
        unknown = set(block) - {"nan_fill", "symmetrise", "hand_features", "note"}
        if unknown:
            raise ValueError(f"unknown preprocessing keys: {', '.join(sorted(unknown))}")
        sym = block.get("symmetrise") or {}
        hand = block.get("hand_features") or {}
        if hand and hand.get("size") not in SIZE_METHODS:
            raise ValueError(f"unknown hand-feature size method {hand.get('size')!r}")
        return cls(nan_fill=block.get("nan_fill", "median"), symmetrise=bool(sym),
                   sym_radius=float(sym.get("radius", 4.0)), sym_k_sigma=float(sym.get("k_sigma", 5.0)),
                   hand_size=hand.get("size"), hand_mean=tuple(float(v) for v in hand.get("mean", ())),
                   hand_std=tuple(float(v) for v in hand.get("std", ())), hand_scale=float(hand.get("scale", 0.0)))

    def as_metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {"nan_fill": self.nan_fill}
        if self.symmetrise:
            out["symmetrise"] = {"radius": self.sym_radius, "k_sigma": self.sym_k_sigma,
                                 "rule": "r > radius: x = min(x, rot180(x) + k_sigma * ring noise)"}
        if self.hand_size:
            size_name = "gauss_fwhm_px" if self.hand_size == "gauss" else "moment_fwhm_px"
            out["hand_features"] = {"size": self.hand_size, "names": [size_name, "concentration"],
                                    "mean": list(self.hand_mean), "std": list(self.hand_std),
                                    "scale": self.hand_scale,
                                    "rule": "(raw - mean) / std * scale, appended to the PCA features"}
        return out

    def stamps(self, x: np.ndarray) -> np.ndarray:
        """The pixel step: (N, S, S) NaN-filled crops -> (N, S, S), suppressed if the recipe says so."""
        return soft_symmetrise(x, self.sym_radius, self.sym_k_sigma) if self.symmetrise else x

    def scaled_hand(self, raw: np.ndarray) -> np.ndarray:
        """Raw hand features (N, 2) -> the standardised, weighted columns appended to the features."""
        return (raw - np.asarray(self.hand_mean)) / np.asarray(self.hand_std) * self.hand_scale
