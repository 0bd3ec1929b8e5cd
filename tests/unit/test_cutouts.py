"""Cutout decoding: the fast FITS path against astropy on every real stamp, padding, NaN, JPEG, garbage."""
from __future__ import annotations

import gzip
import io
import time
import tracemalloc
import warnings
from pathlib import Path

import fastavro
import numpy as np
import pytest
from astropy.io import fits

from schemas.stamps import (FITS_ORIENTATION, MAX_STAMP_BYTES, _fast_array, decode_stamp, decode_stamp_bytes,
                            fits_orientation, gunzip, read_fits_array, read_fits_array_astropy)
from stream.decode import Decoder
from schemas.errors import CutoutError, UnsupportedPacket
from stream.file_source import FileSource
from schemas.packet import DeadLetter, Stamp, StampEncoding, StampKind


def _astropy_reference(data: bytes) -> np.ndarray:
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(fits.getdata(io.BytesIO(raw)), dtype=np.float32)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32),
                                                                                     b.view(np.uint32))


@pytest.fixture(scope="module")
def real_stamps(data_dir: Path) -> list[tuple[str, bytes]]:
    """Every stamp of every decodable real alert (ZTF and Rubin) plus the loose ALeRCE stamps."""
    decoder = Decoder()
    out: list[tuple[str, bytes]] = []
    for item in FileSource([data_dir / "ztf_alerts", data_dir / "lsst_alerts"]):
        if isinstance(item, DeadLetter):
            continue
        try:
            packet = decoder.decode(item)
        except UnsupportedPacket:
            continue
        for kind, stamp in packet.stamps.items():
            out.append((f"{item.origin.describe()}:{kind.value}:{packet.survey}", stamp.raw))
    for path in sorted((data_dir / "ztf_alerts" / "alerce").rglob("*.fits.gz")):
        out.append((str(path), path.read_bytes()))
    return out


def test_fast_path_equals_astropy_on_every_real_stamp(real_stamps):
    ztf = [s for s in real_stamps if ":ZTF" in s[0]]
    lsst = [s for s in real_stamps if ":LSST" in s[0]]
    alerce = [s for s in real_stamps if s[0].endswith(".fits.gz")]
    assert len(ztf) >= 1080, len(ztf)      # ~360 alerts x 3 stamps (the image-classification parquet has 1)
    assert len(lsst) == 21                 # 7 Rubin alerts x 3 stamps
    assert len(alerce) == 5
    mismatches = []
    for name, data in real_stamps:
        raw = gunzip(data) if data[:2] == b"\x1f\x8b" else data
        assert _fast_array(raw) is not None, f"{name}: fast path fell back to astropy"
        fast = read_fits_array(data)
        if not _same_bits(fast, _astropy_reference(data)):
            mismatches.append(name)
        # the astropy path used as the fallback agrees too
        if not _same_bits(read_fits_array(data, fast=False), fast):
            mismatches.append(name + " (fallback)")
    assert not mismatches, mismatches[:5]


def test_real_stamp_shapes_nan_and_padding(real_stamps):
    shapes, with_nan, padded = set(), 0, 0
    for name, data in real_stamps:
        if ":ZTF" not in name:
            continue
        img = decode_stamp_bytes(data, 63)
        assert img.data.dtype == np.float32 and img.data.shape == (63, 63)
        shapes.add(img.original_shape)
        padded += img.padded
        assert img.padded == (img.original_shape != (63, 63))
        nan = np.isnan(img.data)
        assert img.nan_fraction == pytest.approx(nan.mean())
        with_nan += bool(nan.any())
    assert {(58, 63), (63, 55), (51, 63), (63, 62)} <= shapes
    assert padded == 12  # 4 edge-of-CCD alerts x 3 stamps
    assert with_nan >= 100


def test_padded_stamp_is_centred_and_flagged(fixtures_dir):
    rec = next(fastavro.reader(open(fixtures_dir / "alerts" / "522193343315015001.avro", "rb")))
    data = rec["cutoutScience"]["stampData"]
    ref = _astropy_reference(data)
    assert ref.shape == (63, 55)
    img = Stamp(kind=StampKind.SCIENCE, raw=data, encoding=StampEncoding.FITS_GZ, nominal_size=63).image()
    assert img.padded and img.original_shape == (63, 55) and img.data.shape == (63, 63)
    assert np.isnan(img.data[:, :4]).all() and np.isnan(img.data[:, 59:]).all()
    assert _same_bits(np.ascontiguousarray(img.data[:, 4:59]), ref)
    assert img.nan_fraction >= 8 / 63
    # without a nominal size nothing is padded
    plain = decode_stamp_bytes(data, None)
    assert not plain.padded and plain.data.shape == (63, 55)


