"""Shared preprocessing: geometry, normalisations, NaN handling, packets -> arrays."""
from __future__ import annotations

import time

import numpy as np
import pytest

from models.base import ZTF_PIXEL_SCALE, InputSpec
from models.preprocess import (NORMALISATIONS, centre_crop, fill_nan, fit_to_spec, normalise, pad_to, prepare_batch,
                               prepare_input)
from schemas.errors import PacketError
from schemas.packet import Origin, Packet, Stamp, StampEncoding, StampImage, StampKind

SPEC = InputSpec(survey="ZTF", stamp_kinds=(StampKind.SCIENCE,), size=20, pixel_scale=ZTF_PIXEL_SCALE)


class _BrokenStamp(Stamp):
    """A stamp whose decoding fails with an unexpected (non-PacketError) exception."""

    def image(self) -> StampImage:
        raise RuntimeError("corrupt gzip stream")


def _packet(images: dict, candid: int = 1, broken: bool = False) -> Packet:
    stamps = {}
    for kind, img in images.items():
        if broken:
            stamps[kind] = _BrokenStamp(kind=kind, raw=b"", encoding=StampEncoding.FITS)
        else:
            data = np.asarray(img, dtype=np.float32)
            stamps[kind] = Stamp(kind=kind, raw=b"", encoding=StampEncoding.FITS,
                                 _image=StampImage(data, False, data.shape, float(np.isnan(data).mean())))
    return Packet(candid=candid, object_id=f"ZTF{candid}", survey="ZTF", alert_time=None, ra=None, dec=None,
                  band="r", schema_version="test", stamps=stamps, origin=Origin(file="t"), ingest_time=time.time())


# -------------------------------------------------------------------------------------------- geometry


def test_centre_crop_keeps_centre_pixels():
    img = np.arange(63 * 63, dtype=np.float32).reshape(63, 63)
    out = centre_crop(img, 20)
    assert out.shape == (20, 20)
    np.testing.assert_array_equal(out, img[21:41, 21:41])
    # The image centre (31, 31) lands at (10, 10), numpy's centre convention for an even size.
    assert out[10, 10] == img[31, 31]
    # Already small enough: unchanged.
    np.testing.assert_array_equal(centre_crop(img[:10, :10], 20), img[:10, :10])


def test_pad_to_is_centred_nan():
    img = np.ones((15, 15), dtype=np.float32)
    out = pad_to(img, 20)
    assert out.shape == (20, 20)
    assert np.isnan(out).sum() == 400 - 225
    np.testing.assert_array_equal(out[2:17, 2:17], img)  # 5 extra rows: 2 before, 3 after
    assert np.isnan(out[:2]).all() and np.isnan(out[17:]).all()


def test_fit_to_spec_crops_and_pads_each_axis():
    img = np.arange(30 * 12, dtype=np.float32).reshape(30, 12)
    out = fit_to_spec(img, 20)
    assert out.shape == (20, 20)
    np.testing.assert_array_equal(out[:, 4:16], img[5:25, :])
    assert np.isnan(out[:, :4]).all() and np.isnan(out[:, 16:]).all()
    # Pad then crop back is the identity.
    small = np.random.default_rng(0).normal(size=(15, 15)).astype(np.float32)
    np.testing.assert_array_equal(centre_crop(pad_to(small, 20), 15), small)
    with pytest.raises(ValueError):
        fit_to_spec(np.zeros((2, 20, 20)), 20)


def test_fill_nan_uses_finite_median_and_does_not_mutate():
    img = np.array([[1.0, 2.0, np.nan], [np.inf, 10.0, 3.0]], dtype=np.float32)
    out = fill_nan(img)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1, 2, 2.5], [2.5, 10, 3]])
    assert np.isnan(img[0, 2])  # input untouched
    np.testing.assert_array_equal(fill_nan(np.full((3, 3), np.nan)), np.zeros((3, 3)))


# ---------------------------------------------------------------------------------------- normalisation


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    x = rng.normal(300.0, 5.0, size=(4, 20, 20)).astype(np.float32)
    x[:, 8:12, 8:12] += 2000.0  # a bright source
    x[3] = 7.0                  # a constant stamp
    return x


