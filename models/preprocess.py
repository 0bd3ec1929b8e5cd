"""The one preprocessing path shared by training and serving.

Everything a model sees goes through here, so a model trained on FITS cutouts and served on alert stamps gets
the same geometry and the same normalisation:

* geometry: `centre_crop`, `pad_to` (NaN padding), `fit_to_spec` (crop or pad each axis), `resize`,
  `fit_geometry` (an `InputSpec`'s exact / crop / resample / resize), `fill_nan`;
* per-image normalisations for batches: `normalise(x, method)` with ``method`` in `NORMALISATIONS`,
  `sigma_clip`, and `apply_recipe` (a model's recipe: scale, clip_sigma, normalise, stretch);
* arrays to model input: `prepare_images` (training and evaluation);
* packets to arrays: `prepare_input` (one packet) and `prepare_batch` (many, isolating per-packet failures).

Reading files is not preprocessing: FITS files go through `schemas.stamps.read_fits_file`, and training data
readers live with their family (`training/<family>/`).

Centre convention: for a crop from H to ``size`` the first kept row is ``(H - size) // 2``; for a pad the
extra row (odd difference) goes after the image. Crop followed by the inverse pad restores the original pixels.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from schemas.errors import PacketError, StampflowError

NORMALISATIONS = ("raw", "minmax", "l2", "zscore", "asinh")

# MAD -> Gaussian sigma.
MAD_TO_SIGMA = 1.4826


# --------------------------------------------------------------------------------------------- geometry


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop the last-but-one and last axes of ``img`` to at most ``size`` (axes already smaller are kept)."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    h, w = img.shape[-2:]
    top = max((h - size) // 2, 0)
    left = max((w - size) // 2, 0)
    return img[..., top:top + min(size, h), left:left + min(size, w)]


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Pad the last two axes of ``img`` with NaN, centred, to at least ``size`` (axes already larger are kept)."""
    if size <= 0:
        raise ValueError(f"pad size must be positive, got {size}")
    h, w = img.shape[-2:]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return img
    out = np.asarray(img, dtype=np.float32)
    pad = [(0, 0)] * (out.ndim - 2) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
    return np.pad(out, pad, mode="constant", constant_values=np.nan)


def fit_to_spec(img: np.ndarray, size: int) -> np.ndarray:
    """Crop (centre) each axis larger than ``size`` and NaN-pad (centred) each axis smaller: (size, size)."""
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D stamp, got shape {img.shape}")
    return pad_to(centre_crop(img, size), size)


def resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a NaN-free 2-D image to exactly ``shape`` (grid_mode: pixel edges aligned, so a
    stamp keeps its field of view)."""
    from scipy import ndimage

    h, w = img.shape
    target = (int(shape[0]), int(shape[1]))
    if (h, w) == target:
        return np.asarray(img, dtype=np.float32)
    out = ndimage.zoom(np.asarray(img, dtype=np.float32), (target[0] / h, target[1] / w), order=1,
                       mode="nearest", grid_mode=True)
    if out.shape != target:  # zoom rounds the output shape; trim or edge-pad the odd pixel
        out = np.pad(out[: target[0], : target[1]],
                     [(0, max(0, target[0] - out.shape[0])), (0, max(0, target[1] - out.shape[1]))], mode="edge")
    return out.astype(np.float32, copy=False)


def fit_geometry(img: np.ndarray, spec, pixel_scale: float | None = None) -> np.ndarray:
    """Bring one 2-D stamp to the model's (size, size) grid as ``spec.geometry`` allows; NaN-filled float32.

    ``pixel_scale`` is the stamp's (arcsec/px). ``resample`` zooms by ``pixel_scale / spec.pixel_scale`` first
    (NaNs are filled before interpolating, so they cannot spread), then crops or pads like ``crop``.
    """
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D stamp, got shape {img.shape}")
    size, geometry = spec.size, spec.geometry
    if geometry == "exact":
        if img.shape != (size, size):
            raise PacketError("preprocess", f"stamp is {img.shape[0]}x{img.shape[1]}, model needs {size}x{size} "
                                            "and does not allow cropping")
        return fill_nan(img)
    if geometry == "crop":
        return fill_nan_by(fit_to_spec(img, size), spec)
    if geometry == "resize":
        return resize(fill_nan(img), (size, size))
    if geometry == "resample":
        if pixel_scale is None or spec.pixel_scale is None:
            raise PacketError("preprocess", "resampling needs the stamp's and the model's pixel scales")
        factor = float(pixel_scale) / float(spec.pixel_scale)
        filled = fill_nan(img)
        if abs(factor - 1.0) > 1e-3:
            h, w = filled.shape
            filled = resize(filled, (max(1, round(h * factor)), max(1, round(w * factor))))
        return fill_nan(fit_to_spec(filled, size))
    raise ValueError(f"unknown geometry {geometry!r}")


def fill_nan(img: np.ndarray) -> np.ndarray:
    """Replace NaN/inf with the stamp's finite median (0 if no pixel is finite). Returns a new float32 array."""
    out = np.array(img, dtype=np.float32, copy=True)
    bad = ~np.isfinite(out)
    if bad.any():
        good = out[~bad]
        out[bad] = np.median(good) if good.size else 0.0
    return out