def test_image_is_cached(fixtures_dir):
    rec = next(fastavro.reader(open(fixtures_dir / "alerts" / "ZTF19acyjzeo.avro", "rb")))
    stamp = Stamp(kind=StampKind.DIFFERENCE, raw=rec["cutoutDifference"]["stampData"],
                  encoding=StampEncoding.FITS_GZ, nominal_size=63)
    first = stamp.image()
    assert stamp.image() is first
    assert first.data.shape == (63, 63) and not first.padded


def test_jpeg_stamp_is_unsupported(fixtures_dir):
    rec = next(fastavro.reader(open(fixtures_dir / "alerts" / "121540793515135000.avro", "rb")))
    data = rec["cutoutScience"]["stampData"]
    assert data[:3] == b"\xff\xd8\xff"
    for encoding in (StampEncoding.JPEG, StampEncoding.FITS_GZ):
        with pytest.raises(UnsupportedPacket):
            decode_stamp(Stamp(kind=StampKind.SCIENCE, raw=data, encoding=encoding, nominal_size=63))


@pytest.mark.parametrize("garbage", [
    b"", b"not a fits file at all", gzip.compress(b"garbage inside gzip"), b"\x1f\x8b\x08\x00truncated",
    b"SIMPLE  =                    T" + b" " * 50,                       # no END card
    gzip.compress(b"SIMPLE  =                    T" + b" " * 50)[:-9],   # truncated gzip
])
def test_garbage_raises_cutout_error(garbage):
    with pytest.raises(CutoutError):
        decode_stamp(Stamp(kind=StampKind.TEMPLATE, raw=garbage, encoding=StampEncoding.FITS_GZ, nominal_size=63))


def test_truncated_real_stamp_raises_cutout_error(fixtures_dir):
    rec = next(fastavro.reader(open(fixtures_dir / "alerts" / "ZTF19acxxwrs.avro", "rb")))
    data = gzip.decompress(rec["cutoutScience"]["stampData"])
    data_end = 2880 + 63 * 63 * 4  # one header block, then 63x63 float32 (the rest is FITS block padding)
    for cut in (100, 2880, 2880 + 1000, data_end - 5):
        with pytest.raises(CutoutError):
            decode_stamp_bytes(data[:cut])
    assert decode_stamp_bytes(data[:data_end]).data.shape == (63, 63)  # cutting only padding is harmless


def _fits_bytes(hdus) -> bytes:
    buf = io.BytesIO()
    fits.HDUList(hdus).writeto(buf)
    return buf.getvalue()


def _synthetic_cases():
    rng = np.random.default_rng(7)
    img = rng.normal(100, 10, size=(20, 17))
    cases = {}
    cases["float64"] = _fits_bytes([fits.PrimaryHDU(img)])
    cases["int16"] = _fits_bytes([fits.PrimaryHDU(img.astype(np.int16))])
    cases["int32"] = _fits_bytes([fits.PrimaryHDU((img * 1e5).astype(np.int32))])
    cases["uint8"] = _fits_bytes([fits.PrimaryHDU(img.astype(np.uint8))])
    scaled = fits.PrimaryHDU(img.astype(np.float32))
    scaled.scale("int16", bscale=0.01, bzero=100.0)
    cases["int16_scaled"] = _fits_bytes([scaled])
    scaled32 = fits.PrimaryHDU(img)
    scaled32.scale("int32", bscale=1e-4, bzero=-3.0)
    cases["int32_scaled"] = _fits_bytes([scaled32])
    cases["uint16_pseudo"] = _fits_bytes([fits.PrimaryHDU(img.astype(np.uint16))])
    blank = fits.PrimaryHDU(img.astype(np.int16))
    blank.header["BLANK"] = int(blank.data[3, 4])
    cases["int16_blank"] = _fits_bytes([blank])
    cases["cube_1xHxW"] = _fits_bytes([fits.PrimaryHDU(img.astype(np.float32)[None])])
    cases["in_extension"] = _fits_bytes([fits.PrimaryHDU(), fits.ImageHDU(img.astype(np.float32))])
    with_nan = img.astype(np.float32)
    with_nan[2:5, 3] = np.nan
    cases["float32_nan"] = _fits_bytes([fits.PrimaryHDU(with_nan)])
    return cases


