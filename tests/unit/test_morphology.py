"""CANDELS -> CLASH morphology family: labels, stamps, mocks, replay, architecture, transfer, artifacts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from schemas.errors import StampflowError
from training.morphology import FAMILY
from training.morphology import dataset as mdata
from training.morphology import labels as ml
from training.morphology import mock_files as mf
from training.morphology import mocks as mm
from training.morphology import stamps as ms
from training.morphology.network import CLASH_FILTERS, CLASSES, build_model, expand_input_channels, expand_kernel

LABELS = "clash_candels_labels"
REAL_STAMP = "a611_f475w_860.fits"


@pytest.fixture(scope="module")
def labels_dir(data_dir: Path) -> Path:
    return data_dir / LABELS


@pytest.fixture(scope="module")
def mock_root(labels_dir: Path, tmp_path_factory) -> Path:
    """A few real label rows with mock stamps: CANDELS (F160W) and CLASH (own filter + F435W, F160W)."""
    root = tmp_path_factory.mktemp("morph-mock")
    mf.write_mock_candels(labels_dir / "CANDELS_labels.csv", root / "CANDELS", seed=1, limit=60, progress=False)
    mf.write_mock_clash(labels_dir / "CLASH_labels.csv", root / "CLASH", seed=1, limit=60, filters="f435w,f160w",
                        progress=False)
    return root


# ------------------------------------------------------------------------------------------------ labels


def test_real_label_files_parse(labels_dir: Path) -> None:
    candels = ml.read_labels(labels_dir / "CANDELS_labels.csv")
    clash = ml.read_labels(labels_dir / "CLASH_labels.csv")
    assert (candels.dataset, len(candels)) == ("candels", 7567)
    assert (clash.dataset, len(clash)) == ("clash", 1600)
    for table in (candels, clash):
        assert table.fractions.shape == (len(table), 5)
        np.testing.assert_allclose(table.fractions.sum(axis=1), 1.0, atol=1e-6)
        assert table.fractions.min() >= 0.0
    ids = [ml.parse_clash_id(i) for i in clash.ids]
    per_filter = {b: sum(i.filter == b for i in ids) for b in CLASH_FILTERS}
    assert set(per_filter) == set(CLASH_FILTERS) and min(per_filter.values()) >= 99
    assert len({i.galaxy for i in ids}) == 912  # galaxies labelled in several filters share a key
    assert {ml.parse_candels_id(i).region for i in candels.ids} == {"deep2", "ers2", "wide2"}


def test_id_parsing() -> None:
    cid = ml.parse_clash_id("macs1206_f435w_1322")
    assert (cid.cluster, cid.filter, cid.object_id, cid.galaxy) == ("macs1206", "F435W", "1322", "macs1206_1322")
    assert cid.stamp_id("F160W") == "macs1206_f160w_1322"
    assert ml.parse_clash_id("a611_f850lp_7").filter == "F850LP"
    assert ml.parse_candels_id("GDS_deep2_10000") == ml.CandelsID("GDS", "deep2", "10000")
    for bad in ("macs1206_f999w_1", "macs1206-f435w-1", "GDS_deep2_10000"):
        with pytest.raises(StampflowError):
            ml.parse_clash_id(bad)
    with pytest.raises(StampflowError):
        ml.parse_candels_id("a611_f475w_860")
    assert ml.instrument_for("F475W") == ("ACS", "WFC")
    assert ml.instrument_for("F275W") == ("WFC3", "UVIS")
    assert ml.instrument_for("F160W") == ("WFC3", "IR")


def test_bad_label_files_are_one_line_errors(tmp_path: Path) -> None:
    head = "ID,p_smooth,p_features,p_irregular,p_point_source,p_unclassifiable\n"
    cases = {"header.csv": "ID,a,b,c,d,e\nGDS_deep2_1,1,0,0,0,0\n",
             "sum.csv": head + "GDS_deep2_1,0.5,0.2,0,0,0\n",
             "text.csv": head + "GDS_deep2_1,x,0,0,0,0\n",
             "dup.csv": head + "GDS_deep2_1,1,0,0,0,0\nGDS_deep2_1,1,0,0,0,0\n",
             "id.csv": head + "galaxy_1,1,0,0,0,0\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(StampflowError):
            ml.read_labels(tmp_path / name)
    with pytest.raises(StampflowError):
        ml.read_labels(tmp_path / "missing.csv")


# ------------------------------------------------------------------------------------------------ stamps


def test_real_clash_stamp_loads_and_joins(labels_dir: Path) -> None:
    img, header = ms.read_stamp(labels_dir / REAL_STAMP)
    assert img.shape == (48, 48) and img.dtype == np.float32 and np.isfinite(img).all()
    assert ms.header_band(header) == "F475W"
    assert abs(abs(header["CD1_1"]) * 3600 - ms.CLASH_PIXEL_SCALE) < 1e-4
    labels = ml.read_labels(labels_dir / "CLASH_labels.csv")
    stamps = ms.index_stamps(labels_dir)
    joined, report = ms.join(labels, stamps)
    assert [labels.ids[k] for k in joined] == ["a611_f475w_860"]
    assert report.labels_without_stamps and len(report.labels_without_stamps) == 1599
    assert report.stamps_without_labels == []


def test_mock_stamps_have_the_real_stamp_format(labels_dir: Path, mock_root: Path) -> None:
    from astropy.io import fits

    real = fits.getheader(labels_dir / REAL_STAMP)
    with fits.open(labels_dir / REAL_STAMP) as hdul:
        real_layout = [(type(h).__name__, h.header["BITPIX"], h.header["NAXIS"]) for h in hdul]
    files = sorted((mock_root / "CLASH" / "stamps").glob("*.fits")) + \
        sorted((mock_root / "CANDELS" / "stamps").glob("*.fits"))[:10]
    assert files
    for f in files:
        with fits.open(f) as hdul:
            assert [(type(h).__name__, h.header["BITPIX"], h.header["NAXIS"]) for h in hdul] == real_layout
            h = hdul[0].header
            assert hdul[0].data.dtype.str == ">f4"
            assert h["NAXIS1"] == h["NAXIS2"] >= 20
            # WFC3 names its filter FILTER, ACS (like the real a611 stamp) FILTER1/FILTER2
            extra = {k for k in h if k not in real} - {"FILTER", "HISTORY", ""}
            assert not extra, f"{f.name}: keywords absent from the real stamp: {extra}"
            assert any("mock" in str(line) for line in h["HISTORY"])
        band = ml.row_band(f.stem, "clash" if "CLASH" in str(f) else "candels")
        assert ms.header_band(h) == band


def test_mock_writer_is_deterministic(labels_dir: Path, mock_root: Path, tmp_path: Path) -> None:
    mf.write_mock_candels(labels_dir / "CANDELS_labels.csv", tmp_path, seed=1, limit=3, progress=False)
    for f in sorted((tmp_path / "stamps").glob("*.fits")):
        assert f.read_bytes() == (mock_root / "CANDELS" / "stamps" / f.name).read_bytes()
    mf.write_mock_candels(labels_dir / "CANDELS_labels.csv", tmp_path / "other", seed=2, limit=1, progress=False)
    name = next((tmp_path / "other" / "stamps").glob("*.fits")).name
    assert (tmp_path / "other" / "stamps" / name).read_bytes() != (tmp_path / "stamps" / name).read_bytes()


def test_mocks_round_trip_through_the_loader(mock_root: Path, labels_dir: Path) -> None:
    data = mdata.load_morphology(mock_root / "CLASH", filters="all", stack="row", recipe=None)
    labels = ml.read_labels(labels_dir / "CLASH_labels.csv")
    galaxies = {ml.galaxy_key(i, "clash") for i in labels.ids[:60]}
    rows = [k for k, i in enumerate(labels.ids) if ml.galaxy_key(i, "clash") in galaxies]
    assert data.report.n_labels == 1600 and data.report.n_joined == len(rows) == len(data.ids) >= 60
    assert len(data.report.labels_without_stamps) == 1600 - len(rows)
    # the extra F435W/F160W stamps of labelled galaxies have no label row: reported, not used
    assert data.report.stamps_without_labels and all(
        ml.parse_clash_id(s).filter in ("F435W", "F160W") for s in data.report.stamps_without_labels)
    np.testing.assert_allclose(data.y, labels.fractions[rows].astype(np.float32))
    assert data.x.shape == (len(rows), 48, 48, 1) and np.isfinite(data.x).all()
    stacked = mdata.load_morphology(mock_root / "CLASH", filters="f435w,f160w", stack="channels")
    assert stacked.x.shape[1:] == (48, 48, 2) and stacked.channels == ("F435W", "F160W")
    assert set(stacked.row_bands) <= {"F435W", "F160W"}
    # the same galaxy in one filter, loaded alone or as a channel of the stack, is the same input
    one = mdata.load_morphology(mock_root / "CLASH", filters="f160w", stack="row")
    k = stacked.ids.index(one.ids[0])
    np.testing.assert_allclose(stacked.x[k, :, :, 1], one.x[0, :, :, 0], atol=1e-5)
    cand = mdata.load_morphology(mock_root / "CANDELS")
    assert cand.dataset == "candels" and len(cand.ids) == 60 and cand.channels == ("F160W",)
    with pytest.raises(StampflowError):
        mdata.load_morphology(mock_root / "CANDELS", stack="channels")


def test_stamps_whose_header_contradicts_the_id_are_skipped(tmp_path: Path) -> None:
    head = "ID,p_smooth,p_features,p_irregular,p_point_source,p_unclassifiable\n"
    (tmp_path / "CANDELS_labels.csv").write_text(head + "GDS_deep2_1,1,0,0,0,0\nGDS_deep2_2,0,1,0,0,0\n"
                                                 "GDS_wide2_3,0,0,1,0,0\n")
    img = np.random.default_rng(0).normal(size=(30, 30))
    for sid, band in (("GDS_deep2_1", "F160W"), ("GDS_deep2_2", "F814W")):
        cards = mf._header_cards(band, "candels", target="GOODS-SOUTH", ra=53.1, dec=-27.8, size=30,
                                 pixel_scale=0.06, sky=0.0, exptime=1000.0)
        mf.write_stamp_fits(tmp_path / f"{sid}.fits", img, cards)
    (tmp_path / "GDS_ers2_9.fits").write_bytes(b"not a FITS file")
    data = mdata.load_morphology(tmp_path)
    assert data.ids == ["GDS_deep2_1"]
    assert data.skipped["filter_mismatch"] == ["GDS_deep2_2"]
    assert data.report.labels_without_stamps == ["GDS_wide2_3"]
    assert data.report.stamps_without_labels == ["GDS_ers2_9"]


def test_mock_morphology_follows_the_label() -> None:
    """The dominant class shows: light concentration orders point source > smooth > features > irregular, and
    unclassifiable rows are the faintest."""
    def draw(fractions, k, noise):
        rng = np.random.default_rng(k)
        fr = np.array(fractions, float)
        shape = mm.draw_shape(rng, fr, ms.CLASH_PIXEL_SCALE, 0.11)
        shape.neighbour = None
        return mm.draw_stamp(shape, fr, "F814W", rng, pixel_scale=ms.CLASH_PIXEL_SCALE, noise=noise, sky=0.0)

    def concentration(img):
        n = img.shape[0]
        h = max(n // 20, 1)  # a box of +-0.2 Petrosian radii around the centre (stamps are 4 Rp wide)
        return img[n // 2 - h:n // 2 + h, n // 2 - h:n // 2 + h].sum() / img.sum()

    conc = {c: np.median([concentration(draw(np.eye(5)[i], k, 1e-6)) for k in range(10)])
            for i, c in enumerate(CLASSES[:4])}
    assert conc["point_source"] > conc["smooth"] > conc["features"] > conc["irregular"]
    peak = {c: np.median([draw(np.eye(5)[i], k, mm.CLASH_NOISE).max() / mm.CLASH_NOISE for k in range(10)])
            for i, c in enumerate(CLASSES)}
    assert peak["unclassifiable"] < min(peak[c] for c in CLASSES[:4]) / 3


def test_grouped_split_keeps_galaxies_together(labels_dir: Path) -> None:
    labels = ml.read_labels(labels_dir / "CLASH_labels.csv")
    groups = [ml.galaxy_key(i, "clash") for i in labels.ids]
    parts = mdata.grouped_stratified_split(labels.top, groups, (0.7, 0.15, 0.15), seed=3)
    assert sum(len(p) for p in parts) == 1600
    seen = [{groups[i] for i in p} for p in parts]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    again = mdata.grouped_stratified_split(labels.top, groups, (0.7, 0.15, 0.15), seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


# ------------------------------------------------------------------------------------------------ replay


def test_iter_cutouts_yields_well_formed_cutouts(mock_root: Path) -> None:
    from schemas.cutout_packet import encode_cutout

    formats = {a.name: a for a in FAMILY.archives}
    assert set(formats) == {"candels", "clash"}

    def reader(name):
        return formats[name].read

    cand = list(reader("candels")(mock_root / "CANDELS"))
    assert len(cand) == 60
    c = cand[0]
    assert (c.survey, c.instrument, c.bands, c.pixel_scale, c.dataset) == ("HST", "WFC3", ["F160W"], None, "candels")
    assert set(c.truth_values) == set(CLASSES) and abs(sum(c.truth_values.values()) - 1) < 1e-6
    assert c.truth_label == max(c.truth_values, key=c.truth_values.get)
    assert c.images["F160W"].ndim == 2 and c.extra["native_pixel_scale"] == str(ms.CANDELS_PIXEL_SCALE)
    clash = list(reader("clash")(mock_root / "CLASH"))
    assert len(clash) >= 60
    for c in clash:
        assert c.bands[0] == c.extra["label_filter"] == ml.parse_clash_id(c.id).filter
        assert {"F435W", "F160W"} <= set(c.bands) and c.instrument == ml.instrument_for(c.bands[0])[0]
        assert len({c.images[b].shape for b in c.bands}) == 1
    rows_only = list(reader("clash")(mock_root / "CLASH", bands="row"))
    assert all(len(c.bands) == 1 for c in rows_only)
    assert encode_cutout(clash[0])[:4] == b"Obj\x01"
    with_unlabelled = list(reader("clash")(mock_root / "CLASH", unlabelled="true"))
    assert len(with_unlabelled) > len(clash) and all(c.truth_values is None for c in with_unlabelled[len(clash):])
    with pytest.raises(StampflowError):
        list(reader("clash")(mock_root / "CLASH", colour="red"))


def test_options_are_typed_and_checked() -> None:
    default = FAMILY.parse({})
    assert (default.dataset, default.filters, default.loss, default.patience, default.size, default.study) == \
        (None, "all", "crossentropy", None, 48, None)
    o = FAMILY.parse({"dataset": "CLASH", "study": "transfer", "patience": "0", "limit": "100"})
    assert (o.dataset, o.study, o.patience, o.limit) == ("clash", "transfer", 0, 100)
    for bad in ({"dataset": "sdss"}, {"loss": "mae"}, {"study": "ablation"}, {"size": "big"}, {"bogus": "1"}):
        with pytest.raises(StampflowError, match="^--set "):
            FAMILY.parse(bad)
    ev = FAMILY.parse_evaluate({"split": "validation", "batch_size": "64"})
    assert (ev.split, ev.batch_size, ev.limit) == ("validation", 64, None)
    with pytest.raises(StampflowError, match="unknown evaluate option"):
        FAMILY.parse_evaluate({"loss": "mse"})


# ------------------------------------------------------------------------------------------ architecture


def test_architecture_outputs_fractions() -> None:
    model = build_model(channels=3, seed=0)
    assert tuple(model.inputs[0].shape) == (None, 48, 48, 3)
    out = np.asarray(model(np.random.default_rng(0).normal(size=(4, 48, 48, 3)).astype(np.float32)))
    assert out.shape == (4, len(CLASSES))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert (out > 0).all()
    assert model.count_params() < 400_000


def test_channel_expansion_reproduces_the_single_band_model() -> None:
    src = build_model(channels=1, seed=4)
    x = np.random.default_rng(1).normal(size=(6, 48, 48, 1)).astype(np.float32)
    wide = expand_input_channels(src, 5)
    assert tuple(wide.inputs[0].shape) == (None, 48, 48, 5)
    np.testing.assert_allclose(np.asarray(wide(np.repeat(x, 5, axis=-1))), np.asarray(src(x)), atol=1e-5)
    # different channels give a different answer: the new input is used, not ignored
    other = np.concatenate([x, np.random.default_rng(2).normal(size=(6, 48, 48, 4)).astype(np.float32)], axis=-1)
    assert np.abs(np.asarray(wide(other)) - np.asarray(src(x))).max() > 1e-4
    k = np.random.default_rng(3).normal(size=(5, 5, 2, 8))
    e = expand_kernel(k, 3)
    assert e.shape == (5, 5, 3, 8)
    np.testing.assert_allclose(e.sum(axis=2), k.sum(axis=2))


# --------------------------------------------------------------------------------------- train / evaluate


def test_train_transfer_and_evaluate_smoke(mock_root: Path, tmp_path: Path) -> None:
    from models.registry import Registry
    from training.family import TrainOptions
    from training.morphology.evaluate import evaluate
    from training.morphology.metrics import fractions_report
    from training.morphology.train import train

    out = tmp_path / "models"
    res = train(TrainOptions(data=mock_root / "CANDELS", epochs=1, batch_size=16, out_root=out, version="0.0.1"),
                FAMILY.parse({"patience": "0"}))
    art = Path(res["artifact"])
    meta = json.loads((art / "metadata.json").read_text())
    assert meta["trained_on"] == "mock" and meta["task"] == "fractions" and meta["classes"] == list(CLASSES)
    assert meta["input_spec"]["channels"] == ["F160W"] and meta["input_spec"]["geometry"] == "resize"
    assert {"curves", "scatter", "confusion_matrix"} <= set(meta["plots"])
    assert 0 <= meta["metrics"]["test"]["rmse"] <= 1
    ev = evaluate(Registry([out]).resolve(str(art)), mock_root / "CANDELS", FAMILY.parse_evaluate({}))
    assert ev["data"]["split"] == "test" and ev["n"] == meta["split"]["counts"]["test"]
    assert abs(ev["rmse"] - meta["metrics"]["test"]["rmse"]) < 1e-4
    # transfer to two stacked CLASH filters: the first convolution is widened, nothing else changes shape
    res2 = train(TrainOptions(data=mock_root / "CLASH", epochs=1, batch_size=16, out_root=out, version="0.0.1",
                              from_model=str(art), freeze=1),
                 FAMILY.parse({"filters": "f435w,f160w", "patience": "0"}))
    meta2 = json.loads((Path(res2["artifact"]) / "metadata.json").read_text())
    assert meta2["input_spec"]["channels"] == ["F435W", "F160W"] and meta2["name"] == "morphology-clash"
    assert meta2["training"]["transfer"]["frozen_layers"] == ["conv1"]
    r = fractions_report(np.eye(5)[[0, 1]], np.eye(5)[[0, 2]])
    assert r["top_class_accuracy"] == 0.5 and abs(r["rmse"] - np.sqrt(2 / 10)) < 1e-12


@pytest.mark.parametrize("name,channels", [("morphology-candels", ["F160W"]),
                                           ("morphology-clash", None)])
def test_bundled_artifacts_load_through_keras_cnn(name: str, channels) -> None:
    from models.cnn import KerasCNN
    from models.registry import Registry

    info = Registry().resolve(f"{name}@1.0.0")
    assert info.metadata["trained_on"] == "mock" and info.family == "morphology"
    clf = KerasCNN.load(info)
    spec = clf.input_spec
    assert spec.geometry == "resize" and spec.pixel_scale is None and spec.surveys == ("HST",)
    if channels is not None:
        assert list(spec.channels) == channels
    assert set(spec.channels) <= set(CLASH_FILTERS)
    x = np.random.default_rng(0).normal(size=(3, spec.size, spec.size, spec.n_channels)).astype(np.float32)
    pred = clf.predict_batch(x)
    assert pred.probabilities.shape == (3, 5) and pred.labels[0] in CLASSES
    assert (Path(info.path) / "model.keras").stat().st_size < 2_000_000  # weights only, no optimizer state
