"""Stamps cut around sky positions from real FIRST FITS images (MiraBest subset, toothless samples)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from schemas.errors import StampflowError
from training.radio.fits import parse_mirabest_fits_name
from training.survey_cutouts import cut_stamps, cut_stamps_from_fits, read_coordinate_list, read_fits_with_wcs

MIRABEST_FILE = "radio/mirabest/fits_subset/200_235.328+051.679_0.1481_0031.15.fits"


def _header_centre(path):
    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = fits.getheader(path)
    return h["CRVAL1"], h["CRVAL2"]


@pytest.mark.parametrize("size", [150, 64, 65])
def test_header_centre_lands_at_stamp_centre(data_dir, size):
    files = sorted((data_dir / "radio/toothless_samples").glob("*.fits")) + [data_dir / MIRABEST_FILE]
    for f in files:
        image, wcs, info = read_fits_with_wcs(f)
        assert image.shape == (300, 300) and info["SURVEY"] == "FIRST"
        ra, dec = _header_centre(f)
        st = cut_stamps(image, wcs, ra=[ra], dec=[dec], size=size, on_missing="raise").stamps[0]
        assert st.data.shape == (size, size) and not st.partial and st.filled_fraction == 1.0
        assert st.pixel_scale == pytest.approx(1.8, rel=1e-6)
        # the reference pixel is the image centre (149.5, 0-based); the stamp keeps it within half a pixel
        # of its own centre, and the stamp's WCS maps the coordinate there
        assert abs(st.position[0] - (size - 1) / 2) <= 0.5 + 1e-6
        assert abs(st.position[1] - (size - 1) / 2) <= 0.5 + 1e-6
        sy, sx = st.slices_original
        np.testing.assert_array_equal(st.data, image[sy, sx])
        if size % 2 == 0:  # even stamps are exactly the centre crop the model's geometry takes
            lo = (300 - size) // 2
            np.testing.assert_array_equal(st.data, image[lo:lo + size, lo:lo + size])


def test_file_name_coordinate_lands_at_stamp_centre(data_dir):
    files = sorted((data_dir / "radio/mirabest/fits_subset").glob("*.fits"))
    assert len(files) >= 40
    for f in files[::5]:
        info = parse_mirabest_fits_name(f.name)
        st = cut_stamps_from_fits(f, ra=[info["ra"]], dec=[info["dec"]], size=150).stamps[0]
        # names round RA/Dec to 0.001 deg (3.6" = 2 px at 1.8"/px)
        tol = 0.0005 * 3600 / 1.8 + 0.5
        assert abs(st.position[0] - 74.5) <= tol and abs(st.position[1] - 74.5) <= tol
        c = st.wcs.pixel_to_world(74.5, 74.5)
        assert abs(c.dec.deg - info["dec"]) < 0.001
        assert abs((c.ra.deg - info["ra"]) * np.cos(np.radians(info["dec"]))) < 0.001


def test_edges_partial_trim_strict(data_dir):
    image, wcs, _ = read_fits_with_wcs(data_dir / MIRABEST_FILE)
    # 0.07 deg east of the centre: 140 px left of it, so a 64 px stamp runs ~22 px over the left edge
    ra0, dec0 = _header_centre(data_dir / MIRABEST_FILE)
    ra = ra0 + 0.07 / np.cos(np.radians(dec0))
    st = cut_stamps(image, wcs, ra=[ra], dec=[dec0], size=64).stamps[0]
    assert st.partial and st.data.shape == (64, 64)
    nan_cols = np.isnan(st.data).all(axis=0)
    assert nan_cols[:10].all() and not nan_cols[-10:].any()
    assert st.filled_fraction == pytest.approx(1 - nan_cols.sum() / 64)
    sy, sx = st.slices_original
    assert sx.start == 0  # the real part is the image's left edge
    trimmed = cut_stamps(image, wcs, ra=[ra], dec=[dec0], size=64, mode="trim").stamps[0]
    assert trimmed.partial and trimmed.data.shape[0] == 64 and trimmed.data.shape[1] < 64
    assert not np.isnan(trimmed.data).any()
    strict = cut_stamps(image, wcs, ra=[ra], dec=[dec0], size=64, mode="strict")
    assert not strict.stamps and "strict" in strict.skipped[0][3]


def test_off_image_is_skipped_or_raises(data_dir):
    image, wcs, _ = read_fits_with_wcs(data_dir / MIRABEST_FILE)
    ra0, dec0 = _header_centre(data_dir / MIRABEST_FILE)
    res = cut_stamps(image, wcs, ra=[ra0, ra0 + 1.0, 10.0], dec=[dec0, dec0, -30.0], size=32)
    assert [s.index for s in res.stamps] == [0]
    assert [s[0] for s in res.skipped] == [1, 2]
    assert all(("off the image" in r) or ("does not project" in r) for *_, r in res.skipped)
    with pytest.raises(StampflowError, match=r"coordinate 1 .*off the image"):
        cut_stamps(image, wcs, ra=[ra0, ra0 + 1.0], dec=[dec0, dec0], size=32, on_missing="raise")


def test_skycoord_input_and_degenerate_axes():
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS

    w = WCS(naxis=4)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN", "FREQ", "STOKES"]
    w.wcs.crval = [150.0, 2.0, 1.4e9, 1]
    w.wcs.crpix = [50.5, 50.5, 1, 1]
    w.wcs.cdelt = [-1.5 / 3600, 1.5 / 3600, 1e6, 1]
    data = np.random.default_rng(0).normal(size=(1, 1, 100, 100)).astype(np.float32)
    res = cut_stamps(data, w, SkyCoord([150.0, 150.01] * u.deg, [2.0, 2.0] * u.deg), size=20)
    assert len(res.stamps) == 2 and res.stamps[0].data.shape == (20, 20)
    assert res.stamps[0].pixel_scale == pytest.approx(1.5)
    assert abs(res.stamps[0].position[0] - 9.5) <= 0.5
    with pytest.raises(StampflowError, match="same length"):
        cut_stamps(data, w, ra=[150.0], dec=[2.0, 3.0], size=20)
    with pytest.raises(StampflowError, match="unknown cutout mode"):
        cut_stamps(data, w, ra=[150.0], dec=[2.0], size=20, mode="wrap")


def test_coordinate_list(tmp_path, data_dir):
    csv_path = data_dir / "radio/first_galaxy_dataset/alhassan_FIRST-CLASSIFIER_test_coords.csv"
    ra, dec, names = read_coordinate_list(csv_path)
    assert len(ra) == len(dec) > 5 and names is None and np.all(np.abs(dec) <= 90)
    f = tmp_path / "c.csv"
    f.write_text("name,RA,Dec\nA,1.5,2.5\nB,3,-4\n")
    ra, dec, names = read_coordinate_list(f)
    assert list(ra) == [1.5, 3.0] and list(dec) == [2.5, -4.0] and names == ["A", "B"]
    f.write_text("x,y\n1,2\n")
    with pytest.raises(StampflowError, match="no ra/dec columns"):
        read_coordinate_list(f)
    with pytest.raises(StampflowError, match="does not exist"):
        read_coordinate_list(tmp_path / "missing.csv")