def test_normalise_raw_is_a_float32_copy(batch):
    out = normalise(batch, "raw")
    assert out.dtype == np.float32 and out is not batch
    np.testing.assert_array_equal(out, batch)


def test_normalise_minmax(batch):
    out = normalise(batch, "minmax")
    np.testing.assert_allclose(out[:3].min(axis=(1, 2)), 0.0, atol=1e-7)
    np.testing.assert_allclose(out[:3].max(axis=(1, 2)), 1.0, atol=1e-6)
    np.testing.assert_array_equal(out[3], 0.0)


def test_normalise_l2(batch):
    out = normalise(batch, "l2")
    np.testing.assert_allclose(np.sqrt((out.astype(np.float64) ** 2).sum(axis=(1, 2))), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(normalise(np.zeros((1, 5, 5)), "l2"), 0.0)


def test_normalise_zscore(batch):
    out = normalise(batch, "zscore").astype(np.float64)
    np.testing.assert_allclose(out[:3].mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out[:3].std(axis=(1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out[3], 0.0)


def test_normalise_asinh_matches_documented_formula(batch):
    out = normalise(batch, "asinh")
    x = batch[0].astype(np.float64)
    med = np.median(x)
    scale = 1.4826 * np.median(np.abs(x - med))
    np.testing.assert_allclose(out[0], np.arcsinh((x - med) / scale), rtol=1e-5, atol=1e-5)
    assert abs(np.median(out[0])) < 1e-5
    # Bright pixels are compressed: the source is ~400 sigma above sky but comes out near asinh(400) ~ 6.7.
    assert 5.0 < out[0, 10, 10] < 8.0
    assert np.isfinite(out).all() and np.all(out[3] == 0)


def test_normalise_channels_and_edge_cases(batch):
    stacked = np.stack([batch, batch * 2.0], axis=-1)
    for method in NORMALISATIONS:
        out = normalise(stacked, method)
        assert out.shape == stacked.shape and out.dtype == np.float32
        # Per-channel statistics: each channel equals normalising it alone.
        np.testing.assert_allclose(out[..., 0], normalise(batch, method), rtol=1e-6, atol=1e-6)
        assert normalise(np.zeros((0, 20, 20), np.float32), method).shape == (0, 20, 20)
    with pytest.raises(ValueError):
        normalise(batch, "histeq")
    with pytest.raises(ValueError):
        normalise(batch[0], "l2")


# --------------------------------------------------------------------------------------------- packets


def test_prepare_input_crops_and_fills():
    big = np.arange(63 * 63, dtype=np.float32).reshape(63, 63)
    big[31, 31] = np.nan
    out = prepare_input(_packet({StampKind.SCIENCE: big}), SPEC)
    assert out.shape == (20, 20, 1) and out.dtype == np.float32
    assert np.isfinite(out).all()
    window = big[21:41, 21:41]
    assert out[10, 10, 0] == np.nanmedian(window)
    np.testing.assert_array_equal(out[0, :, 0], window[0])


def test_prepare_input_channel_order_and_missing_kind():
    spec = InputSpec("ZTF", (StampKind.DIFFERENCE, StampKind.SCIENCE), 20, ZTF_PIXEL_SCALE)
    p = _packet({StampKind.SCIENCE: np.ones((20, 20)), StampKind.DIFFERENCE: np.full((20, 20), 5.0)})
    out = prepare_input(p, spec)
    assert out.shape == (20, 20, 2) and out[0, 0, 0] == 5.0 and out[0, 0, 1] == 1.0
    with pytest.raises(PacketError) as err:
        prepare_input(_packet({StampKind.SCIENCE: np.ones((20, 20))}), spec)
    assert err.value.stage == "preprocess"


def test_prepare_input_respects_allow_crop():
    spec = InputSpec("ZTF", (StampKind.SCIENCE,), 20, ZTF_PIXEL_SCALE, allow_crop=False)
    with pytest.raises(PacketError):
        prepare_input(_packet({StampKind.SCIENCE: np.ones((63, 63))}), spec)
    assert prepare_input(_packet({StampKind.SCIENCE: np.ones((20, 20))}), spec).shape == (20, 20, 1)


def test_prepare_batch_isolates_failures():
    good = [_packet({StampKind.SCIENCE: np.full((63, 63), float(i))}, candid=i) for i in range(3)]
    bad = _packet({StampKind.SCIENCE: None}, candid=99, broken=True)
    arrays, errors = prepare_batch([good[0], bad, good[1], good[2]], SPEC)
    assert arrays.shape == (4, 20, 20, 1)
    assert [e is None for e in errors] == [True, False, True, True]
    assert isinstance(errors[1], PacketError) and errors[1].stage == "preprocess"
    assert "corrupt gzip stream" in str(errors[1]) and isinstance(errors[1].__cause__, RuntimeError)
    np.testing.assert_array_equal(arrays[3], prepare_input(good[2], SPEC))
    assert np.all(arrays[1] == 0)
    # A real corrupt stamp keeps its own stage.
    garbage = _packet({StampKind.SCIENCE: None}, candid=98)
    garbage.stamps[StampKind.SCIENCE] = Stamp(kind=StampKind.SCIENCE, raw=b"\x1f\x8bnot gzip",
                                              encoding=StampEncoding.FITS_GZ)
    _, errs = prepare_batch([garbage], SPEC)
    assert isinstance(errs[0], PacketError) and errs[0].stage == "cutout"
    empty, errs = prepare_batch([], SPEC)
    assert empty.shape == (0, 20, 20, 1) and errs == []


@pytest.mark.parametrize("shape", [(7, 10), (5, 11), (3, 22500), (4, 1)])
def test_row_median_is_numpy_median(shape):
    from models.preprocess import row_median

    rng = np.random.default_rng(sum(shape))
    rows = rng.normal(size=shape).astype(np.float32)
    rows[0, : shape[1] // 2] = 1.0  # ties
    np.testing.assert_array_equal(row_median(rows), np.median(rows, axis=1, keepdims=True))


def test_sigma_clip_of_stamps_mostly_at_their_minimum():
    """The clip's shortcut for stamps of which more than half is the minimum (noise-clipped radio stamps: median =
    minimum, MAD = 0, nothing changes), mixed in one batch with stamps that need the medians, and the boundary:
    exactly half at the minimum is not enough. Against the plain formula; the input is never written to."""
    from models.preprocess import MAD_TO_SIGMA, sigma_clip

    def plain(x, k):
        r = x.reshape(len(x), -1)
        med = np.median(r, axis=1, keepdims=True).astype(np.float32)
        sig = np.float32(MAD_TO_SIGMA) * np.median(np.abs(r - med), axis=1, keepdims=True).astype(np.float32)
        return np.where(r < med + np.float32(k) * sig, med, r).reshape(x.shape)

    rng = np.random.default_rng(5)
    for trial in range(200):
        n, m = int(rng.integers(1, 12)), int(rng.integers(2, 7))
        x = (rng.integers(0, 4, (n, m, m)) * 0.5).astype(np.float32)
        noisy = rng.random(n) < 0.4
        x[noisy] = rng.normal(size=(int(noisy.sum()), m, m)).astype(np.float32)
        keep = x.copy()
        out = sigma_clip(x, 1.0)
        np.testing.assert_array_equal(out, plain(x, 1.0), err_msg=str(trial))
        np.testing.assert_array_equal(x, keep)
        assert not np.shares_memory(out, x)
    half = np.array([[[0, 0], [5, 7]], [[0, 0], [0, 7]]], np.float32)  # first: exactly half at the minimum
    np.testing.assert_array_equal(sigma_clip(half, 0.5), plain(half, 0.5))


def test_fast_asinh_and_sigma_clip_match_the_plain_formulas():
    from models.preprocess import apply_recipe, sigma_clip

    rng = np.random.default_rng(3)
    x = rng.normal(5, 2, size=(6, 30, 30, 2)).astype(np.float32)
    a = x.astype(np.float64)
    med = np.median(a, axis=(1, 2), keepdims=True)
    scale = 1.4826 * np.median(np.abs(a - med), axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(normalise(x, "asinh"), np.arcsinh((a - med) / scale), atol=1e-5)
    clipped = sigma_clip(x, 2.0)
    np.testing.assert_allclose(clipped, np.where(a < med + 2.0 * scale, med, a), atol=1e-5)
    assert apply_recipe(x, {"clip_sigma": 2.0, "normalise": "minmax"}).max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown preprocessing"):
        apply_recipe(x, {"blur": 1})