#: Width (px) of the outer ring whose median and MAD give a stamp's sky level and noise.
RING_WIDTH = 2
#: Side of the central box whose NaNs are a masked (saturated) core rather than missing sky.
CORE_BOX = 5


def ring_mask(size: int, width: int = RING_WIDTH) -> np.ndarray:
    """(size, size) bool: the outer ``width`` rows and columns."""
    m = np.zeros((size, size), dtype=bool)
    m[:width] = m[-width:] = True
    m[:, :width] = m[:, -width:] = True
    return m


def fill_nan_core_ring(img: np.ndarray, core: int = CORE_BOX, width: int = RING_WIDTH) -> np.ndarray:
    """One 2-D crop: NaN/inf in the central ``core`` box -> the finite maximum, elsewhere -> the finite ring median
    (the finite median of the stamp if the ring has none; 0 if nothing is finite). Returns a float32 copy."""
    out = np.array(img, dtype=np.float32, copy=True)
    bad = ~np.isfinite(out)
    if not bad.any():
        return out
    good = out[~bad]
    if not good.size:
        out[:] = 0.0
        return out
    h, w = out.shape
    ring = out[ring_mask(h, width)] if h == w else np.zeros(0, np.float32)
    ring = ring[np.isfinite(ring)]
    sky = np.median(ring) if ring.size else np.median(good)
    centre = np.zeros_like(bad)
    t, left = (h - core) // 2, (w - core) // 2
    centre[t:t + core, left:left + core] = True
    out[bad & centre] = good.max()
    out[bad & ~centre] = sky
    return out


def fill_nan_by(img: np.ndarray, spec) -> np.ndarray:
    """The NaN rule ``spec.nan_fill`` names (`models.base.NAN_FILLS`)."""
    rule = spec.nan_fill
    if rule == "median":
        return fill_nan(img)
    if rule == "core_max_ring_median":
        return fill_nan_core_ring(img)
    raise ValueError(f"unknown nan_fill '{rule}'")


# ---------------------------------------------------------------------------------------- normalisation