@pytest.mark.parametrize("name", sorted(_synthetic_cases()))
def test_unusual_fits_agree_with_astropy(name):
    data = _synthetic_cases()[name]
    for payload in (data, gzip.compress(data)):
        fast = read_fits_array(payload)
        slow = read_fits_array(payload, fast=False)
        assert fast.dtype == np.float32 and fast.ndim == 2
        assert np.array_equal(fast, slow, equal_nan=True), name
        with fits.open(io.BytesIO(data)) as hdul:
            hdu = next(h for h in hdul if h.data is not None)
            expected = np.asarray(hdu.data, dtype=np.float32).reshape(fast.shape)
            if name == "int16_blank":
                expected[hdu.data.reshape(fast.shape) == hdu.header["BLANK"]] = np.nan
        assert np.array_equal(fast, expected, equal_nan=True), name
    if name == "int16_blank":
        assert np.isnan(fast[3, 4]) and np.isnan(fast).sum() >= 1
    if name == "float32_nan":
        assert np.isnan(fast[2:5, 3]).all()


def test_multi_member_gzip():
    data = _synthetic_cases()["float64"]
    two = gzip.compress(data[:2880]) + gzip.compress(data[2880:])
    assert gunzip(two) == data
    assert np.array_equal(read_fits_array(two), read_fits_array(data))


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """100 MiB of zeros behind a FITS header: ~100 kB gzipped."""
    header = b"SIMPLE  =                    T" + b" " * 50
    return gzip.compress(header + bytes(100 << 20), 9)


def test_gzip_bomb_stamp_is_capped(gzip_bomb):
    assert MAX_STAMP_BYTES == 64 << 20 and len(gzip_bomb) < 200_000
    tracemalloc.start()
    try:
        t = time.perf_counter()
        with pytest.raises(CutoutError, match="science stamp: decompressed size exceeds 64 MiB"):
            decode_stamp(Stamp(kind=StampKind.SCIENCE, raw=gzip_bomb, encoding=StampEncoding.FITS_GZ,
                               nominal_size=63))
        elapsed = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 80 << 20, f"{peak >> 20} MiB allocated"  # at most the cap (+1 byte), never the 100 MiB
    assert elapsed < 2.0
    for fast in (True, False):  # both paths gunzip through the cap
        with pytest.raises(CutoutError, match="exceeds 64 MiB"):
            read_fits_array(gzip_bomb, fast=fast)
    with pytest.raises(CutoutError, match="exceeds 64 MiB"):
        read_fits_array_astropy(gzip_bomb)


def test_gzip_cap_counts_all_members():
    member = gzip.compress(bytes(3 << 20))
    assert len(gunzip(member + member, limit=6 << 20)) == 6 << 20  # exactly the limit is fine
    with pytest.raises(CutoutError, match="decompressed size exceeds 5 MiB"):
        gunzip(member + member, limit=5 << 20)
    with pytest.raises(CutoutError, match="truncated gzip stream"):
        gunzip(member[:-20], limit=5 << 20)


def test_orientation_is_astropy_row_zero_bottom():
    assert fits_orientation() == FITS_ORIENTATION == "lower"
    ramp = np.arange(12 * 9, dtype=np.float32).reshape(12, 9)  # row 0 holds the smallest values
    data = _fits_bytes([fits.PrimaryHDU(ramp)])
    out = read_fits_array(gzip.compress(data))
    assert np.array_equal(out, ramp)            # not flipped: out[0] is the first FITS row (image bottom)
    assert np.array_equal(out, read_fits_array_astropy(data))


def test_stamp_rates_report(real_stamps, capsys):
    """Reports fast vs astropy stamps/s (benchmark-style: reports, asserts only that the fast path is faster)."""
    ztf = [d for n, d in real_stamps if ":ZTF" in n][:300]
    t = time.process_time()
    for d in ztf:
        read_fits_array(d)
    fast = len(ztf) / max(time.process_time() - t, 1e-9)
    t = time.process_time()
    for d in ztf:
        read_fits_array(d, fast=False)
    slow = len(ztf) / max(time.process_time() - t, 1e-9)
    with capsys.disabled():
        print(f"\n[cutouts] fast path {fast:,.0f} stamps/s, astropy {slow:,.0f} stamps/s ({fast / slow:.1f}x)")
    assert fast > slow
