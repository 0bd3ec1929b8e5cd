"""Radio data readers on the real files (Griese HDF5, FR-DEEP, MiraBest batches and FITS) and their cutout streams."""
from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest

from schemas.errors import StampflowError
from training.radio.archive import (iter_cutouts, iter_frdeep_cutouts, iter_griese_cutouts, iter_mirabest_cutouts,
                                    iter_radio_fits_cutouts)
from training.radio.batches import load_frdeep, load_mirabest
from training.radio.data import detect_dataset, load_radio
from training.radio.fits import load_mirabest_fits, parse_mirabest_fits_name
from training.radio.griese import load_griese, write_griese_h5
from training.radio.sets import FIRST_PIXEL_SCALE, FR_CLASSES, GRIESE_CLASSES, NVSS_PIXEL_SCALE

GRIESE_ZIP = "radio/first_galaxy_dataset/galaxy_data_trainvalid_h5.zip"


def test_griese_real_zip_first_groups(data_dir):
    rs = load_griese(data_dir / GRIESE_ZIP, limit=12)
    assert len(rs) == 12 and rs.images.shape == (12, 300, 300) and rs.images.dtype == np.uint8
    assert set(rs.labels) <= {0, 1, 2, 3} and set(rs.splits) <= {"train", "valid"}
    assert rs.classes == GRIESE_CLASSES and rs.survey == "FIRST" and rs.pixel_scale == FIRST_PIXEL_SCALE
    assert rs.ids[0].startswith("data_") and rs.ra is None  # the groups carry no coordinates


def test_griese_real_zip_counts(data_dir):
    rs = load_griese(data_dir / GRIESE_ZIP)
    assert rs.counts() == {"train": {"FRI": 395, "FRII": 824, "Compact": 291, "Bent": 248},
                           "valid": {"FRI": 50, "FRII": 50, "Compact": 50, "Bent": 50}}
    valid = rs.select("valid")
    assert len(valid) == 200 and set(valid.splits) == {"valid"}
    with pytest.raises(StampflowError, match="no 'test' split"):
        rs.select("test")


def _small_griese(tmp_path, zipped, splits=("train", "train", "valid", "valid", "test", "train")):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(len(splits), 300, 300)).astype(np.uint8)
    labels = [i % 4 for i in range(len(splits))]
    path = tmp_path / ("g.zip" if zipped else "g.h5")
    return write_griese_h5(path, imgs, labels, list(splits), zipped=zipped), imgs, labels


@pytest.mark.parametrize("zipped", [False, True])
def test_griese_layout_zipped_or_not(tmp_path, zipped):
    path, imgs, labels = _small_griese(tmp_path, zipped)
    assert detect_dataset(path) == "griese"
    rs = load_griese(path)
    np.testing.assert_array_equal(rs.images, imgs)
    assert list(rs.labels) == labels and list(rs.splits) == ["train", "train", "valid", "valid", "test", "train"]
    assert len(load_griese(tmp_path)) == 6  # a directory holding the file
    sub = load_griese(path, split="valid,test")
    assert list(sub.splits) == ["valid", "valid", "test"] and sub.ids == ["data_2", "data_3", "data_4"]
    with pytest.raises(StampflowError, match="no 'nope' split"):
        load_griese(path, split="nope")


def test_griese_bad_files(tmp_path):
    import h5py

    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as h5:
        h5.create_group("data_0").create_dataset("Img", data=np.zeros((3, 3), np.uint8))
    with pytest.raises(StampflowError, match="not a Griese-format HDF5 file: group data_0 lacks"):
        load_griese(bad)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(StampflowError, match="cannot read"):
        load_griese(junk)
    with pytest.raises(StampflowError, match="does not exist"):
        load_griese(tmp_path / "missing.zip")


@pytest.mark.parametrize("survey,scale", [("FIRST", FIRST_PIXEL_SCALE), ("NVSS", NVSS_PIXEL_SCALE)])
def test_frdeep(data_dir, survey, scale):
    rs = load_frdeep(data_dir / "radio/frdeep", survey=survey)
    assert rs.images.shape == (600, 150, 150) and rs.images.dtype == np.uint8
    assert rs.classes == FR_CLASSES and rs.survey == survey and rs.pixel_scale == scale
    assert rs.counts() == {"test": {"FRI": 22, "FRII": 28}, "train": {"FRI": 242, "FRII": 308}}
    assert len(set(rs.ids)) == 600  # unique even where FR-DEEP FIRST repeats file names
    tar = data_dir / f"radio/frdeep/{survey}_PNG_dataset.tar.gz"
    assert detect_dataset(tar) == f"frdeep-{survey.lower()}"
    test = load_frdeep(tar, split="test")
    assert len(test) == 50 and test.survey == survey


def test_frdeep_extracted_directory(tmp_path):
    # the extracted layout (a *_PNG_dataset directory of pickled batches), written here in miniature
    d = tmp_path / "NVSS_PNG_dataset"
    d.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("data_batch_1", 4), ("test_batch", 2)):
        batch = {"batch_label": name, "labels": [i % 2 for i in range(n)],
                 "data": [rng.integers(0, 255, 22500).astype(np.uint8) for _ in range(n)],
                 "filenames": [np.str_(f"{i}a.png") for i in range(n)]}
        (d / name).write_bytes(pickle.dumps(batch))
    rs = load_frdeep(d)
    assert rs.survey == "NVSS" and len(rs) == 6 and list(rs.splits) == ["train"] * 4 + ["test"] * 2
    assert rs.images.shape == (6, 150, 150)


