"""Duplicate and near-duplicate FIRST images across data sets (Griese, MiraBest, FR-DEEP).

The three published FIRST sets draw on the same catalogues (FRICAT, CoNFIG, Best & Heckman), so one source
can appear in two or three of them, cut out separately and 8-bit scaled by each team. None of Griese's or
FR-DEEP's files carry coordinates, so sources are matched by their pixels:

* exact: SHA-1 of the 150x150 centre of the published uint8 image (the same cutout re-used as is);
* near: the normalised cross-correlation (NCC) of the two prepared images (after the model's crop and
  recipe), maximised over integer shifts of up to ``shift`` pixels (two cutouts of one source, centred on
  catalogue positions that differ by a pixel or two). A coarse pass on 3x3-binned images (5.4"/px, one FIRST
  beam) picks candidate pairs; the full-resolution NCC of the central ``window`` pixels decides. Why full
  resolution decides: at one beam per pixel every unresolved (Compact) source is a centred Gaussian, and the
  coarse NCC of two *different* compact sources is > 0.95; at 1.8"/px their sizes, shapes and any faint
  neighbours differ.

`coordinate_matches` pairs positions (MiraBest file names, the relabelling CSVs) within a radius.
"""
from __future__ import annotations

import hashlib

import numpy as np


def image_hashes(images: np.ndarray, size: int = 150) -> list[str]:
    """SHA-1 of each image's central ``size`` x ``size`` pixels as published (uint8)."""
    h, w = images.shape[1:3]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    core = np.ascontiguousarray(np.asarray(images)[:, top:top + size, left:left + size])
    return [hashlib.sha1(im.tobytes()).hexdigest() for im in core]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    rows = x.reshape(len(x), -1).astype(np.float32)
    rows = rows - rows.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 0)


def shifted_ncc(a: np.ndarray, b: np.ndarray, shift: int) -> np.ndarray:
    """(len(a), len(b)) NCC of 2-D images ``a`` (N, H, W) against ``b`` (M, H, W), the best over integer
    shifts of ``b`` by up to ``shift`` pixels; the central (H - 2 shift) x (W - 2 shift) part of ``a`` is used."""
    h, w = a.shape[1:3]
    ref = _unit_rows(a[:, shift:h - shift, shift:w - shift])
    best = np.full((len(a), len(b)), -1.0, dtype=np.float32)
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            moved = _unit_rows(b[:, shift + dy:h - shift + dy, shift + dx:w - shift + dx])
            np.maximum(best, ref @ moved.T, out=best)
    return best


def bin_images(x: np.ndarray, k: int) -> np.ndarray:
    """(N, H, W) -> (N, H // k, W // k) block means."""
    n, h, w = x.shape
    h2, w2 = h // k, w // k
    return x[:, :h2 * k, :w2 * k].reshape(n, h2, k, w2, k).mean(axis=(2, 4))


def centre(x: np.ndarray, window: int) -> np.ndarray:
    h, w = x.shape[1:3]
    t, l_ = (h - window) // 2, (w - window) // 2
    return x[:, t:t + window, l_:l_ + window]


def max_ncc(query: np.ndarray, pool: np.ndarray, *, shift: int = 3, window: int = 96, coarse_bin: int = 3,
            coarse_min: float = 0.8, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """For each ``pool`` image (M, H, W), the highest full-resolution NCC with any ``query`` image (N, H, W)
    and which query image gave it (-1 when no pair passed the coarse pass: NCC reported as the coarse value).

    Coarse pass: 3x3-binned images, shifts of ``shift // coarse_bin + 1`` bins; pairs at or above
    ``coarse_min`` are refined at full resolution on the central ``window`` pixels, shifts up to ``shift``.
    """
    q_small, p_small = bin_images(query, coarse_bin), bin_images(pool, coarse_bin)
    coarse = shifted_ncc(q_small, p_small, shift // coarse_bin + 1)      # (N, M)
    best = coarse.max(axis=0).astype(np.float32)
    which = np.full(len(pool), -1, dtype=int)
    q_win = centre(query, window + 2 * shift)
    p_win = centre(pool, window + 2 * shift)
    for i0 in range(0, len(query), chunk):
        sub = coarse[i0:i0 + chunk]
        cols = np.flatnonzero((sub >= coarse_min).any(axis=0))
        if not len(cols):
            continue
        fine = shifted_ncc(q_win[i0:i0 + chunk], p_win[cols], shift)   # (chunk, len(cols))
        fine = np.where(sub[:, cols] >= coarse_min, fine, -1.0)
        top = fine.max(axis=0)
        arg = fine.argmax(axis=0) + i0
        first = which[cols] < 0
        better = first | (top > best[cols])
        best[cols[better]] = top[better]
        which[cols[better]] = arg[better]
    return best, which


def coordinate_matches(ra1, dec1, ra2, dec2, radius_arcsec: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, separation in arcsec) of positions 1 and 2 (degrees) closer than ``radius_arcsec``."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(v, dtype=float)) for v in (ra1, dec1, ra2, dec2))
    out = []
    for i in range(len(ra1)):
        c = (np.sin(dec1[i]) * np.sin(dec2) + np.cos(dec1[i]) * np.cos(dec2) * np.cos(ra1[i] - ra2))
        sep = np.degrees(np.arccos(np.clip(c, -1, 1))) * 3600
        for j in np.flatnonzero(sep < radius_arcsec):
            out.append((i, int(j), float(sep[j])))
    return out


def ncc_pairs(query: np.ndarray, pool: np.ndarray, threshold: float, *, shift: int = 3, window: int = 96,
              chunk: int = 64) -> np.ndarray:
    """Every (query index, pool index) pair whose full-resolution NCC (central ``window`` pixels, best over
    shifts up to ``shift``) reaches ``threshold``: (K, 2) int array. Unlike `max_ncc` it keeps all partners of
    an image, which the pixel test below needs."""
    q_win, p_win = centre(query, window + 2 * shift), centre(pool, window + 2 * shift)
    out = []
    for i0 in range(0, len(query), chunk):
        ncc = shifted_ncc(q_win[i0:i0 + chunk], p_win, shift)
        hit = np.argwhere(ncc >= threshold)
        hit[:, 0] += i0
        out.append(hit)
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=int)


def pixel_difference(a: np.ndarray, b: np.ndarray, *, shift: int = 3, size: int = 150) -> float:
    """Smallest, over integer shifts of ``b`` by up to ``shift`` pixels, of the largest absolute difference
    between two published 8-bit images (each rescaled to a peak of 255) in their central ``size`` pixels.

    Why: within one data set (Griese's pipeline: one FIRST mosaic, one clip, one 8-bit scaling), a re-used
    cutout of a source is the same pixels, possibly shifted by a pixel or two, so this is ~0-2 grey levels.
    Two *different* unresolved sources are both a centred beam, NCC > 0.99, but their pixels differ by the
    noise and the sub-pixel position of the peak: >= 10 grey levels on every pair of different Griese ``valid``
    images measured (docs/radio.md)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    a = a * (255.0 / a.max()) if a.max() > 0 else a
    b = b * (255.0 / b.max()) if b.max() > 0 else b
    h, w = a.shape
    t, l_ = (h - size) // 2 + shift, (w - size) // 2 + shift
    core = a[t:t + size - 2 * shift, l_:l_ + size - 2 * shift]
    best = np.inf
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            moved = b[t + dy:t + dy + size - 2 * shift, l_ + dx:l_ + dx + size - 2 * shift]
            best = min(best, float(np.abs(core - moved).max()))
    return best
