"""Stamps as PNG and the packet fields a person checks first.

Stretch: zscale limits (IRAF's, `astropy.visualization.ZScaleInterval`: robust to hot pixels and to the bright
core of a star) then an asinh stretch, so faint structure and a bright source show in one picture. NaN pixels
(edge-of-CCD padding, masked pixels) are painted in one distinct colour, never stretched into black. FITS
orientation is kept: ``data[0]`` is the bottom row (``origin="lower"``, as ds9 shows it), so the array is flipped
once on its way into the PNG, whose first row is the top.
"""
from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from schemas.packet import Packet
from stream.decode.mappers import ZTF_BANDS

#: NaN pixels: a magenta no stretch of real data produces (the page's legend names it).
NAN_RGB = (230, 40, 200)
THUMB_PX = 96     # thumbnails fit in this many pixels (nearest-neighbour, so pixels stay square)
FULL_MIN_PX = 320  # full-size stamps are upscaled by a whole factor to at least this
#: The candidate fields a person checks first on a ZTF alert (the detail view shows them in this order).
ZTF_FIELDS = ("magpsf", "sigmapsf", "fid", "isdiffpos", "drb", "rb", "sgscore1", "distpsnr1", "classtar", "ra", "dec",
              "jd", "programid")


def stretch(data: np.ndarray) -> np.ndarray:
    """float (H, W) with NaN -> uint8 RGB (H, W, 3), top row first, NaN in `NAN_RGB`."""
    from astropy.visualization import AsinhStretch, ZScaleInterval

    img = np.asarray(data, dtype=np.float64)
    nan = ~np.isfinite(img)
    finite = img[~nan]
    grey = np.zeros(img.shape, dtype=np.float64)
    if finite.size:
        lo, hi = ZScaleInterval().get_limits(finite)
        if not hi > lo:  # a flat stamp: zscale has no range; show it mid-grey rather than divide by zero
            lo, hi = float(finite.min()), float(finite.min()) + 1.0
        scaled = np.clip((np.where(nan, lo, img) - lo) / (hi - lo), 0.0, 1.0)
        grey = AsinhStretch(a=0.1)(scaled, clip=True)
    rgb = np.repeat((grey * 255.0 + 0.5).astype(np.uint8)[:, :, None], 3, axis=2)
    rgb[nan] = NAN_RGB
    return np.ascontiguousarray(rgb[::-1])  # FITS row 0 is the bottom; PNG row 0 is the top


def png(data: np.ndarray, size: str = "thumb") -> bytes:
    """PNG bytes of a stamp: ``thumb`` fits in `THUMB_PX`, ``full`` is upscaled by a whole factor (pixels stay
    square and sharp) to at least `FULL_MIN_PX`."""
    from PIL import Image

    rgb = stretch(data)
    im = Image.fromarray(rgb, mode="RGB")
    h, w = rgb.shape[:2]
    side = max(h, w, 1)
    if size == "thumb":
        if side > THUMB_PX:
            f = THUMB_PX / side
            im = im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
        else:
            k = max(1, THUMB_PX // side)
            im = im.resize((w * k, h * k), Image.Resampling.NEAREST)
    else:
        k = max(1, math.ceil(FULL_MIN_PX / side))
        im = im.resize((w * k, h * k), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def stamp_array(packet: Packet, name: str):
    """The decoded `StampImage` of a stamp by its name (alert stamp kind or cutout band); None if absent."""
    stamp = packet.band_stamps.get(name)
    if stamp is None:
        stamp = next((s for k, s in packet.stamps.items() if k.value == name), None)
    return None if stamp is None else stamp.image()


def stamp_names(packet: Packet) -> list[str]:
    return list(packet.band_stamps) if packet.band_stamps else [k.value for k in packet.stamps]


def packet_fields(packet: Packet, full: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """(name, value) pairs for the detail view: the ZTF fields a user checks first, or a cutout's description."""
    out: list[tuple[str, Any]] = [("survey", packet.survey), ("objectId", packet.object_id),
                                  ("candid", packet.candid), ("schema", packet.schema_version)]
    cand = (full or {}).get("candidate") or {}
    if packet.survey == "ZTF":
        for name in ZTF_FIELDS:
            value = cand.get(name, packet.extra.get(name))
            if name == "fid" and value is not None:
                out.append(("band", ZTF_BANDS.get(int(value), str(value))))
                continue
            out.append((name, value))
        return out
    out += [("band", packet.band), ("ra", packet.ra), ("dec", packet.dec), ("pixel_scale", packet.pixel_scale)]
    out += sorted(packet.extra.items())
    if packet.truth:
        out += [("truth." + k, v) for k, v in packet.truth.items() if v not in (None, {}, [])]
    return out


def jsonable(value: Any) -> Any:
    """A packet value as JSON: bytes as their length (stamps are shown as pictures, not bytes), NaN as None."""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return str(value)  # a candid is a 64-bit id: JavaScript numbers would round it
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value