def test_mirabest_batches(data_dir):
    rs = load_mirabest(data_dir / "radio/mirabest")
    assert rs.images.shape == (792, 150, 150)
    assert rs.counts() == {"test": {"FRI": 39, "FRII": 49}, "train": {"FRI": 312, "FRII": 392}}
    assert np.isfinite(rs.ra).all() and np.isfinite(rs.dec).all()
    assert rs.ra[0] == pytest.approx(159.613) and rs.dec[0] == pytest.approx(41.815)
    codes = {e["mirabest_code"] for e in rs.extra}
    assert codes == {"100", "200"}


def test_mirabest_fits(data_dir):
    rs = load_mirabest_fits(data_dir / "radio/mirabest/fits_subset")
    assert rs.images.shape[1:] == (300, 300) and rs.images.dtype == np.float32 and len(rs) >= 40
    assert rs.pixel_scale == pytest.approx(1.8) and set(rs.classes) == {"FRI", "FRII", "Hybrid"}
    info = parse_mirabest_fits_name("210_226.344+060.670_0.1586_0043.70.fits")
    assert info == {"code": "210", "label": "FRII", "confidence": "uncertain", "morphology": "standard",
                    "ra": 226.344, "dec": 60.67, "z": 0.1586, "size_arcsec": 43.7}
    assert parse_mirabest_fits_name("104_014.084-009.608_0.1031_0034.67.fits")["dec"] == pytest.approx(-9.608)
    assert parse_mirabest_fits_name("3C194.fits") is None
    cropped = load_mirabest_fits(data_dir / "radio/mirabest/fits_subset", size=150)
    np.testing.assert_array_equal(cropped.images[0], rs.images[0][75:225, 75:225])


def test_detect_and_load_radio(data_dir):
    r = data_dir / "radio"
    assert detect_dataset(r / "first_galaxy_dataset") == "griese"
    assert detect_dataset(r / "mirabest") == "mirabest"
    assert detect_dataset(r / "mirabest/fits_subset") == "mirabest-fits"
    assert detect_dataset(r / "toothless_samples") == "radio-fits"
    assert load_radio(r / "frdeep", dataset="frdeep-nvss", split="test").survey == "NVSS"
    with pytest.raises(StampflowError, match="without labels"):
        load_radio(r / "toothless_samples")
    with pytest.raises(StampflowError, match="unknown radio data set"):
        load_radio(r / "frdeep", dataset="lofar")


def test_cutout_streams(data_dir):
    from schemas.cutout_packet import encode_cutout

    g = list(iter_griese_cutouts(data_dir / GRIESE_ZIP, split="valid", limit="3"))
    assert len(g) == 3 and all(c.split == "valid" and c.truth_label in GRIESE_CLASSES for c in g)
    assert g[0].survey == "FIRST" and g[0].bands == ["1.4GHz"] and g[0].pixel_scale == 1.8
    assert g[0].images["1.4GHz"].shape == (300, 300) and g[0].images["1.4GHz"].dtype == np.float32
    n = list(iter_frdeep_cutouts(data_dir / "radio/frdeep", survey="NVSS", split="test", limit=2))
    assert [c.survey for c in n] == ["NVSS", "NVSS"] and n[0].pixel_scale == 15.0 and n[0].truth_label == "FRI"
    m = next(iter_mirabest_cutouts(data_dir / "radio/mirabest/batches.tar.gz"))
    assert (m.ra, m.dec, m.truth_label, m.extra["mirabest_code"]) == (159.613, 41.815, "FRI", "100")
    fits_all = list(itertools.islice(iter_cutouts(data_dir / "radio/mirabest/fits_subset"), 2))
    assert fits_all[0].truth_label in ("FRI", "FRII", "Hybrid") and fits_all[0].ra is not None
    for c in g[:1] + n[:1] + [m] + fits_all[:1]:
        assert isinstance(encode_cutout(c), bytes)


def test_fits_cutouts_with_coordinates(data_dir, capsys):
    d = data_dir / "radio/toothless_samples"
    whole = list(iter_radio_fits_cutouts(d))
    assert len(whole) == 3 and all(c.images["1.4GHz"].shape == (300, 300) for c in whole)
    assert all(c.survey == "FIRST" and c.truth_label is None for c in whole)
    # one coordinate on 1409-0135 only, one on nothing: each image reports what it skipped
    stamps = list(iter_radio_fits_cutouts(d, coords="212.488,-1.35131;10,-30", size="64"))
    assert len(stamps) == 1 and stamps[0].id.startswith("1409-0135/")
    assert stamps[0].images["1.4GHz"].shape == (64, 64) and stamps[0].extra["partial"] == "false"
    assert "skipped" in capsys.readouterr().err
    with pytest.raises(StampflowError, match="not the image|off the image|does not project"):
        list(iter_radio_fits_cutouts(d, coords="10,-30", on_missing="raise"))
    with pytest.raises(StampflowError, match="coords must be"):
        list(iter_radio_fits_cutouts(d, coords="nonsense"))