def normalise(x: np.ndarray, method: str) -> np.ndarray:
    """Normalise a batch (N, H, W) or (N, H, W, C) per image (and per channel), returning float32.

    * ``raw``: unchanged (float32 copy).
    * ``minmax``: ``(x - min) / (max - min)``; a constant image becomes 0.
    * ``l2``: ``x / ||x||_2``; an all-zero image stays 0.
    * ``zscore``: ``(x - mean) / std``; a constant image becomes 0.
    * ``asinh``: ``asinh((x - median) / s)`` with ``s = 1.4826 * MAD`` (a robust estimate of the background
      noise, so the stretch is linear within ~1 sigma of the sky and logarithmic for bright sources); if the
      MAD is 0 we fall back to the standard deviation, and to 1 for a constant image.

    Statistics are computed over the two spatial axes (medians in float32, the rest in float64); input must
    already be NaN-free (see `fill_nan`).
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation '{method}' (choose from {', '.join(NORMALISATIONS)})")
    arr = np.asarray(x)
    if arr.ndim not in (3, 4):
        raise ValueError(f"normalise expects (N, H, W) or (N, H, W, C), got shape {arr.shape}")
    if method == "raw" or arr.shape[0] == 0:
        return np.array(arr, dtype=np.float32, copy=True)
    # Medians dominate the cost: on contiguous float32 rows (one per image and channel) they are ~3x faster
    # than over two strided axes in float64. Mean-based statistics stay in float64.
    # minmax and asinh only compare, subtract and divide: float32 is exact enough (< 1e-6) and half the memory
    # traffic; sums (l2, zscore) stay in float64.
    rows, restore = _rows(arr, np.float32 if method in ("asinh", "minmax") else np.float64)
    if method == "minmax":
        lo = rows.min(axis=1, keepdims=True)
        span = rows.max(axis=1, keepdims=True) - lo
        shifted = rows - lo
        out = np.divide(shifted, span, out=np.zeros_like(rows), where=span > 0)
    elif method == "l2":
        norm = np.sqrt((rows * rows).sum(axis=1, keepdims=True))
        out = np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 0)
    elif method == "zscore":
        centred = rows - rows.mean(axis=1, keepdims=True)
        std = rows.std(axis=1, keepdims=True)
        out = np.divide(centred, std, out=np.zeros_like(rows), where=std > 0)
    else:  # asinh
        med = row_median(rows)
        centred = rows - med
        scale = MAD_TO_SIGMA * row_median(np.abs(centred))
        flat = scale[:, 0] <= 0
        if flat.any():  # the std fallback, only for the rare rows whose MAD is 0
            std = rows[flat].astype(np.float64).std(axis=1).astype(np.float32)
            scale[flat, 0] = np.where(std > 0, std, np.float32(1.0))
        centred /= scale
        out = np.arcsinh(centred, out=centred)
    return restore(out)


def row_median(rows: np.ndarray) -> np.ndarray:
    """Median of each row, equal to ``np.median(rows, axis=1, keepdims=True)``, ~5x faster on 2-D stamps.

    np.median partitions at both middle elements at once, which numpy does slowly; one partition at the upper
    middle plus the maximum of the lower half (the partition puts every smaller element there) is exact.
    """
    n = rows.shape[1]
    k = n // 2
    part = np.partition(rows, k, axis=1)
    upper = part[:, k:k + 1]
    if n % 2:
        return upper.copy()
    lower = part[:, :k].max(axis=1, keepdims=True)
    return (lower + upper) / rows.dtype.type(2)


def _rows(arr: np.ndarray, dtype) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """(N, H, W[, C]) -> contiguous (N*C, H*W) rows of ``dtype``, and the inverse (returning float32)."""
    if arr.ndim == 3:
        n, h, w = arr.shape
        rows = np.ascontiguousarray(arr, dtype=dtype).reshape(n, h * w)
        return rows, lambda r: r.reshape(n, h, w).astype(np.float32, copy=False)
    n, h, w, c = arr.shape
    rows = np.ascontiguousarray(np.moveaxis(arr, -1, 1), dtype=dtype).reshape(n * c, h * w)
    return rows, lambda r: np.ascontiguousarray(np.moveaxis(r.reshape(n, c, h, w), 1, -1), dtype=np.float32)


def sigma_clip(x: np.ndarray, k: float) -> np.ndarray:
    """Set pixels below ``median + k * sigma`` to the median, per image and channel (sigma = 1.4826 * MAD).

    Radio images are mostly noise around the sources; clipping the noise floor (Aniyan & Thorat 2017,
    Alhassan et al. 2018) leaves the morphology the classifier should see. Takes (N, H, W) or (N, H, W, C).
    """
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim not in (3, 4) or arr.shape[0] == 0:
        return np.array(arr, copy=True)
    rows, restore = _rows(arr, np.float32)
    # A stamp of which more than half is its minimum (the published noise-clipped 8-bit FIRST images) has that
    # minimum as its median and a MAD of 0, so the clip leaves it as it is: no partition, which numpy does ~4x
    # slower on such rows than on noise (docs/models.md, "CPU kernels").
    med = rows.min(axis=1, keepdims=True)
    threshold = med.copy()  # nothing lies below a row's minimum: such a row comes back unchanged
    busy = np.count_nonzero(rows == med, axis=1) <= rows.shape[1] // 2
    if busy.any():
        sub = rows[busy]
        med[busy] = row_median(sub)
        threshold[busy] = med[busy] + np.float32(k) * MAD_TO_SIGMA * row_median(np.abs(sub - med[busy]))
    return restore(np.where(rows < threshold, med, rows))


RECIPE_KEYS = ("scale", "clip_sigma", "normalise", "stretch")
STRETCHES = ("sqrt", "qroot", "asinh")
_ASINH_SOFTENING = 0.1   # asinh(x / 0.1) / asinh(1 / 0.1): linear below ~0.1 of the peak, logarithmic above


def stretch_images(x: np.ndarray, method: str) -> np.ndarray:
    """A brightness stretch of [0, 1]-scaled stamps (after ``normalise: minmax``), returning float32 in [0, 1]:
    ``sqrt``, ``qroot`` (the fourth root: a stronger lift at the price of two square roots, ~6x cheaper than
    ``asinh``'s ``np.arcsinh``) or ``asinh``. Lifts faint extended emission (radio lobes) towards the bright core;
    0 and 1 stay."""
    if method not in STRETCHES:
        raise ValueError(f"unknown stretch '{method}' (choose from {', '.join(STRETCHES)})")
    arr = np.clip(np.asarray(x, dtype=np.float32), 0.0, None)
    if method == "sqrt":
        return np.sqrt(arr)
    if method == "qroot":
        return np.sqrt(np.sqrt(arr))
    a = np.float32(_ASINH_SOFTENING)
    return (np.arcsinh(arr / a) / np.arcsinh(np.float32(1.0) / a)).astype(np.float32)


def apply_recipe(x: np.ndarray, recipe: dict | None) -> np.ndarray:
    """A model's normalisation, identical in training and serving: ``scale``, then ``clip_sigma``, then
    ``normalise``, then ``stretch`` (see docs/models.md). Input must be NaN-free (the geometry step fills NaN)."""
    recipe = recipe or {}
    unknown = set(recipe) - set(RECIPE_KEYS)
    if unknown:
        raise ValueError(f"unknown preprocessing step(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(RECIPE_KEYS)})")
    out = np.asarray(x, dtype=np.float32)
    if recipe.get("scale") is not None:
        out = out * np.float32(recipe["scale"])
    if recipe.get("clip_sigma") is not None:
        out = sigma_clip(out, float(recipe["clip_sigma"]))
    out = normalise(out, recipe.get("normalise") or "raw")
    if recipe.get("stretch") is not None:
        out = stretch_images(out, str(recipe["stretch"]))
    return out


def prepare_images(images: np.ndarray, spec, pixel_scale: float | None = None) -> np.ndarray:
    """Arrays (N, H, W) or (N, H, W, C) -> model geometry (N, size, size, C) float32, NaN-filled.

    The same per-stamp `fit_geometry` the packets get in `prepare_input`, so a model is trained on exactly
    the grid it is served on. ``pixel_scale`` is the images' (for ``resample``).
    """
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise ValueError(f"prepare_images expects (N, H, W) or (N, H, W, C), got shape {np.shape(images)}")
    n, _, _, c = arr.shape
    out = np.empty((n, spec.size, spec.size, c), dtype=np.float32)
    if spec.geometry in ("crop", "exact") and n:
        if spec.geometry == "exact" and arr.shape[1:3] != (spec.size, spec.size):
            raise StampflowError(f"images are {arr.shape[1]}x{arr.shape[2]}, the model needs exactly "
                                 f"{spec.size}x{spec.size}")
        # Vectorised: one crop/pad for the whole batch, NaN fill only where needed.
        moved = pad_to(centre_crop(np.moveaxis(arr, -1, 1).astype(np.float32, copy=False), spec.size), spec.size)
        out[:] = np.moveaxis(moved, 1, -1)
        bad = ~np.isfinite(out)
        if bad.any():
            for i, j in {(i, j) for i, j in zip(*np.nonzero(bad.any(axis=(1, 2))))}:
                out[i, :, :, j] = fill_nan_by(out[i, :, :, j], spec)
        return out
    for i in range(n):
        for j in range(c):
            out[i, :, :, j] = fit_geometry(arr[i, :, :, j], spec, pixel_scale)
    return out


# ----------------------------------------------------------------------------------------------- packets


def prepare_input(packet, spec) -> np.ndarray:
    """One packet -> float32 (size, size, C), channels in the spec's order.

    Alert models: ``spec.stamp_kinds`` of ``packet.stamps``; archival models: ``spec.channels`` of
    ``packet.band_stamps``. Each stamp is decoded, brought to the model's grid by `fit_geometry` and NaN-filled
    with its finite median. Raises `PacketError` (stage ``preprocess``) if a stamp is missing, not 2-D, or does
    not fit the geometry.
    """
    if spec.channels is not None:
        pairs = [(band, packet.band_stamps.get(band)) for band in spec.channels]
        scale = packet.pixel_scale
    else:
        pairs = [(getattr(kind, "value", kind), packet.stamps.get(kind)) for kind in spec.stamp_kinds]
        scale = spec.pixel_scale  # alert stamps are on the model's grid by routing (same survey)
    channels = []
    for name, stamp in pairs:
        if stamp is None:
            raise PacketError("preprocess", f"packet {packet.candid} has no {name} stamp")
        data = np.asarray(stamp.image().data)
        if data.ndim != 2:
            raise PacketError("preprocess", f"{name} stamp of packet {packet.candid} is not 2-D (shape {data.shape})")
        try:
            channels.append(fit_geometry(data, spec, scale))
        except PacketError as exc:
            raise PacketError("preprocess", f"{name} stamp of packet {packet.candid}: {exc}") from None
    return np.stack(channels, axis=-1).astype(np.float32, copy=False)


def prepare_batch(packets: Sequence, spec) -> tuple[np.ndarray, list[BaseException | None]]:
    """Many packets -> (array (N, size, size, C) float32, errors list of length N).

    ``errors[i]`` is None when packet i was prepared, else the exception (a `PacketError` with stage
    ``preprocess``; other exceptions are wrapped with the original as ``__cause__``). Failed rows are zeros:
    callers must drop them (e.g. ``batch[[e is None for e in errors]]``) and dead-letter the packet.
    """
    n, c = len(packets), spec.n_channels
    out = np.zeros((n, spec.size, spec.size, c), dtype=np.float32)
    errors: list[BaseException | None] = [None] * n
    for i, packet in enumerate(packets):
        try:
            out[i] = prepare_input(packet, spec)
        except PacketError as exc:
            errors[i] = exc
        except Exception as exc:  # noqa: BLE001 - one bad stamp must not sink the batch
            wrapped = PacketError("preprocess", f"{exc.__class__.__name__}: {exc}")
            wrapped.__cause__ = exc
            errors[i] = wrapped
    return out, errors
